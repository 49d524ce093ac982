"""Depth x noise-level heatmaps of one metric, and the ratio of two models on a diverging scale.

Cells are drawn with ``pcolormesh``: one row of equal height per measured noise level, labelled with
the level (a grid of 16 levels reads as 16 rows, the edge levels no thinner than the others), and a
numeric depth axis. The ratio map is centred on 1 (white) with a colour bar fitted to the ratios
drawn (:class:`RatioNorm`), and marks the cells where the two models differ by more than 2 combined
standard errors (design §8). Models of different depth are compared at equal relative depth k / D,
batch sizes that differ as B x grad_rms (:mod:`dardiag.plots.depth`). Values that are constant or all
zero take one colour, and the colour bar says so.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import MaxNLocator, NullLocator

from dardiag.analysis.comparability import match_depth
from dardiag.plots import _data, depth
from dardiag.plots.legible import flat_data, flat_limits, flat_text
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


def auto_norm(values: np.ndarray, metric: str | None = None, stderr: np.ndarray | None = None) -> Normalize:
    """LogNorm when all values are positive and span more than one decade, else a linear Normalize
    over the finite range; constant or all-zero values (:func:`~dardiag.plots.legible.flat_data`) a
    range around their value, so that every cell takes the colour map's middle. (``metric`` is
    accepted for callers that want to special-case one.)"""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Normalize(0, 1)
    if flat_data(v, stderr) is not None:
        return Normalize(*flat_limits(v))
    lo, hi = float(v.min()), float(v.max())
    if lo > 0 and hi / lo > 10:
        return LogNorm(lo, hi)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return Normalize(lo, hi)


def draw_grid(ax: Axes, grid: pd.DataFrame, *, norm: Normalize, cmap) -> QuadMesh:
    """pcolormesh of a (noise level x depth) grid: cells centred on the depth indices (x), one row of
    equal height per noise level (y = its row number, labelled with the level)."""
    x = grid.columns.to_numpy(dtype=float)
    y = grid.index.to_numpy(dtype=float)
    cmap = colormap(cmap)  # missing cells: light grey
    data = np.ma.masked_invalid(grid.to_numpy(dtype=float))
    rows = np.arange(len(y) + 1, dtype=float) - 0.5
    mesh = ax.pcolormesh(_data.edges(x), rows, data, norm=norm, cmap=cmap, shading="flat")
    ax.set_ylim(rows[0], rows[-1])
    level_ticks(ax, y)
    name = grid.columns.name or "block"
    if name == "relative":
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ax.set_xlabel(depth.RELATIVE_LABEL)
    else:
        ax.xaxis.set_major_locator(depth.depth_locator())
        ax.set_xlabel(BLOCK_LABEL if name == "block" else SUBLAYER_LABEL)
    ax.set_ylabel(NOISE_LABEL)
    return mesh


def level_ticks(ax: Axes, levels: np.ndarray) -> None:
    """Label the rows of a categorical noise-level axis (row i = the i-th level, from the cleanest)
    with the levels themselves, rounded; the layout thins them where they would collide."""
    ax.set_yticks(np.arange(len(levels), dtype=float), level_labels(levels))
    ax.tick_params(axis="y", which="minor", left=False)


def level_rows(grid_index, levels) -> np.ndarray:
    """The row numbers of ``levels`` on a categorical axis of ``grid_index`` (nearest level)."""
    idx = np.asarray(grid_index, dtype=float)
    return np.array([int(np.argmin(np.abs(idx - float(v)))) for v in levels])


def flat_colorbar(cb, values, label: str) -> None:
    """A colour bar of constant or all-zero values: one tick at the value, and the label says so."""
    kind = flat_data(values)
    if kind is None:
        return
    v = np.asarray(values, dtype=float)
    mid = float(np.median(v[np.isfinite(v)]))
    cb.set_ticks([mid], labels=[f"{mid:.4g}"])
    cb.long_axis.set_minor_locator(NullLocator())
    cb.set_label(f"{label}:\n{flat_text(values, kind)}")


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
        cb = ax.figure.colorbar(mesh, ax=ax, label=metric_label(metric))
        round_log_colorbar(cb)
        flat_colorbar(cb, grid.to_numpy(), metric_label(metric))
    return ax


class RatioNorm(Normalize):
    """A diverging scale for ratios: 1 is the colour map's middle (white), r and 1/r (log) or 1 + d
    and 1 - d (linear, for ratios that are not all positive) get the same intensity, and the range
    [vmin, vmax] is the ratios' own (with 1), so the colour bar spans only values the data reach."""

    def __init__(self, vmin: float, vmax: float, log: bool = True):
        super().__init__(vmin, vmax)
        self.log = log

    def _f(self, v):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(v) if self.log else v - 1.0

    def _half(self) -> float:
        h = float(np.nanmax(np.abs(self._f(np.array([self.vmin, self.vmax], dtype=float)))))
        return h if np.isfinite(h) and h > 0 else 1.0

    def __call__(self, value, clip=None):
        result, is_scalar = self.process_value(value)
        if self.vmin is None or self.vmax is None:
            self.autoscale_None(result)
        out = np.ma.masked_invalid(0.5 + 0.5 * self._f(result.filled(np.nan)) / self._half())
        return out[0] if is_scalar else out

    def inverse(self, value):
        u = (np.asarray(value, dtype=float) - 0.5) * 2 * self._half()
        return np.exp(u) if self.log else u + 1.0


