"""Depth x sampler-step maps of a trajectory run (``--trajectory``): where along the model's own sampler a
block's output barely changes (the signal caching methods threshold) and what reusing it actually costs
(``cache_error``), side by side for each model.

x: the sampler step i (0 = the noisiest; the step's noise level on the top axis), y: block k. Relative
changes span decades: log colour scales, one per metric, shared by the models.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dardiag.plots import _data
from dardiag.plots.heatmap import auto_norm, round_log_colorbar
from dardiag.plots.labels import add_inputs_footer, metric_label
from dardiag.plots.panels import model_metric_grid
from dardiag.plots.theme import ONE_COLUMN, TWO_COLUMN, SEQUENTIAL_CMAP, colormap, new_figure, no_ligatures, paper_style

TRAJECTORY_METRICS = ("step_rel_change", "delta_rel_change", "step_cos", "cache_error")
CACHE_MAP_METRICS = ("step_rel_change", "cache_error")  # the signal, the causal error
STEP_AXIS_LABEL = "sampler step i (0 = noisiest)"
# what a column of fig_cache_map shows, above its panels (the colour bar under the column gives the formula)
PANEL_TITLES = {"step_rel_change": "signal: change of $z_k$ per step", "delta_rel_change": "signal: change of block k",
                "step_cos": "signal: cos between steps", "cache_error": "cost: error when block k reuses step i-1"}


def cache_grid(df: pd.DataFrame, metric: str, model: str, values: str = "value", branch: str | None = None) -> pd.DataFrame:
    """(block x sampler step) grid of ``metric`` for ``model`` (latest checkpoint); ``values="stderr"``
    gives the standard errors; ``branch``: which guidance branch of a pipeline's trajectory (default: the
    conditional one, where the rows have branches)."""
    sub = _data.metric_rows(df, metric)
    sub = _data.latest_checkpoint(sub[sub["model"] == model])
    if "branch" in sub.columns and sub["branch"].notna().any():
        sub = sub[sub["branch"] == (branch or "cond")]
    if sub.empty or "sampler_step" not in sub.columns or sub["sampler_step"].isna().all():
        raise ValueError(f"model {model!r} has no {metric!r} rows with a sampler step")
    sub = sub[sub["sampler_step"].notna() & sub["block"].notna()]
    return _data.pivot(sub, index="block", columns="sampler_step", values=values)


def _step_levels(df: pd.DataFrame, model: str) -> pd.Series:
    d = df[(df["model"] == model) & df["sampler_step"].notna()] if "sampler_step" in df.columns else df.iloc[:0]
    return d.groupby(d["sampler_step"].astype(int))["noise_level"].first().astype(float)


def plot_cache_map(df: pd.DataFrame, metric: str = "cache_error", *, model: str, ax: Axes | None = None,
                   norm: Normalize | None = None, cmap=None, colorbar: bool = True) -> Axes:
    """Block (y) x sampler step (x) map of a trajectory metric for one model; the mesh is ``ax.collections[0]``."""
    ax = ax if ax is not None else plt.gca()
    grid = cache_grid(df, metric, model)
    norm = norm if norm is not None else auto_norm(grid.to_numpy())
    steps = grid.columns.to_numpy(dtype=float)
    blocks = grid.index.to_numpy(dtype=float)
    mesh = ax.pcolormesh(_data.edges(steps), _data.edges(blocks), np.ma.masked_invalid(grid.to_numpy(dtype=float)),
                         norm=norm, cmap=colormap(cmap or SEQUENTIAL_CMAP), shading="flat")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(STEP_AXIS_LABEL)
    ax.set_ylabel("block k")
    levels = _step_levels(df[df["metric"] == metric], model)
    if len(levels) >= 2:  # the noise level each step is evaluated at, on top
        top = ax.secondary_xaxis("top")
        ticks = [int(s) for s in _data.spread(levels.index.tolist(), 4)]
        top.set_xticks(ticks, [f"{levels[s]:.2g}" for s in ticks])
        top.set_xlabel("noise level")
    ax.set_title(model, pad=2)
    if colorbar:
        round_log_colorbar(ax.figure.colorbar(mesh, ax=ax, label=metric_label(metric)))
    return ax


def trajectory_inputs(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with their ``inputs`` saying what a trajectory looked at: the model's own sampler from
    seeded noise (its conditioning: that of the run's inputs), not the run's images themselves."""
    if "inputs" not in rows.columns or "sampler_step" not in rows.columns:
        return rows
    said = rows["inputs"].astype("string").fillna("")
    if said.str.startswith("sampler trajectory").all():  # the engine already says which sampler ran
        return rows
    steps = rows.groupby("model")["sampler_step"].max().astype(int) + 1  # steps 0 .. n - 1
    labels = [f"the model's own sampler, {steps[m]} steps from seeded noise" + (f" (conditioning as in: {v})" if v
              else "") for m, v in zip(rows["model"], said)]
    return rows.assign(inputs=labels)


def fig_cache_map(df: pd.DataFrame, metrics: Sequence[str] = CACHE_MAP_METRICS) -> Figure:
    """One row per model, one column per metric (default: step_rel_change, the signal; cache_error, the
    causal error), each column on one colour scale shared by the models (its colour bar under it)."""
    _data.check_frame(df)
    present = [m for m in metrics if (df["metric"] == m).any()]
    if not present:
        raise ValueError(f"none of {list(metrics)} in the table; profile with --trajectory")
    rows = df[df["metric"].isin(present)]
    if "branch" in rows.columns and rows["branch"].notna().any():  # a pipeline's guidance branches: a row each
        rows = rows.assign(model=rows["model"].where(rows["branch"].isna(), rows["model"] + " · " + rows["branch"]),
                           branch=None)
    models = sorted(rows["model"].unique().tolist())
    grids = {(m, metric): cache_grid(rows, metric, m) for m in models for metric in present
             if ((rows["model"] == m) & (rows["metric"] == metric)).any()}
    norms = {metric: auto_norm(np.concatenate([g.to_numpy().ravel() for (_, mt), g in grids.items() if mt == metric]))
             for metric in present}
    ncol, nrow = len(present), len(models)
    with paper_style():
        fig = new_figure(TWO_COLUMN if ncol > 1 else ONE_COLUMN, 0.9 + 2.1 * nrow)
        axes = fig.subplots(nrow, ncol, squeeze=False)

        def draw(ax, m, metric) -> bool:
            if (m, metric) not in grids:
                return False
            plot_cache_map(rows, metric, model=m, ax=ax, norm=norms[metric], colorbar=False)
            ax.set_title(f"{m}\n{PANEL_TITLES.get(metric, metric)}", pad=2)
            return True

        model_metric_grid(fig, axes, models, present, draw, shrink=0.9, location="bottom")
        add_inputs_footer(fig, trajectory_inputs(rows))
        no_ligatures(fig)
    return fig
