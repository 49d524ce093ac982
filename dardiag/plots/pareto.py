"""Speed-up against error of caching methods on one pipeline (``dardiag cache-eval``'s summary table).

x: the speed-up in transformer block evaluations (uncached over cached, counted by hooks), y: the relative
error of the final latents against the uncached call (log), +-2 standard errors over prompts; one line per
method through its settings; the Pareto front (no other setting both faster and more accurate) ringed.
dardiag's own schedule edits by hooks and saves no time: its points are hollow.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dardiag.plots.theme import ONE_COLUMN, model_colors, new_figure, no_ligatures, paper_style


def plot_cache_eval(summary: pd.DataFrame, *, ax: Axes | None = None, x: str = "speedup_blocks") -> Axes:
    """One line per method of ``summary`` (``dardiag.savings.evaluate.summarise``): ``x`` against rel_error."""
    ax = ax if ax is not None else plt.gca()
    if summary.empty:
        raise ValueError("no cached settings to draw; run dardiag cache-eval with at least one method")
    errors = summary["rel_error"].to_numpy(float)
    positive = errors[errors > 0]
    floor = positive.min() / 4 if len(positive) else 1e-6  # exact reproductions sit on the floor, marked
    colors = model_colors(sorted(summary["method"].unique()))
    for method, d in summary.groupby("method", sort=True):
        d = d.sort_values(x)
        err = np.maximum(d["rel_error"].to_numpy(float), floor)
        se = np.nan_to_num(d["rel_error_se"].to_numpy(float))
        hollow = method == "dardiag"
        ax.errorbar(d[x], err, yerr=[np.minimum(2 * se, err - floor * 0.5), 2 * se], color=colors[method],
                    marker="o", markersize=4, mfc="none" if hollow else colors[method], capsize=2, lw=1,
                    label=method + (" (hook edits: evaluations saved, not time)" if hollow else ""))
    exact = summary[summary["rel_error"] <= 0]
    if len(exact):
        ax.scatter(exact[x], np.full(len(exact), floor), marker="v", s=30, color="0.3", zorder=4,
                   label="identical to uncached")
    front = summary[summary["pareto"]]
    ax.scatter(front[x], np.maximum(front["rel_error"].to_numpy(float), floor), s=90, facecolors="none",
               edgecolors="black", linewidths=0.8, label="Pareto front", zorder=3)
    ax.set_yscale("log")
    ax.set_xlabel("speed-up in block evaluations" if x == "speedup_blocks" else "speed-up in wall time")
    ax.set_ylabel("relative error of the final latents")
    ax.legend(fontsize="x-small", frameon=False)
    return ax


def fig_cache_eval(summary: pd.DataFrame, *, title: str = "") -> Figure:
    """The speed-up / error plane of ``dardiag cache-eval`` in one column."""
    with paper_style():
        fig = new_figure(ONE_COLUMN, 2.6)
        ax = fig.subplots()
        plot_cache_eval(summary, ax=ax)
        if title:
            ax.set_title(title, pad=3)
        no_ligatures(fig)
    return fig
