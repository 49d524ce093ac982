"""The paper's three symptoms over depth: one line per (model, noise level), with +-2 s.e. bands.

Lines are ``seaborn.lineplot`` on the tidy rows with ``hue`` = noise level inside each model (the
model's own colour map, light = clean to dark = noise, keyed by one colour bar per model) and a
marker per model. Models of different depth are drawn over relative depth k / D, batch sizes that
differ as B x grad_rms (:mod:`dardiag.plots.depth`); a flat curve is drawn flat and labelled
(:mod:`dardiag.plots.legible`). Every point is
one number of the table already, so seaborn never estimates or bootstraps (``estimator=None``); the
band is the row's own ``stderr`` (design §8), drawn with ``fill_between`` where it is finite.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.ticker import FixedFormatter, FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from dardiag.plots import _data, depth
from dardiag.plots.labels import (
    is_log,
    level_colorbar,
    level_labels,
    line_legend_handles,
    log_ticks,
    metric_label,
    tick_texts,
)
from dardiag.plots.legible import flat_data, flat_limits, flat_text
from dardiag.plots.theme import BAND_ALPHA, level_cmap, model_colors, model_markers

FLAT_GID = "flat-note"  # the gid of the text saying a panel's data are constant / all zero

MAX_LINES = 5  # default cap on lines per model; pass noise_levels= for others
BAND_GID = "stderr-band"  # the gid of every +-2 s.e. band (tests and users find them by it)


def draw_band(ax: Axes, x: np.ndarray, value: np.ndarray, stderr: np.ndarray, color, *, log: bool = False):
    """Fill value +- 2 stderr where stderr is finite; nothing (and None) when it is nowhere finite.

    On a log axis a lower edge at or below 0 is drawn at value / 10: the band then runs off the
    decade below, which reads as "not bounded away from zero" without stretching the axis.
    """
    se = np.asarray(stderr, dtype=float)
    if not np.isfinite(se).any():
        return None
    v = np.asarray(value, dtype=float)
    lo, hi = v - 2 * se, v + 2 * se
    if log:
        lo = np.where(lo > 0, lo, v / 10)
    poly = ax.fill_between(np.asarray(x, dtype=float), lo, hi, color=color, alpha=BAND_ALPHA, linewidth=0, zorder=1.5)
    poly.set_gid(BAND_GID)
    return poly


def draw_lines(
    ax: Axes,
    sub: pd.DataFrame,
    x: str,
    colors: dict[str, str],
    levels: Sequence[float] | None,
    *,
    log: bool = False,
) -> tuple[list[str], list[float], bool]:
    """One line of ``value`` over ``x`` per (model, noise level), each with its +-2 s.e. band.

    Returns (models, levels, band): what was drawn, and whether any band was.
    """
    models = sorted(sub["model"].unique().tolist())
    markers = model_markers(colors)
    drawn_levels: set[float] = set()
    any_band = False
    for m in models:
        g = sub[sub["model"] == m]
        if levels:  # hue = noise level: the model's colour map at the level (darker = noisier)
            cmap = level_cmap(colors[m])
            shades = {name: cmap(float(lvl)) for name, lvl in zip(level_labels(levels), levels)}
            at = g["noise_level"].to_numpy(dtype=float, na_value=np.nan)
            parts = []
            for lvl, name in zip(levels, shades):
                if np.isclose(at, lvl).any():
                    parts.append(_data.collapse(g[np.isclose(at, lvl)], [x]).assign(noise=name))
                    drawn_levels.add(lvl)
            if not parts:
                continue
            cells = pd.concat(parts, ignore_index=True)
            palette = {name: shades[name] for name in cells["noise"].unique()}
            semantics: dict = dict(hue="noise", hue_order=list(palette), palette=palette)
        else:
            cells = _data.collapse(g, [x]).assign(noise=m)
            palette = {m: colors[m]}
            semantics = dict(color=colors[m])
        cells[x] = cells[x].astype(float)
        sns.lineplot(
            data=cells, x=x, y="value", **semantics, marker=markers.get(m, "o"), markeredgewidth=0,
            estimator=None, errorbar=None, sort=True, legend=False, ax=ax,
        )
        for name, line in cells.groupby("noise", sort=False):  # collapse sorted each by x
            any_band |= draw_band(ax, line[x], line["value"], line["stderr"], palette[name], log=log) is not None
    return models, sorted(drawn_levels), any_band


def log_axis(ax: Axes, axis: str = "y", values: np.ndarray | None = None) -> None:
    """Log scale with ticks that read at a glance: within a decade plain, evenly stepped values
    (0.4, 0.8, 1.2) instead of ``4 x 10^-1``; over wider ranges round values (5, 10, 20, 50, or
    decades) rather than matplotlib's labelled minor ticks. The ticks fit ``values`` (default: the
    data of the Axes' lines; pass all panels' data for a shared axis)."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    if values is None:
        data = [np.asarray(line.get_ydata() if axis == "y" else line.get_xdata(), dtype=float) for line in ax.lines]
        values = np.concatenate(data) if data else np.array([])
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if not vals.size:
        return
    if vals.max() / vals.min() < 10:
        target.set_major_locator(MaxNLocator(nbins=5))  # plain, evenly stepped values
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        target.set_minor_formatter(NullFormatter())
        return
    ticks = log_ticks(vals.min(), vals.max())
    if ticks:
        target.set_major_locator(FixedLocator(ticks))
        target.set_major_formatter(FixedFormatter(tick_texts(ticks)))
        target.set_minor_formatter(NullFormatter())


