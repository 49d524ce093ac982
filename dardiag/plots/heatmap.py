"""Depth x noise-level heatmaps of one metric, and the ratio of two models on a diverging scale."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm
from matplotlib.ticker import FixedLocator, MaxNLocator

from dardiag.plots import _data
from dardiag.plots.style import (
    colormap,
    BLOCK_LABEL,
    DIVERGING_CMAP,
    NOISE_LABEL,
    SEQUENTIAL_CMAP,
    SUBLAYER_LABEL,
    metric_label,
)


def heatmap_grid(df: pd.DataFrame, metric: str, model: str) -> pd.DataFrame:
    """The (noise level x depth) grid of mean values of ``metric`` for ``model`` (latest checkpoint)."""
    sub = _data.metric_rows(df, metric)
    sub = sub[sub["model"] == model]
    if sub.empty:
        present = sorted(df.loc[df["metric"] == metric, "model"].unique().tolist())
        raise ValueError(f"model {model!r} has no {metric!r} rows; models with it: {present}")
    sub = _data.latest_checkpoint(sub)
    x = _data.depth_column(sub)
    sub = sub[sub[x].notna() & sub["noise_level"].notna()]
    if sub.empty:
        raise ValueError(f"{metric!r} of {model!r} has no rows with both a depth index and a noise level")
    _data.single_valued(sub, f"heatmap of {metric!r}", ignore=(x,))
    grid = _data.pivot(sub, index="noise_level", columns=x)
    grid.columns.name = x
    return grid


def auto_norm(values: np.ndarray, metric: str | None = None) -> Normalize:
    """LogNorm when all values are positive and span more than one decade, else a linear Normalize
    over the finite range. (``metric`` is accepted for callers that want to special-case one.)"""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Normalize(0, 1)
    lo, hi = float(v.min()), float(v.max())
    if lo > 0 and hi / lo > 10:
        return LogNorm(lo, hi)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return Normalize(lo, hi)


def draw_grid(ax: Axes, grid: pd.DataFrame, *, norm: Normalize, cmap) -> QuadMesh:
    """pcolormesh of a (noise level x depth) grid with cells centred on the integer depth indices."""
    x = grid.columns.to_numpy(dtype=float)
    y = grid.index.to_numpy(dtype=float)
    cmap = colormap(cmap)  # missing cells: light grey
    data = np.ma.masked_invalid(grid.to_numpy(dtype=float))
    mesh = ax.pcolormesh(_data.edges(x), _data.edges(y, clip=(0.0, 1.0)), data, norm=norm, cmap=cmap, shading="flat")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(*_data.edges(y, clip=(0.0, 1.0))[[0, -1]])
    level_ticks(ax, y)
    depth = grid.columns.name or "block"
    ax.set_xlabel(BLOCK_LABEL if depth == "block" else SUBLAYER_LABEL)
    ax.set_ylabel(NOISE_LABEL)
    return mesh


def level_ticks(ax: Axes, levels: np.ndarray, max_ticks: int = 6) -> None:
    """Tick the measured noise levels themselves when there are few of them."""
    if len(levels) <= max_ticks:
        ax.set_yticks(levels, [f"{v:g}" for v in levels])


def plot_heatmap(
    df: pd.DataFrame,
    metric: str,
    *,
    model: str,
    ax: Axes | None = None,
    norm: Normalize | None = None,
    cmap=None,
    colorbar: bool = True,
) -> Axes:
    """Depth (x: block, or sublayer for per-sublayer metrics) x noise level (y) map of ``metric``.

    ``norm`` defaults to a log scale for positive data spanning > 1 decade, else
    linear; pass a shared norm to compare panels. The mesh is ``ax.collections[0]``.
    """
    ax = ax if ax is not None else plt.gca()
    grid = heatmap_grid(df, metric, model)
    norm = norm if norm is not None else auto_norm(grid.to_numpy(), metric)
    mesh = draw_grid(ax, grid, norm=norm, cmap=cmap or SEQUENTIAL_CMAP)
    ax.set_title(model)
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label=metric_label(metric))
    return ax


def ratio_norm(ratio: np.ndarray) -> Normalize:
    """A diverging scale centred at 1: symmetric in log (1/m .. m) when all ratios are positive,
    else a two-slope linear scale with centre 1."""
    r = np.asarray(ratio, dtype=float)
    r = r[np.isfinite(r)]
    if r.size and (r > 0).all():
        m = float(np.exp(np.abs(np.log(r)).max()))
        m = max(m, 1.01)
        return LogNorm(1 / m, m)
    lo = min(float(r.min()) if r.size else 0.0, 0.99)
    hi = max(float(r.max()) if r.size else 2.0, 1.01)
    return TwoSlopeNorm(vcenter=1.0, vmin=lo, vmax=hi)


def plot_ratio_heatmap(
    df: pd.DataFrame,
    metric: str,
    *,
    numerator: str,
    denominator: str,
    ax: Axes | None = None,
    cmap=None,
    colorbar: bool = True,
) -> Axes:
    """``numerator / denominator`` (model names) of ``metric`` per depth x noise-level cell, on a
    diverging colour scale centred at 1 (log-symmetric when all ratios are positive). Only the
    cells both models have are compared."""
    ax = ax if ax is not None else plt.gca()
    num = heatmap_grid(df, metric, numerator)
    den = heatmap_grid(df, metric, denominator)
    if num.columns.name != den.columns.name:
        raise ValueError(f"{numerator!r} and {denominator!r} index {metric!r} differently")
    rows = num.index.intersection(den.index)
    cols = num.columns.intersection(den.columns)
    if len(rows) == 0 or len(cols) == 0:
        raise ValueError(f"{numerator!r} and {denominator!r} share no (depth, noise level) cells for {metric!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num.loc[rows, cols] / den.loc[rows, cols]
    ratio = ratio.replace([np.inf, -np.inf], np.nan)
    ratio.columns.name = num.columns.name
    norm = ratio_norm(ratio.to_numpy())
    mesh = draw_grid(ax, ratio, norm=norm, cmap=cmap or DIVERGING_CMAP)
    ax.set_title(f"{numerator} / {denominator}")
    if colorbar:
        cb = ax.figure.colorbar(mesh, ax=ax, label=f"ratio of {metric}")
        if isinstance(norm, LogNorm):
            m = norm.vmax
            ticks = [1 / m, 1.0, m] if m < 2 else [1 / m, 1 / np.sqrt(m), 1.0, np.sqrt(m), m]
            cb.ax.yaxis.set_major_locator(FixedLocator(ticks))
            cb.ax.yaxis.set_minor_locator(FixedLocator([]))
            cb.ax.set_yticklabels([f"{t:.3g}" for t in ticks])
    return ax
