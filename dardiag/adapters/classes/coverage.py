"""The coverage table in the README: every diffusion-transformer class the installed diffusers exports,
supported (with its stacks and noise process) or refused (and why), and for a supported class the pipeline
whose own transformer call dardiag's call reproduces, or why none is checked (``classes.pipelines``).
Generated from the class table;
tests/test_diffusers_classes.py checks the README holds the current one;
``python scripts/update_coverage.py`` rewrites it.
"""

from __future__ import annotations

import re

from dardiag.adapters.classes import TABLE, refusal
from dardiag.adapters.classes.pipelines import NO_PIPELINE, PIPELINES
from dardiag.checkpoints.diffusers_dir import LEGACY_BY_NORM, LEGACY_CLASS

START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"


def candidate_classes() -> list[str]:
    """The classes of the installed diffusers a user may point dardiag at: its transformer and DiT models
    (model classes by type, not by name: some drop the ``Model`` suffix)."""
    import diffusers

    def is_model(name: str) -> bool:
        cls = getattr(diffusers, name, None)
        return isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)

    names = [n for n in dir(diffusers) if ("Transformer" in n or "DiT" in n) and is_model(n)]
    return sorted(set(names) | set(TABLE))


def rows() -> list[tuple[str, str, str]]:
    """(class, status, details) for every candidate class."""
    out = []
    for name in candidate_classes():
        if name in TABLE:
            e = TABLE[name]
            stacks = (" / " if e.interleaved else " + ").join(f"`{s.path}`" for s in e.stacks)
            stacks += " (alternating)" if e.interleaved else ""
            kind = "video" if e.video else "image"
            left = "; left out: " + ", ".join(f"`{p}` ({why})" for p, why in e.left_out) if e.left_out else ""
            out.append((name, "supported", f"{kind}, {stacks}, `{e.family}`{left}"))
        elif name == LEGACY_CLASS:  # read_config resolves its configs to a table class by norm_type
            by_norm = ", ".join(f"`{norm}` as `{cls}`" for norm, cls in LEGACY_BY_NORM.items())
            out.append((name, "supported by norm_type", f"{by_norm}; other norm types are not profiled"))
        else:
            reason = refusal(name)
            out.append((name, "refused" if reason else "guessed", reason or
                        "not in the table: best guess (largest block list), printed on the first line"))
    return out


def parity(name: str) -> str:
    """The pipeline whose transformer call dardiag's call of ``name`` reproduces, or why none is checked."""
    if name in PIPELINES:
        return f"`{PIPELINES[name]}`"
    return f"none: {NO_PIPELINE[name]}" if name in NO_PIPELINE else ""


def markdown() -> str:
    import diffusers

    lines = [f"Generated from dardiag's class table for diffusers {diffusers.__version__} "
             "(`python scripts/update_coverage.py`). *Pipeline call*: the pipeline whose own call of the "
             "transformer at a denoising step dardiag's call reproduces from the same latents, noise level and "
             "conditioning (1e-5, tests/test_pipeline_parity.py), or why none is checked.", "",
             "| class | status | profiled as | pipeline call |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {s} | {d} | {parity(n)} |" for n, s, d in rows()]
    return "\n".join(lines)


def rewrite(text: str) -> str:
    """``text`` with the table between the markers replaced by the current one."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {START} ... {END} markers")
    return pattern.sub(lambda m: f"{START}\n{markdown()}\n{END}", text)