def ratio_norm(ratio: np.ndarray) -> RatioNorm:
    """The :class:`RatioNorm` of these ratios: log when all are positive, linear otherwise; fitted to
    their range with 1 inside it."""
    r = np.asarray(ratio, dtype=float)
    r = r[np.isfinite(r)]
    if not r.size:
        return RatioNorm(0.5, 2.0)
    lo, hi = min(float(r.min()), 1.0), max(float(r.max()), 1.0)
    if lo == hi:  # all exactly 1
        lo, hi = (1 / 1.01, 1.01) if lo > 0 else (0.99, 1.01)
    return RatioNorm(lo, hi, log=bool((r > 0).all()))


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
    """A small dot (dark with a light rim: visible on any colour) at the centre of every True cell of
    a (noise level x depth) grid drawn by :func:`draw_grid` (x: the depth, y: the level's row)."""
    ys, xs = np.nonzero(mask.to_numpy())
    if not len(xs):
        return None
    xe = _data.edges(mask.columns.to_numpy(dtype=float))
    cx = ((xe[:-1] + xe[1:]) / 2)[xs]
    dots = ax.scatter(cx, ys.astype(float), s=5, marker="o", color="0.1", edgecolors="white", linewidths=0.4,
                      zorder=3)
    dots.set_gid(MARK_GID)
    return dots


def round_log_colorbar(cb, *, ratio: bool = False) -> None:
    """On a log colour bar, tick round values (0.02, 0.05, 0.1, ... or decades; for ratios 0.5, 1, 2
    or 0.8, 1, 1.25) labelled plainly instead of matplotlib's 2x10^-1-style minor labels."""
    norm = cb.mappable.norm
    if not (isinstance(norm, LogNorm) or (isinstance(norm, RatioNorm) and norm.log)):
        return
    ticks = ratio_ticks(norm.vmin, norm.vmax) if ratio else log_ticks(norm.vmin, norm.vmax)
    if not ticks:
        return
    cb.set_ticks(ticks, labels=tick_texts(ticks))
    cb.long_axis.set_minor_locator(NullLocator())


def ratio_colorbar(ax: Axes | list, mesh: QuadMesh, label: str, values=None):
    """A colour bar for ratio maps (beside ``ax``: one Axes or several); on a log scale its ticks are
    round (0.5, 1, 2, ... or 0.8, 1, 1.25); ratios that are all 1 say so (``values``: the ratios)."""
    fig = ax[0].figure if isinstance(ax, list) else ax.figure
    norm = mesh.norm
    bounds = None
    if isinstance(norm, RatioNorm):  # the bar spans [vmin, vmax] only, evenly in the norm's own spacing
        bounds = np.geomspace(norm.vmin, norm.vmax, 257) if norm.log else np.linspace(norm.vmin, norm.vmax, 257)
    cb = fig.colorbar(mesh, ax=ax, label=label, boundaries=bounds)
    round_log_colorbar(cb, ratio=True)
    if values is not None:
        flat_colorbar(cb, values, label)
    return cb


