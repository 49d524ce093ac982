"""Routing maps: how much sublayer l draws on each source i, across noise levels.

DAR models store the learned weights (``route_alpha``); residual models the counterfactual gate
gradient (``route_importance``, signed), so residual and DAR can stand side by side.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, TwoSlopeNorm

from dardiag.plots import _data
from dardiag.plots.heatmap import flat_colorbar, level_ticks
from dardiag.plots.legible import flat_data
from dardiag.plots.labels import NOISE_LABEL, SOURCE_LABEL, metric_label
from dardiag.plots.theme import DIVERGING_CMAP, SEQUENTIAL_CMAP, colormap

ROUTING_METRICS = ("route_alpha", "route_importance")


def routing_metric(df: pd.DataFrame, model: str) -> str:
    """``route_alpha`` if the model has it (DAR), else ``route_importance`` (residual)."""
    have = set(df.loc[df["model"] == model, "metric"].unique())
    for m in ROUTING_METRICS:
        if m in have:
            return m
    raise ValueError(f"model {model!r} has neither route_alpha nor route_importance rows")


def routing_grid(df: pd.DataFrame, *, model: str, sublayer: int, metric: str) -> pd.DataFrame:
    """(noise level x source) grid of ``metric`` for ``model`` at ``sublayer``."""
    sub = _data.metric_rows(df, metric)
    sub = _data.latest_checkpoint(sub[sub["model"] == model])
    if sub.empty:
        raise ValueError(f"model {model!r} has no {metric!r} rows")
    have = sorted(int(s) for s in sub["sublayer"].dropna().unique())
    sub = sub[(sub["sublayer"] == sublayer) & sub["source"].notna() & sub["noise_level"].notna()]
    if sub.empty:
        raise ValueError(f"model {model!r} has no {metric!r} rows at sublayer {sublayer}; sublayers: {have}")
    _data.single_valued(sub, f"routing map of {model!r}", ignore=("sublayer", "source"))
    grid = _data.pivot(sub, index="noise_level", columns="source")
    grid.columns.name = "source"
    return grid


def routing_norm(values: np.ndarray, metric: str) -> Normalize:
    """Weights: sequential from 0. Importances (signed): diverging, symmetric about 0. All zero: a
    scale around 0 (drawn as zero, not stretched to a 1e-12 range)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if flat_data(v) == "zero":
        return Normalize(0.0, 1.0) if metric == "route_alpha" else TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0)
    if metric == "route_alpha" or (v.size and v.min() >= 0):
        return Normalize(0.0, max(float(v.max()) if v.size else 1.0, 1e-12))
    m = max(float(np.abs(v).max()) if v.size else 1.0, 1e-30)
    return TwoSlopeNorm(vcenter=0.0, vmin=-m, vmax=m)


def plot_routing_map(
    df: pd.DataFrame,
    *,
    model: str,
    sublayer: int,
    ax: Axes | None = None,
    metric: str | None = None,
    norm: Normalize | None = None,
    cmap=None,
    colorbar: bool = True,
    per_level: bool | None = None,
    depth: int | None = None,
) -> Axes:
    """Source (x, 0 = embedding) x noise level (y) map of how sublayer ``sublayer`` mixes its
    sources: ``route_alpha`` for DAR models, ``route_importance`` for residual ones (``metric=``
    forces one). The mesh is ``ax.collections[0]``.

    Sources are drawn as equal columns labelled with their index: a chunked DAR aggregator reads
    e.g. sources 0, 4, 8, 9, 10, and a numeric axis would stretch cells over the gaps.
    ``per_level`` (default: on for importances) divides each noise level's row by its largest
    magnitude: the gate gradients span decades across noise levels, and what the map should show is
    which sources a sublayer relies on *at* each level. Noise levels are rows of equal height. With
    the model's ``depth`` D the title says where the sublayer is (``l = 5 of 16``, or DAR's ``final
    aggregator (l = 17)``). A map that is all zero is drawn as zero and its colour bar says so.
    """
    ax = ax if ax is not None else plt.gca()
    metric = metric or routing_metric(df, model)
    grid = routing_grid(df, model=model, sublayer=sublayer, metric=metric)
    values = grid.to_numpy(dtype=float)
    per_level = metric == "route_importance" if per_level is None else per_level
    if per_level:
        scale = np.nanmax(np.abs(values), axis=1, keepdims=True)
        values = values / np.where(scale > 0, scale, 1.0)
    norm = norm if norm is not None else routing_norm(values, metric)
    cm = colormap(cmap or (SEQUENTIAL_CMAP if metric == "route_alpha" else DIVERGING_CMAP))
    sources = grid.columns.to_numpy(dtype=int)
    x = np.arange(len(sources), dtype=float)
    y = grid.index.to_numpy(dtype=float)
    ye = np.arange(len(y) + 1, dtype=float) - 0.5  # one row of equal height per level
    mesh = ax.pcolormesh(_data.edges(x), ye, np.ma.masked_invalid(values), norm=norm, cmap=cm, shading="flat")
    ax.set_ylim(ye[0], ye[-1])
    level_ticks(ax, y)
    step = max(1, int(np.ceil(len(sources) / 12)))  # at most ~12 labels stay legible in one column
    ax.set_xticks(x[::step], [str(s) for s in sources[::step]])
    ax.set_xlabel(SOURCE_LABEL)
    ax.set_ylabel(NOISE_LABEL)
    ax.set_title(sublayer_title(model, sublayer, depth, metric))
    if colorbar:
        label = metric_label(metric) + ("\n/ max per noise level" if per_level else "")  # two lines: fits a short panel
        cb = ax.figure.colorbar(mesh, ax=ax, label=label)
        if hasattr(cb.formatter, "set_powerlimits"):
            cb.formatter.set_powerlimits((-2, 3))  # gradients are tiny: use an offset exponent
        flat_colorbar(cb, values, metric_label(metric))
    return ax


def sublayer_title(model: str, sublayer: int, depth: int | None, metric: str) -> str:
    """``DAR, final aggregator (l = 17)`` for DAR's last aggregator, ``residual, sublayer l = 5 of 16``."""
    if depth is None:
        return f"{model}, sublayer l = {sublayer}"
    if sublayer == 2 * depth + 1 and metric == "route_alpha":
        return f"{model}, final aggregator (l = {sublayer})"
    return f"{model}, sublayer l = {sublayer} of {2 * depth}"
