"""Looks redundant vs is removable: depth x noise-level maps of cos_prev beside the cost of skipping each
block (``--ablation``: ablate_rel_out, ablate_dloss), one row per model.

A block with cos_prev near 1 barely turns the state; whether removing it is harmless is what the
ablation maps say, cell for cell on the same inputs, noise and timesteps. Each column has one colour
scale shared by the models; the loss increase, which can be negative, is on a diverging scale symmetric about 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import CenteredNorm, Normalize
from matplotlib.figure import Figure

from dardiag.plots import _data
from dardiag.plots.heatmap import auto_norm, heatmap_grid, plot_heatmap
from dardiag.plots.labels import NOISE_LABEL_2, add_inputs_footer
from dardiag.plots.panels import model_metric_grid
from dardiag.plots.theme import DIVERGING_CMAP, TWO_COLUMN, new_figure, no_ligatures, paper_style

ABLATION_METRICS = ("ablate_rel_out", "ablate_dloss")
ABLATION_FIGURE = ("cos_prev",) + ABLATION_METRICS


def _norm(values: np.ndarray, metric: str) -> tuple[Normalize, str | None]:
    v = values[np.isfinite(values)]
    if metric == "ablate_dloss" and v.size and v.min() < 0 < v.max():  # helps some cells, hurts others
        # symmetric about 0: a loss change of -0.001 must look as small as +0.001 does
        return CenteredNorm(vcenter=0.0, halfrange=float(np.abs(v).max())), DIVERGING_CMAP
    return auto_norm(v), None


def fig_ablation(df: pd.DataFrame, metrics: Sequence[str] = ABLATION_FIGURE) -> Figure:
    """Rows: models with ablation rows; columns: cos_prev, ablate_rel_out, ablate_dloss (as present)."""
    _data.check_frame(df)
    sub = _data.latest_checkpoint(df[df["metric"].isin(metrics)])
    models = sorted(sub.loc[sub["metric"].isin(ABLATION_METRICS), "model"].unique().tolist())
    if not models:
        raise ValueError("no ablate_dloss / ablate_rel_out rows; profile with --ablation")
    present = [m for m in metrics if (sub["metric"] == m).any()]
    if len(_data.levels_of(sub[sub["metric"].isin(ABLATION_METRICS)])) < 2:
        raise ValueError("fewer than two noise levels")
    grids = {}
    for m in models:
        for metric in present:
            try:
                grids[m, metric] = heatmap_grid(sub, metric, m)
            except ValueError:
                pass
    nrow, ncol = len(models), len(present)
    with paper_style():
        fig = new_figure(TWO_COLUMN, 0.4 + 1.8 * nrow)
        axes = fig.subplots(nrow, ncol, squeeze=False)
        scales = {}
        for metric in present:
            vals = [g.to_numpy().ravel() for (_, mt), g in grids.items() if mt == metric]
            scales[metric] = _norm(np.concatenate(vals) if vals else np.array([]), metric)

        def draw(ax, m, metric) -> bool:
            if (m, metric) not in grids:
                return False
            norm, cmap = scales[metric]
            plot_heatmap(sub, metric, model=m, ax=ax, norm=norm, cmap=cmap, colorbar=False)
            ax.set_ylabel(NOISE_LABEL_2)  # a row is shorter than the one-line label
            ax.set_title(m if metric == present[0] else "")
            return True

        model_metric_grid(fig, axes, models, present, draw, shrink=0.9, location="bottom")
        add_inputs_footer(fig, sub)
        no_ligatures(fig)
    return fig
