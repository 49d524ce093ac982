"""Putting models of different depth (and batch size) on one axis.

Block k of an 8-block model and block k of a 28-block model are not the same place: where the depths
differ, lines are drawn over relative depth k / D (sublayers: l / 2D) and every legend entry says its
depth. grad_rms scales with 1/B (L is a mean over the batch), so where the batch sizes differ it is
drawn as B x grad_rms, which does not depend on B (diagnostics.md section 3).
"""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from dardiag.plots.labels import BLOCK_LABEL, SUBLAYER_LABEL

BATCH_SCALED = ("grad_rms", "token_grad_rms")  # metrics that scale with 1/B
RELATIVE_LABEL = "relative depth k/D"
RELATIVE_SUBLAYER_LABEL = "relative depth l/2D"


def model_depths(df: pd.DataFrame) -> dict[str, int]:
    """D per model: its largest block index (or half its largest sublayer below the final aggregator)."""
    out: dict[str, int] = {}
    for m, g in df.groupby("model", sort=False):
        if "block" in g.columns and g["block"].notna().any():
            out[str(m)] = int(g["block"].max())
        elif "sublayer" in g.columns and g["sublayer"].notna().any():
            out[str(m)] = int(g["sublayer"].max()) // 2
    return out


def depths_differ(df: pd.DataFrame) -> bool:
    return len(set(model_depths(df).values())) > 1


def batch_sizes(df: pd.DataFrame) -> dict[str, int]:
    """B per model (its first recorded batch size)."""
    if "batch_size" not in df.columns:
        return {}
    b = df[df["batch_size"].notna()].groupby("model", sort=False)["batch_size"].first()
    return {str(m): int(v) for m, v in b.items()}


def batches_differ(df: pd.DataFrame) -> bool:
    return len(set(batch_sizes(df).values())) > 1


def to_relative(sub: pd.DataFrame, x: str, depths: dict[str, int]) -> pd.DataFrame:
    """``x`` (block or sublayer) as a fraction of each model's depth (2D for sublayers)."""
    scale = sub["model"].map({m: float(d if x == "block" else 2 * d) for m, d in depths.items()})
    return sub.assign(**{x: sub[x].astype(float) / scale})


def times_batch(sub: pd.DataFrame) -> pd.DataFrame:
    """value and stderr times the row's batch size."""
    b = sub["batch_size"].astype(float)
    out = sub.assign(value=sub["value"].astype(float) * b)
    if "stderr" in sub.columns:
        out["stderr"] = sub["stderr"].astype(float) * b
    return out


def notes(df: pd.DataFrame, batch: bool = True) -> dict[str, str]:
    """What a legend entry adds to a model's name: its depth and (``batch``) batch size, where they
    differ."""
    d, b = model_depths(df), batch_sizes(df)
    show_d, show_b = len(set(d.values())) > 1, batch and len(set(b.values())) > 1
    out = {}
    for m in pd.unique(df["model"].dropna()):
        parts = ([f"D = {d[m]}"] if show_d and m in d else []) + ([f"B = {b[m]}"] if show_b and m in b else [])
        out[str(m)] = ", ".join(parts)
    return out


def label_depth_axis(ax: Axes, x: str, relative: bool) -> None:
    """The x axis of a curve over blocks (``x="block"``) or sublayers: relative depth where models differ."""
    if relative:
        ax.set_xlabel(RELATIVE_LABEL if x == "block" else RELATIVE_SUBLAYER_LABEL)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    else:
        ax.set_xlabel(BLOCK_LABEL if x == "block" else SUBLAYER_LABEL)
        ax.xaxis.set_major_locator(depth_locator())


def depth_locator() -> MaxNLocator:
    """Integer ticks at round steps (1, 2, 5, 10, ...); too many for the panel are thinned at layout."""
    return MaxNLocator(integer=True, steps=[1, 2, 5, 10])
