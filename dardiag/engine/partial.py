"""A noise level stopped between two minibatches: its collector saved, so the same command continues it.

A minibatch of a big model can take minutes, and a level holds several; dropping the finished ones of
a level at every Ctrl-C would waste them. When a stop is asked for mid-level, the sweep writes the
level's collector state (``LevelCollector.state()``: fixed-size float64 sums and the CKA
accumulator's per-minibatch terms, never an activation), its pooled probe features and how many of
the level's minibatches it holds to ``OUT/_work/partial-<unit>.pt``. The run that continues restores
it and goes on from the next minibatch: the sums are the same float64 numbers added in the same order,
so the level's rows equal an uninterrupted run's. The file goes when the level's part is written.

Only single-process runs save partial levels (under torchrun each process holds a different share of
the minibatches; a stopped level is computed again there).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dardiag.atomic import atomic_write
from dardiag.engine.collector import LevelCollector
from dardiag.runs.layout import PARTIAL_PREFIX as PREFIX

_FORMAT = 1


def path_of(work: Path, unit: str) -> Path:
    return Path(work) / f"{PREFIX}{unit}.pt"


def save(work: Path, unit: str, col: LevelCollector, done: int, batches: list[slice]) -> None:
    """Keep the first ``done`` minibatches of ``unit`` (those ``col`` holds)."""
    state = {"format": _FORMAT, "done": done, "batches": [(b.start, b.stop) for b in batches],
             "collector": col.state(),
             "probe_feats": {k: [t.cpu() for t in v] for k, v in col.probe_feats.items()},
             "probe_ids": [t.cpu() for t in col.probe_ids]}
    atomic_write(path_of(work, unit), lambda f: torch.save(state, f))


def load(work: Path | None, unit: str, spec, analyses, device, batches: list[slice]
         ) -> tuple[LevelCollector, int] | None:
    """``(collector, minibatches done)`` of a saved partial level, or None (none saved, or saved for other
    minibatches: then it is ignored and the level starts over)."""
    if work is None:
        return None
    path = path_of(work, unit)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
        if state.get("format") != _FORMAT or state["batches"] != [(b.start, b.stop) for b in batches]:
            return None
        restored = LevelCollector.restored(spec, analyses, state["collector"], device)
    except Exception:  # a damaged scratch file costs the level's minibatches again, nothing else
        return None
    restored.probe_feats = {k: list(v) for k, v in state["probe_feats"].items()}
    restored.probe_ids = list(state["probe_ids"])
    return restored, int(state["done"])


def done_in(work: Path | None, unit: str) -> int:
    """How many minibatches a saved partial level holds (0: none), without restoring it."""
    if work is None or not path_of(work, unit).is_file():
        return 0
    try:
        return int(torch.load(path_of(work, unit), weights_only=True)["done"])
    except Exception:
        return 0


def drop(work: Path | None, unit: str) -> None:
    if work is not None:
        path_of(work, unit).unlink(missing_ok=True)


def saved_units(work: Path) -> list[str]:
    """Units with a saved partial level in a run's scratch folder."""
    work = Path(work)
    if not work.is_dir():
        return []
    return sorted(p.name[len(PREFIX):-3] for p in work.glob(f"{PREFIX}*.pt"))
