"""Depth x noise-level heatmaps of one metric, and the ratio of two models on a diverging scale.

Cells are drawn with ``pcolormesh`` rather than ``seaborn.heatmap``: noise levels need not be evenly
spaced (cells are centred on the measured levels) and the depth axis stays numeric. The ratio map
marks the cells where the two models differ by more than 2 combined standard errors (design §8).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm
from matplotlib.ticker import MaxNLocator, NullLocator

from dardiag.plots import _data
from dardiag.plots.labels import (
    BLOCK_LABEL,
    NOISE_LABEL,
    SIGNIFICANT_NOTE,
    SUBLAYER_LABEL,
    level_labels,
    metric_label,
    log_ticks,
    ratio_ticks,
    tick_texts,
)
from dardiag.plots.theme import DIVERGING_CMAP, SEQUENTIAL_CMAP, colormap

MARK_GID = "significant"  # the gid of the dots marking significant cells
NOTE_GID = "significant-note"  # the gid of the caption line saying what the dots mean


def heatmap_rows(df: pd.DataFrame, metric: str, model: str, site: str | None = None) -> tuple[pd.DataFrame, str]:
    """The rows of ``metric`` for ``model`` (latest checkpoint) that fill a depth x noise-level map,
    and the depth column. Metrics recorded at several sites (the outlier metrics exist at z, h and v)
    are taken at site z unless ``site`` says otherwise."""
    sub = _data.metric_rows(df, metric)
    sub = sub[sub["model"] == model]
    if sub.empty:
        present = sorted(df.loc[df["metric"] == metric, "model"].unique().tolist())
        raise ValueError(f"model {model!r} has no {metric!r} rows; models with it: {present}")
    sub = _data.prefer_site(_data.latest_checkpoint(sub), site)
    x = _data.depth_column(sub)
    sub = sub[sub[x].notna() & sub["noise_level"].notna()]
    if sub.empty:
        raise ValueError(f"{metric!r} of {model!r} has no rows with both a depth index and a noise level")
    _data.single_valued(sub, f"heatmap of {metric!r}", ignore=(x,))
    return sub, x


def heatmap_grid(
    df: pd.DataFrame, metric: str, model: str, site: str | None = None, values: str = "value"
) -> pd.DataFrame:
    """The (noise level x depth) grid of mean values of ``metric`` for ``model`` (latest checkpoint);
    ``values="stderr"``: their standard errors (NaN where undefined)."""
    sub, x = heatmap_rows(df, metric, model, site)
    return _data.pivot(sub, index="noise_level", columns=x, values=values)


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
    ye = _data.edges(y, clip=(0.0, 1.0))
    mesh = ax.pcolormesh(_data.edges(x), ye, data, norm=norm, cmap=cmap, shading="flat")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(ye[0], ye[-1])
    level_ticks(ax, y)
    depth = grid.columns.name or "block"
    ax.set_xlabel(BLOCK_LABEL if depth == "block" else SUBLAYER_LABEL)
    ax.set_ylabel(NOISE_LABEL)
    return mesh


def level_ticks(ax: Axes, levels: np.ndarray, max_ticks: int = 6) -> None:
    """Tick the measured noise levels themselves (rounded) when there are few of them."""
    if len(levels) <= max_ticks:
        ax.set_yticks(levels, level_labels(levels))


def plot_heatmap(
    df: pd.DataFrame,
    metric: str,
    *,
    model: str,
    ax: Axes | None = None,
    norm: Normalize | None = None,
    cmap=None,
    colorbar: bool = True,
    site: str | None = None,
) -> Axes:
    """Depth (x: block, or sublayer for per-sublayer metrics) x noise level (y) map of ``metric``.

    ``norm`` defaults to a log scale for positive data spanning > 1 decade, else
    linear; pass a shared norm to compare panels. ``site``: for metrics recorded at several sites
    (default z). The mesh is ``ax.collections[0]``.
    """
    ax = ax if ax is not None else plt.gca()
    grid = heatmap_grid(df, metric, model, site)
    norm = norm if norm is not None else auto_norm(grid.to_numpy(), metric)
    mesh = draw_grid(ax, grid, norm=norm, cmap=cmap or SEQUENTIAL_CMAP)
    ax.set_title(model)
    if colorbar:
        round_log_colorbar(ax.figure.colorbar(mesh, ax=ax, label=metric_label(metric)))
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


def significant_cells(
    a: pd.DataFrame, b: pd.DataFrame, se_a: pd.DataFrame, se_b: pd.DataFrame
) -> pd.DataFrame | None:
    """Boolean grid: |a - b| > 2 sqrt(se_a^2 + se_b^2), False where either error is undefined.
    None when no cell has both errors (then nothing can be claimed either way)."""
    se = np.sqrt(se_a.to_numpy(dtype=float) ** 2 + se_b.to_numpy(dtype=float) ** 2)
    if not np.isfinite(se).any():
        return None
    diff = np.abs(a.to_numpy(dtype=float) - b.to_numpy(dtype=float))
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(se) & np.isfinite(diff) & (diff > 2 * se)
    return pd.DataFrame(mask, index=a.index, columns=a.columns)


def mark_cells(ax: Axes, mask: pd.DataFrame):
    """A small dot (dark with a light rim: visible on any colour) at the visual centre of every True
    cell of a (noise level x depth) grid drawn by :func:`draw_grid` (the end rows are half cells)."""
    ys, xs = np.nonzero(mask.to_numpy())
    if not len(xs):
        return None
    xe = _data.edges(mask.columns.to_numpy(dtype=float))
    ye = _data.edges(mask.index.to_numpy(dtype=float), clip=(0.0, 1.0))
    cx = ((xe[:-1] + xe[1:]) / 2)[xs]
    cy = ((ye[:-1] + ye[1:]) / 2)[ys]
    dots = ax.scatter(cx, cy, s=5, marker="o", color="0.1", edgecolors="white", linewidths=0.4, zorder=3)
    dots.set_gid(MARK_GID)
    return dots


def round_log_colorbar(cb, *, ratio: bool = False) -> None:
    """On a log colour bar, tick round values (0.02, 0.05, 0.1, ... or decades; for ratios 0.5, 1, 2
    or 0.8, 1, 1.25) labelled plainly instead of matplotlib's 2x10^-1-style minor labels."""
    norm = cb.mappable.norm
    if not isinstance(norm, LogNorm):
        return
    ticks = ratio_ticks(norm.vmin, norm.vmax) if ratio else log_ticks(norm.vmin, norm.vmax)
    if not ticks:
        return
    cb.set_ticks(ticks, labels=tick_texts(ticks))
    cb.ax.yaxis.set_minor_locator(NullLocator())


