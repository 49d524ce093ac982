"""Plots of the long-form dardiag table (never imports torch).

Axes-level functions ``plot_x(df, *, ax=None, **kw) -> Axes`` draw one view and return the Axes;
they never show or save. The ``fig_*`` builders compose them into the paper's figures (design §7,
§9) and :func:`render_all` saves every figure a table allows. :func:`grid_by_block` is the seaborn
figure-level view and returns its ``FacetGrid``. Save a figure or a grid with :func:`save`.

Every number is drawn with its uncertainty (design §8): lines carry +-2 s.e. bands, the probe error
bars, and ratio maps mark the cells where two models differ by more than 2 combined standard errors.
The paper look lives in :mod:`dardiag.plots.theme`.
"""

from dardiag.plots.ablation import fig_ablation
from dardiag.plots.cache_map import fig_cache_map, plot_cache_map
from dardiag.plots.cka import plot_cka_matrix
from dardiag.plots.figures import (
    fig_channel_spectrum,
    fig_cka,
    fig_heatmaps,
    fig_probe,
    fig_routing,
    fig_symptoms,
    fig_training,
    grid_by_block,
    render_all,
)
from dardiag.plots.heatmap import plot_heatmap, plot_ratio_heatmap
from dardiag.plots.outliers import plot_channel_spectrum
from dardiag.plots.pareto import fig_cache_eval, plot_cache_eval
from dardiag.plots.probe import plot_probe_r2
from dardiag.plots.routing import plot_routing_map
from dardiag.plots.symptoms import plot_metric_by_block
from dardiag.plots.theme import ONE_COLUMN, TWO_COLUMN, model_colors, paper_style, save
from dardiag.plots.training import fig_training_runs, plot_metric_vs_step, plot_symptom_vs_step, symptoms_by_step

__all__ = [
    "plot_metric_by_block",
    "plot_heatmap",
    "plot_ratio_heatmap",
    "plot_cka_matrix",
    "plot_routing_map",
    "plot_probe_r2",
    "plot_metric_vs_step",
    "plot_symptom_vs_step",
    "symptoms_by_step",
    "fig_training_runs",
    "plot_channel_spectrum",
    "plot_cache_map",
    "fig_symptoms",
    "fig_heatmaps",
    "fig_cka",
    "fig_routing",
    "fig_probe",
    "fig_training",
    "fig_channel_spectrum",
    "fig_cache_map",
    "fig_ablation",
    "plot_cache_eval",
    "fig_cache_eval",
    "grid_by_block",
    "render_all",
    "paper_style",
    "save",
    "model_colors",
    "ONE_COLUMN",
    "TWO_COLUMN",
]