def _ratio_side(df: pd.DataFrame, metric: str, model: str, site: str | None, scale: bool):
    rows, x = heatmap_rows(df, metric, model, site)
    if scale:
        rows = depth.times_batch(rows)
    return rows, x, _data.pivot(rows, "noise_level", x), _data.pivot(rows, "noise_level", x, values="stderr")


def ratio_grids(df: pd.DataFrame, metric: str, numerator: str, denominator: str, site: str | None = None):
    """(a, b, se_a, se_b): the two models' grids over the cells both have, aligned. Models of
    different depth meet at equal relative depth (columns named ``relative``: k / D); batch sizes
    that differ give B x grad_rms."""
    pair = df[df["model"].isin([numerator, denominator])]
    scale = metric in depth.BATCH_SCALED and depth.batches_differ(pair[pair["metric"] == metric])
    num_rows, xn, num, se_n = _ratio_side(df, metric, numerator, site, scale)
    den_rows, xd, den, se_d = _ratio_side(df, metric, denominator, site, scale)
    if xn != xd:
        raise ValueError(f"{numerator!r} and {denominator!r} index {metric!r} differently")
    dn, dd = depth.model_depths(num_rows).get(numerator), depth.model_depths(den_rows).get(denominator)
    if dn is not None and dd is not None and dn != dd:  # equal relative depth: k / dn == j / dd
        scale_n, scale_d = (dn, dd) if xn == "block" else (2 * dn, 2 * dd)
        pairs = [(k, j) for k, j in match_depth(scale_n, scale_d) if k in num.columns and j in den.columns]
        if not pairs:
            raise ValueError(f"{numerator!r} and {denominator!r} share no relative depth for {metric!r}")
        rel = pd.Index([k / scale_n for k, _ in pairs], name="relative")
        pick = lambda g, idx: g[[p[idx] for p in pairs]].set_axis(rel, axis=1)  # noqa: E731
        num, se_n, den, se_d = pick(num, 0), pick(se_n, 0), pick(den, 1), pick(se_d, 1)
    rows = num.index.intersection(den.index)
    cols = num.columns.intersection(den.columns)
    if len(rows) == 0 or len(cols) == 0:
        raise ValueError(f"{numerator!r} and {denominator!r} share no (depth, noise level) cells for {metric!r}")
    out = [g.loc[rows, cols] for g in (num, den, se_n, se_d)]
    for g in out:
        g.columns.name = num.columns.name
    return tuple(out)


def ratio_grid(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / b
    ratio = ratio.replace([np.inf, -np.inf], np.nan)
    ratio.columns.name = a.columns.name
    return ratio


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
    norm: Normalize | None = None,
) -> Axes:
    """``numerator / denominator`` (model names) of ``metric`` per depth x noise-level cell, on a
    diverging colour scale centred at 1 and fitted to the ratios (:class:`RatioNorm`: log with round
    ticks when all ratios are positive; ``norm`` shares one between panels). Only the cells both
    models have are compared: models of different depth at equal relative depth k / D, batch sizes
    that differ as B x grad_rms.

    With ``mark`` (default) and standard errors in the table, a dot marks every cell where the two
    models differ by more than 2 combined standard errors, |a - b| > 2 sqrt(se_a^2 + se_b^2), and
    a caption line under the title says so; without standard errors there are no dots and no such
    claim. A cell where either error is undefined (NaN) is never marked.
    """
    ax = ax if ax is not None else plt.gca()
    a, b, se_a, se_b = ratio_grids(df, metric, numerator, denominator, site)
    ratio = ratio_grid(a, b)
    norm = norm if norm is not None else ratio_norm(ratio.to_numpy())
    mesh = draw_grid(ax, ratio, norm=norm, cmap=cmap or DIVERGING_CMAP)
    note = None
    if mark:
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
        ratio_colorbar(ax, mesh, f"ratio of {metric}", ratio.to_numpy())
    return ax