def ratio_colorbar(ax: Axes, mesh: QuadMesh, label: str):
    """A colour bar for a ratio map; on a log scale its ticks are round (0.5, 1, 2, ... or 0.8, 1, 1.25)."""
    cb = ax.figure.colorbar(mesh, ax=ax, label=label)
    round_log_colorbar(cb, ratio=True)
    return cb


def plot_ratio_heatmap(
    df: pd.DataFrame,
    metric: str,
    *,
    numerator: str,
    denominator: str,
    ax: Axes | None = None,
    cmap=None,
    colorbar: bool = True,
    site: str | None = None,
    mark: bool = True,
) -> Axes:
    """``numerator / denominator`` (model names) of ``metric`` per depth x noise-level cell, on a
    diverging colour scale centred at 1 (log-symmetric with round ticks when all ratios are
    positive). Only the cells both models have are compared.

    With ``mark`` (default) and standard errors in the table, a dot marks every cell where the two
    models differ by more than 2 combined standard errors, |a - b| > 2 sqrt(se_a^2 + se_b^2), and
    a caption line under the title says so; without standard errors there are no dots and no such
    claim. A cell where either error is undefined (NaN) is never marked.
    """
    ax = ax if ax is not None else plt.gca()
    num_rows, xn = heatmap_rows(df, metric, numerator, site)
    den_rows, xd = heatmap_rows(df, metric, denominator, site)
    if xn != xd:
        raise ValueError(f"{numerator!r} and {denominator!r} index {metric!r} differently")
    num = _data.pivot(num_rows, "noise_level", xn)
    den = _data.pivot(den_rows, "noise_level", xd)
    rows = num.index.intersection(den.index)
    cols = num.columns.intersection(den.columns)
    if len(rows) == 0 or len(cols) == 0:
        raise ValueError(f"{numerator!r} and {denominator!r} share no (depth, noise level) cells for {metric!r}")
    a, b = num.loc[rows, cols], den.loc[rows, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / b
    ratio = ratio.replace([np.inf, -np.inf], np.nan)
    ratio.columns.name = num.columns.name
    norm = ratio_norm(ratio.to_numpy())
    mesh = draw_grid(ax, ratio, norm=norm, cmap=cmap or DIVERGING_CMAP)
    note = None
    if mark:
        se_a = _data.pivot(num_rows, "noise_level", xn, values="stderr").loc[rows, cols]
        se_b = _data.pivot(den_rows, "noise_level", xd, values="stderr").loc[rows, cols]
        mask = significant_cells(a, b, se_a, se_b)
        if mask is not None:
            mark_cells(ax, mask)
            note = SIGNIFICANT_NOTE + ("" if mask.to_numpy().any() else " (none here)")
    title = ax.set_title(f"{numerator} / {denominator}")
    if note:  # a caption line between title and panel (one-line texts: see theme.no_ligatures)
        size = max(7.0, title.get_fontsize() - 1)
        ax.annotate(note, xy=(0.5, 1.0), xycoords="axes fraction", xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=size, gid=NOTE_GID)
        ax.set_title(title.get_text(), pad=3 + 1.3 * size + 3)
    if colorbar:
        ratio_colorbar(ax, mesh, f"ratio of {metric}")
    return ax
