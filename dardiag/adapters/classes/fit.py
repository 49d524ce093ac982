"""The sizes a diffusers config allows: what its fixed positional tables can index.

A pipeline's default size (81 frames at 480x832, 512 text tokens) fits the released checkpoints; a
config with shorter tables (the tiny ones diffusers tests with, or a model trained small) takes less,
and indexing past a table fails deep inside the model. The adapter shrinks its defaults to these
limits and refuses a flag beyond them, in one line that names the config entry.

Two kinds of tables have one meaning in every class that has them, so they are read here for all
classes, guessed ones included:

* ``rope_max_seq_len`` (the Wan-derived rotary tables): positions per token axis, so at most that many
  tokens along frames, rows and columns;
* ``axes_lens`` (the Lumina-2-derived rotary tables): positions per axis, the last two the token rows
  and columns (the first axis counts captions and frames, which each class lays out its own way: its
  entry's ``fit`` says what it allows).

Everything else is the class entry's ``fit`` (``ClassEntry.fit``). Sizes are in latent units: frames,
rows and columns of the latent, text tokens.
"""

from __future__ import annotations

from dardiag.adapters.classes.spec import ClassEntry, Limit

AXES = ("frames", "height", "width", "text")


def limits(entry: ClassEntry, cfg: dict, unit: tuple[int, int]) -> dict[str, Limit]:
    """{axis: the tightest limit} for a config; ``unit``: latent (frames, pixels) per token along time and
    along a side (the patch sizes, x2 for 2x2-packed latents)."""
    found: list[tuple[str, Limit]] = []
    pt, ps = unit
    rope = cfg.get("rope_max_seq_len")
    if isinstance(rope, int) and rope > 0:
        found += [("frames", Limit(rope * pt, f"rope_max_seq_len {rope} x temporal patch {pt}")),
                  ("height", Limit(rope * ps, f"rope_max_seq_len {rope} x patch {ps}")),
                  ("width", Limit(rope * ps, f"rope_max_seq_len {rope} x patch {ps}"))]
    lens = cfg.get("axes_lens")
    if isinstance(lens, (list, tuple)) and len(lens) >= 3 and all(isinstance(n, int) and n > 0 for n in lens):
        found += [("height", Limit(lens[-2] * ps, f"axes_lens {list(lens)}: {lens[-2]} rows x patch {ps}")),
                  ("width", Limit(lens[-1] * ps, f"axes_lens {list(lens)}: {lens[-1]} columns x patch {ps}"))]
    if entry.fit is not None:
        found += list(entry.fit(cfg).items())
    tightest: dict[str, Limit] = {}
    for axis, limit in found:
        if axis not in AXES:
            raise ValueError(f"{entry.name}: fit names an unknown axis {axis!r}; known: {', '.join(AXES)}")
        if axis not in tightest or limit.most < tightest[axis].most:
            tightest[axis] = limit
    return tightest