def mark_flat(ax: Axes, values, stderr=None) -> str | None:
    """When ``values`` are all zero or constant (:func:`~dardiag.plots.legible.flat_data`): y limits
    around the value, plain ticks, and the panel says so. Returns the kind (or None)."""
    kind = flat_data(values, stderr)
    if kind is None:
        return None
    if ax.get_yscale() != "linear":
        ax.set_yscale("linear")
    ax.set_ylim(*flat_limits(values))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))
    ax.text(0.03, 0.95, flat_text(values, kind), transform=ax.transAxes, ha="left", va="top", fontsize=7,
            color="0.35", gid=FLAT_GID)
    return kind


def plot_metric_by_block(
    df: pd.DataFrame,
    metric: str,
    *,
    ax: Axes | None = None,
    noise_levels: Sequence[float] | None = None,
    models: Sequence[str] | None = None,
    legend: bool = True,
    log: bool | None = None,
    relative: bool | None = None,
) -> Axes:
    """Lines of ``metric`` over depth, one per model and noise level, with +-2 s.e. bands.

    - x: block k (0 = embedding); metrics stored per sublayer (h_rms, v_rms) use sublayer l. Models
      of different depth: relative depth k / D (``relative=`` forces either).
    - ``noise_levels``: the levels to draw (nearest available); default all, at most 5 spread evenly.
      Each model's lines take its colour map by noise level (darker = noisier).
    - ``models``: subset of model names; colours stay those of the whole table.
    - y is logarithmic for metrics registered as log (``log=`` overrides), over the positive values
      (others are not drawn). grad_rms carries its batch size B; models of different B are drawn as
      B x grad_rms. With a series of checkpoints, each model's latest step is shown. Values that
      are all zero or constant are drawn flat, and the panel says so.
    - bands: value +- 2 ``stderr`` wherever the table has a finite one (none without the column).
    - ``legend``: the models in a legend and one noise-level colour bar per model beside the Axes.
    """
    ax = ax if ax is not None else plt.gca()
    colors = model_colors(df["model"].dropna().unique()) if "model" in df.columns else {}
    sub = _data.metric_rows(df, metric)
    if models is not None:
        unknown = sorted(set(models) - set(sub["model"].unique()))
        if unknown:
            raise ValueError(f"model(s) {unknown} have no {metric!r} rows")
        sub = sub[sub["model"].isin(list(models))]
    sub = _data.latest_checkpoint(sub)
    x = _data.depth_column(sub)
    sub = sub[sub[x].notna()]
    _data.single_valued(sub, f"plot_metric_by_block({metric!r})", ignore=(x,))
    notes = depth.notes(sub)
    rel = depth.depths_differ(sub) if relative is None else relative
    if rel:
        sub = depth.to_relative(sub, x, depth.model_depths(sub))
    scaled = metric in depth.BATCH_SCALED and depth.batches_differ(sub)
    if scaled:
        sub = depth.times_batch(sub)

    available = _data.levels_of(sub)
    if not available:
        levels: list[float] = []
    elif noise_levels is None:
        levels = _data.spread(available, MAX_LINES)
    else:
        levels = _data.nearest(available, noise_levels)

    values = sub["value"].to_numpy(dtype=float, na_value=np.nan)
    use_log = (log if log is not None else is_log(metric)) and bool((values > 0).any())
    if use_log:  # a log axis shows the positive values; a zero or negative one has no place on it
        sub = sub[values > 0]
    drawn_models, drawn_levels, band = draw_lines(ax, sub, x, colors, levels, log=use_log)

    if use_log:
        log_axis(ax)
    mark_flat(ax, sub["value"].to_numpy(dtype=float), _data.stderr_of(sub).to_numpy())
    depth.label_depth_axis(ax, x, rel)
    ylabel = metric_label(metric)
    if scaled:
        ylabel = "B x " + ylabel  # grad_rms scales with 1/B: B x grad_rms does not
    elif metric in depth.BATCH_SCALED and "batch_size" in sub and sub["batch_size"].nunique() == 1:
        ylabel += f" (B={int(sub['batch_size'].iloc[0])})"  # grad_rms scales with 1/B
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend(handles=line_legend_handles(colors, drawn_models, drawn_levels, band=band, notes=notes,
                                              of=len(available)), loc="best")
        if len(drawn_levels) > 1:
            for m in reversed(drawn_models):  # the last made sits nearest the Axes: the first model's
                level_colorbar(ax.figure, colors[m], drawn_levels, ax=ax, orientation="vertical",
                               label=f"noise level: {m}")
    return ax
