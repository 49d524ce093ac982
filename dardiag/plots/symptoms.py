"""The paper's three symptoms over depth: one line per (model, noise level)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from dardiag.plots import _data
from dardiag.plots.style import (
    BLOCK_LABEL,
    LOG_METRICS,
    SUBLAYER_LABEL,
    log_axis,
    metric_label,
    model_colors,
    model_level_legend,
    ramp,
)

MAX_LEVELS = 5  # default cap on lines per model; pass noise_levels= for others


def draw_lines(
    ax: Axes,
    sub: pd.DataFrame,
    x: str,
    colors: dict[str, str],
    levels: Sequence[float] | None,
    *,
    marker: str = "o",
) -> tuple[list[str], list[float]]:
    """One line of mean ``value`` over ``x`` per (model, noise level); noise levels are a
    light-to-dark ramp of the model's colour (darker = noisier). Returns (models, levels) drawn."""
    models = sorted(sub["model"].unique().tolist())
    drawn_levels: set[float] = set()
    for m in models:
        g = sub[sub["model"] == m]
        if levels:
            shades = ramp(colors[m], len(levels))
            groups = []
            for lvl, c in zip(levels, shades):
                gl = g[np.isclose(g["noise_level"].astype(float), lvl)]
                if not gl.empty:
                    groups.append((gl, c, f"{m}, noise {lvl:g}"))
                    drawn_levels.add(lvl)
        else:
            groups = [(g, colors[m], m)]
        for gl, c, label in groups:
            s = gl.groupby(x)["value"].mean().sort_index()
            ax.plot(s.index.astype(float), s.to_numpy(dtype=float), color=c, marker=marker, label=label)
    return models, sorted(drawn_levels)


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
    """Lines of ``metric`` over depth, one per model and noise level.

    - x: block k (0 = embedding); metrics stored per sublayer (h_rms, v_rms) use sublayer l.
    - ``noise_levels``: the levels to draw (nearest available); default all, at most 5 spread evenly.
    - ``models``: subset of model names; colours stay those of the whole table.
    - y is logarithmic for RMS metrics (``log=`` overrides). With a series of checkpoints, each
      model's latest step is shown.
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

    drawn_models, drawn_levels = draw_lines(ax, sub, x, colors, levels)

    if (log if log is not None else metric in LOG_METRICS) and (sub["value"] > 0).all():
        log_axis(ax)
    ax.set_xlabel(BLOCK_LABEL if x == "block" else SUBLAYER_LABEL)
    ylabel = metric_label(metric)
    if metric in ("grad_rms", "token_grad_rms") and "batch_size" in sub and sub["batch_size"].nunique() == 1:
        ylabel += f" (B={int(sub['batch_size'].iloc[0])})"  # grad_rms scales with 1/B
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if legend:
        model_level_legend(ax, colors, drawn_models, drawn_levels)
    return ax
