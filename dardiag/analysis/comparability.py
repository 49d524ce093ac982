"""Can two models' numbers be compared cell by cell? What each model was measured on, how they differ,
and which cells pair up (pure pandas; :func:`dardiag.analysis.summary.compare_runs` uses it).

What decides comparability (diagnostics.md):

* the inputs: near clean data the symptoms depend on what the model looks at (section 10);
* the noise grid: only levels both models have are compared; ``nearest`` pairs each level of the
  baseline with the model's nearest one (mutual nearest neighbours, so no level is used twice);
* the family: the loss (and so every gradient) is a different objective per family (eps-MSE vs
  velocity-MSE), so ``loss`` and ``grad_rms`` are not compared across families;
* the batch size: L is a mean over the batch, so grad_rms scales with 1/B; across batch sizes
  ``B x grad_rms`` is compared, which is independent of B;
* the depth: block k of an 8-block model is not block k of a 28-block one. Models of different depth
  are paired at equal relative depth, k / D = j / D' exactly (blocks 0 and D always pair; 8 vs 16
  pairs every block of the shallow model; 8 vs 28 pairs k = 0, 2, 4, 6, 8 with j = 0, 7, 14, 21, 28).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from dardiag.analysis.rows import latest_checkpoint

LEVEL_ATOL = 1e-9  # two noise levels within this are the same level (grids written as floats)


@dataclass(frozen=True)
class ModelFacts:
    """What one model of a table was measured with (its latest checkpoint)."""

    name: str
    run_id: str
    family: str
    routing: str
    inputs: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    depth: int | None  # D: the largest block index (None: no block-indexed rows)
    levels: tuple[float, ...]


@dataclass(frozen=True)
class Difference:
    """One way ``model`` was measured unlike ``baseline``; ``message`` says what it means for the numbers."""

    kind: str  # inputs | grid | family | batch_size | depth
    model: str
    baseline: str
    message: str


def _unique(d: pd.DataFrame, col: str) -> list:
    return list(pd.unique(d[col].dropna())) if col in d.columns else []


def model_facts(df: pd.DataFrame) -> dict[str, ModelFacts]:
    """The facts of every model of ``df``, in the table's order (first appearance)."""
    d = latest_checkpoint(df)
    out = {}
    for name in pd.unique(d["model"].dropna()):
        m = d[d["model"] == name]
        blocks = m["block"].dropna() if "block" in m.columns else pd.Series([], dtype=float)
        levels = sorted(float(v) for v in _unique(m, "noise_level"))
        first = lambda col, default="": str(_unique(m, col)[0]) if _unique(m, col) else default  # noqa: E731
        out[str(name)] = ModelFacts(
            name=str(name), run_id=first("run_id"), family=first("family"), routing=first("routing"),
            inputs=tuple(str(v) for v in _unique(m, "inputs")),
            batch_sizes=tuple(sorted(int(v) for v in _unique(m, "batch_size"))),
            depth=int(blocks.max()) if len(blocks) else None, levels=tuple(levels))
    return out


def levels_text(levels: Sequence[float], at_most: int = 6) -> str:
    shown = ", ".join(f"{v:.3g}" for v in levels[:at_most])
    return shown + (f", ... ({len(levels)} levels)" if len(levels) > at_most else "")


def match_levels(model: Sequence[float], baseline: Sequence[float], nearest: bool = False) -> list[tuple[float, float]]:
    """(model level, baseline level) pairs: equal levels, or with ``nearest`` mutual nearest neighbours."""
    a, b = np.asarray(sorted(model), dtype=float), np.asarray(sorted(baseline), dtype=float)
    if not a.size or not b.size:
        return []
    if not nearest:
        return [(float(x), float(b[np.argmin(np.abs(b - x))])) for x in a
                if np.isclose(b, x, rtol=0, atol=LEVEL_ATOL).any()]
    pairs = []
    for y in b:
        x = a[np.argmin(np.abs(a - y))]
        if b[np.argmin(np.abs(b - x))] == y:  # mutual: y is x's nearest baseline level too
            pairs.append((float(x), float(y)))
    return pairs


def match_depth(depth: int, depth_baseline: int) -> list[tuple[int, int]]:
    """(block k of the model, block j of the baseline) at equal relative depth k / D = j / D'."""
    return [(k, j) for k in range(depth + 1) for j in range(depth_baseline + 1) if k * depth_baseline == j * depth]


def differences(facts: dict[str, ModelFacts], baseline: str, *, nearest: bool = False) -> list[Difference]:
    """Every way each model was measured unlike ``baseline``, with what it means for the comparison."""
    base = facts[baseline]
    out = []
    for m in facts.values():
        if m.name == baseline:
            continue

        def say(kind: str, text: str) -> None:
            out.append(Difference(kind, m.name, baseline, f"{m.name} vs {baseline}: {text}"))

        if m.inputs != base.inputs:
            say("inputs", f"different inputs ({'; '.join(m.inputs) or 'not recorded'} vs "
                f"{'; '.join(base.inputs) or 'not recorded'}): near clean data the symptoms depend on the inputs, "
                "so differences there may be the inputs' rather than the models'")
        if m.levels != base.levels:
            pairs = match_levels(m.levels, base.levels, nearest)
            if nearest:
                far = max((abs(x - y) for x, y in pairs), default=0.0)
                say("grid", f"different noise grids ({levels_text(m.levels)} vs {levels_text(base.levels)}): "
                    f"{len(pairs)} levels paired with the nearest one (at most {far:.3g} apart)")
            elif pairs:  # none shared: compare_runs says the pair is not compared
                say("grid", f"different noise grids ({levels_text(m.levels)} vs {levels_text(base.levels)}): "
                    f"compared at the {len(pairs)} shared level(s) only (--nearest pairs the nearest levels)")
        if m.family != base.family:
            say("family", f"different families ({m.family} vs {base.family}): their losses are different "
                "objectives, so loss and grad_rms are not compared")
        elif m.batch_sizes != base.batch_sizes:
            bs = lambda f: "/".join(str(b) for b in f.batch_sizes) or "?"  # noqa: E731
            say("batch_size", f"different batch sizes (B = {bs(m)} vs {bs(base)}): grad_rms scales with 1/B, so "
                "B x grad_rms is compared")
        if m.depth is not None and base.depth is not None and m.depth != base.depth:
            pairs = match_depth(m.depth, base.depth)
            shown = ", ".join(f"{k}~{j}" for k, j in pairs[:6]) + (", ..." if len(pairs) > 6 else "")
            say("depth", f"different depths (D = {m.depth} vs {base.depth}): blocks compared at equal relative "
                f"depth k/D only ({len(pairs)} of {m.depth + 1} blocks: {shown})")
    return out


def merge_runs(frames: Sequence[pd.DataFrame], labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Several runs' tables as one; a model name that two runs share gets its run's label appended
    (``residual (runA)``), so every model keeps its own rows. ``labels`` default: run ids."""
    frames = list(frames)
    labels = list(labels) if labels is not None else [str(_unique(f, "run_id")[0]) if _unique(f, "run_id") else
                                                       f"run {i + 1}" for i, f in enumerate(frames)]
    names = [set(f["model"]) for f in frames]
    out = []
    for i, f in enumerate(frames):
        clash = names[i] & set().union(*(n for j, n in enumerate(names) if j != i))
        if clash:
            f = f.assign(model=f["model"].where(~f["model"].isin(clash), f["model"] + f" ({Path(labels[i]).name})"))
        out.append(f)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
