"""A models x metrics grid of map panels with one colour bar per metric column (cache_map, ablation)."""

from __future__ import annotations

from typing import Callable, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dardiag.plots.heatmap import round_log_colorbar
from dardiag.plots.labels import metric_label


def model_metric_grid(fig: Figure, axes, models: Sequence[str], metrics: Sequence[str],
                      draw: Callable[[Axes, str, str], bool], **colorbar) -> None:
    """Row r = models[r], column c = metrics[c]: ``draw(ax, model, metric)`` fills a panel (False: nothing
    to draw, the panel is hidden); inner axis labels are dropped; each column gets one colour bar
    (``colorbar`` keywords go to ``fig.colorbar``)."""
    for c, metric in enumerate(metrics):
        for r, m in enumerate(models):
            ax = axes[r, c]
            if not draw(ax, m, metric):
                ax.set_axis_off()
                continue
            if r < len(models) - 1:
                ax.set_xlabel("")
            if c:
                ax.set_ylabel("")
        mesh = next((axes[r, c].collections[0] for r in range(len(models)) if axes[r, c].collections), None)
        if mesh is not None:
            round_log_colorbar(fig.colorbar(mesh, ax=list(axes[:, c]), label=metric_label(metric), **colorbar))
