"""The paper's three symptoms over depth: one line per (model, noise level), with +-2 s.e. bands.

Lines are ``seaborn.lineplot`` on the tidy rows with ``hue`` = noise level inside each model (a
light-to-dark ramp of the model's colour: darker = noisier) and a marker per model. Every point is
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

from dardiag.plots import _data
from dardiag.plots.labels import (
    BLOCK_LABEL,
    SUBLAYER_LABEL,
    is_log,
    level_labels,
    line_legend_handles,
    log_ticks,
    metric_label,
    tick_texts,
)
from dardiag.plots.theme import BAND_ALPHA, model_colors, model_markers, ramp

MAX_LEVELS = 5  # default cap on lines per model; pass noise_levels= for others
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
        if levels:  # hue = noise level: a ramp of the model's colour, darker = noisier
            shades = dict(zip(level_labels(levels), ramp(colors[m], len(levels))))
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


def plot_metric_by_block(
    df: pd.DataFrame,
    metric: str,
    *,
    ax: Axes | None = None,
    noise_levels: Sequence[float] | None = None,
    models: Sequence[str] | None = None,
    legend: bool = True,
    log: bool | None = None,
) -> Axes:
    """Lines of ``metric`` over depth, one per model and noise level, with +-2 s.e. bands.

    - x: block k (0 = embedding); metrics stored per sublayer (h_rms, v_rms) use sublayer l.
    - ``noise_levels``: the levels to draw (nearest available); default all, at most 5 spread evenly.
    - ``models``: subset of model names; colours stay those of the whole table.
    - y is logarithmic for metrics registered as log (``log=`` overrides). With a series of
      checkpoints, each model's latest step is shown.
    - bands: value +- 2 ``stderr`` wherever the table has a finite one (none without the column).
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

    available = _data.levels_of(sub)
    if not available:
        levels: list[float] = []
    elif noise_levels is None:
        levels = _data.spread(available, MAX_LEVELS)
    else:
        levels = _data.nearest(available, noise_levels)

    use_log = (log if log is not None else is_log(metric)) and bool((sub["value"] > 0).all())
    drawn_models, drawn_levels, band = draw_lines(ax, sub, x, colors, levels, log=use_log)

    if use_log:
        log_axis(ax)
    ax.set_xlabel(BLOCK_LABEL if x == "block" else SUBLAYER_LABEL)
    ylabel = metric_label(metric)
    if metric in ("grad_rms", "token_grad_rms") and "batch_size" in sub and sub["batch_size"].nunique() == 1:
        ylabel += f" (B={int(sub['batch_size'].iloc[0])})"  # grad_rms scales with 1/B
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if legend:
        ax.legend(handles=line_legend_handles(colors, drawn_models, drawn_levels, band=band), loc="best")
    return ax
