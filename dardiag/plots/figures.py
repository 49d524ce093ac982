"""Paper figures (design §7, §9) composed from the Axes-level functions, and ``render_all``.

Each ``fig_*`` returns a :class:`matplotlib.figure.Figure` built in the paper style with constrained
layout; it is not registered with pyplot, never shown and never saved. When the table says what the
models looked at (an ``inputs`` column), a grey footer names it (design §10). :func:`grid_by_block`
is the seaborn figure-level view (rows = metrics, columns = models) and returns the ``FacetGrid``.
:func:`render_all` saves every figure the table's metrics allow and says why it skipped the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from dardiag.errors import DardiagError
from dardiag.plots import _data, depth
from dardiag.plots.ablation import ABLATION_METRICS, fig_ablation
from dardiag.plots.cache_map import CACHE_MAP_METRICS, fig_cache_map
from dardiag.plots.cka import cka_matrix, plot_cka_matrix
from dardiag.plots.depth import BATCH_SCALED, depth_locator
from dardiag.plots.heatmap import (
    auto_norm,
    flat_colorbar,
    heatmap_grid,
    plot_heatmap,
    plot_ratio_heatmap,
    ratio_colorbar,
    ratio_grid,
    ratio_grids,
    ratio_norm,
    round_log_colorbar,
)
from dardiag.plots.labels import (
    add_inputs_footer,
    is_log,
    level_colorbar,
    level_key,
    level_label,
    line_legend_handles,
    metric_label,
)
from dardiag.plots.legible import LegibleLayout
from dardiag.plots.outliers import OUTLIER_METRICS, SPECTRUM_METRIC, plot_channel_spectrum, spectrum_rows
from dardiag.plots.probe import plot_probe_r2
from dardiag.plots.routing import ROUTING_METRICS, plot_routing_map, routing_metric
from dardiag.plots.symptoms import BAND_GID, MAX_LINES, draw_lines, log_axis, plot_metric_by_block
from dardiag.plots.theme import ONE_COLUMN, TWO_COLUMN, model_colors, new_figure, no_ligatures, paper_style, save
from dardiag.plots.training import plot_metric_vs_step
from dardiag.store.registry import PROBE_MIN_PAIRS
from dardiag.analysis.summary import default_baseline

SYMPTOM_METRICS = ("act_rms", "grad_rms", "cos_prev")
HEATMAP_METRICS = ("act_rms", "grad_rms", "cos_prev", "h_rms", "v_rms", "route_entropy") + OUTLIER_METRICS
TRAINING_METRICS = ("act_rms", "grad_rms", "cos_prev", "loss")



def _note(ax, text: str) -> None:
    """Mark a panel that has nothing to show (instead of raising)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _metrics(df: pd.DataFrame) -> set[str]:
    return set(df["metric"].dropna().unique()) if "metric" in df.columns else set()


def _finish(fig: Figure, rows: pd.DataFrame) -> None:
    """What every figure gets last: the inputs footer (design §10) and plain glyphs (see no_ligatures)."""
    add_inputs_footer(fig, rows)
    no_ligatures(fig)


def _has_band(fig: Figure) -> bool:
    return any(c.get_gid() == BAND_GID for ax in fig.axes for c in ax.collections)


def _levels_drawn(rows: pd.DataFrame, noise_levels: Sequence[float] | None) -> list[float]:
    avail = _data.levels_of(rows)
    if not avail:
        return []
    return _data.spread(avail, MAX_LINES) if noise_levels is None else _data.nearest(avail, noise_levels)


def _order(df: pd.DataFrame, models: Sequence[str] | None = None) -> list[str]:
    """The models to draw, in order: ``models`` (those the rows have), else the table's order (first
    appearance: a run's models as profiled, merged runs as given)."""
    have = [str(m) for m in pd.unique(df["model"].dropna())]
    return have if models is None else [m for m in models if m in set(have)]


# ============================================================================ §7.1 symptoms

def fig_symptoms(df: pd.DataFrame, noise_levels: Sequence[float] | None = None,
                 models: Sequence[str] | None = None) -> Figure:
    """act_rms and grad_rms (log y) and cos_prev over block index, one line per model and noise level
    (each model its colour map, keyed by a colour bar per model); models of different depth over
    relative depth k / D. ``models``: which, in the legend's order (default: the table's)."""
    _data.check_frame(df)
    present = [m for m in SYMPTOM_METRICS if m in _metrics(df)]
    if not present:
        raise ValueError(f"none of {list(SYMPTOM_METRICS)} in the table")
    colors = model_colors(df["model"].dropna().unique())
    order = _order(df, models)
    rows = df[df["metric"].isin(present) & df["model"].isin(order)]
    latest = _data.latest_checkpoint(rows)
    rel = depth.depths_differ(latest[latest["block"].notna()]) if _data.has(latest, "block") else False
    with paper_style():
        fig = new_figure(TWO_COLUMN, 2.6)
        axes = list(fig.subplots(1, len(SYMPTOM_METRICS)))
        for ax, metric in zip(axes, SYMPTOM_METRICS):
            if metric in present:
                have = set(rows.loc[rows["metric"] == metric, "model"])
                plot_metric_by_block(df, metric, ax=ax, noise_levels=noise_levels, legend=False, relative=rel,
                                     models=[m for m in order if m in have])
            else:
                _note(ax, f"{metric} not recorded")
        level_key(fig, axes, order, colors, _levels_drawn(rows, noise_levels), band=_has_band(fig),
                  notes=depth.notes(latest), of=len(_data.levels_of(latest)))
        _finish(fig, rows)
    return fig


# ============================================================================ §7.2 heatmaps


def _row_height(n_levels: int) -> float:
    """Inches per row of heatmap panels: every level's row tall enough for its 7 pt label."""
    return max(2.3, 0.95 + 0.14 * n_levels)


def fig_heatmaps(df: pd.DataFrame, metric: str, *, site: str | None = None, models: Sequence[str] | None = None,
                 baseline: str | None = None) -> Figure:
    """Depth x noise-level maps of ``metric``, models side by side on ONE colour scale (log when the
    values span more than a decade), plus one ratio panel per model against ``baseline`` (default:
    the one residual model, else the first), on one diverging scale centred on 1 and fitted to the
    ratios; dots mark the cells where the two differ by more than 2 combined standard errors.

    ``models``: which, in the panels' order (default: the table's). Two models: one row (values,
    values, ratio); more: the values in one row and the ratios under them. Models of different
    depth: each value panel its own blocks (the title says D), the ratios at equal relative depth.
    Batch sizes that differ: B x grad_rms. Metrics recorded at several sites (the outlier metrics:
    z, h and v) are shown at site z unless ``site`` says otherwise."""
    sub = _data.latest_checkpoint(_data.metric_rows(df, metric))
    order = _order(sub, models)
    scaled = metric in BATCH_SCALED and depth.batches_differ(sub[sub["model"].isin(order)])
    shown = depth.times_batch(sub) if scaled else sub
    grids, errors = {}, {}
    for m in order:
        try:
            grids[m] = heatmap_grid(shown, metric, m, site)
            errors[m] = heatmap_grid(shown, metric, m, site, values="stderr")
        except ValueError:
            continue  # e.g. this model has the metric only without a noise level
    if not grids:
        raise ValueError(f"{metric!r} has no rows with both a depth index and a noise level")
    models = list(grids)
    baseline = baseline if baseline in grids else default_baseline(sub, models)
    others = [m for m in models if m != baseline] if len(models) > 1 else []
    norm = auto_norm(np.concatenate([g.to_numpy().ravel() for g in grids.values()]), metric,
                     np.concatenate([e.to_numpy().ravel() for e in errors.values()]))
    notes = depth.notes(sub[sub["model"].isin(models)], batch=metric in BATCH_SCALED)
    label = ("B x " if scaled else "") + metric_label(metric)
    ratios = {}
    for m in others:
        try:
            ratios[m] = ratio_grid(*ratio_grids(sub, metric, m, baseline, site)[:2])
        except ValueError:
            continue
    n, n_levels = len(models), max(len(g.index) for g in grids.values())
    with paper_style():
        if n <= 2:
            fig = new_figure(TWO_COLUMN if n > 1 else ONE_COLUMN, _row_height(n_levels))
            axes = list(np.atleast_1d(fig.subplots(1, n + len(ratios), squeeze=False)[0]))
            value_axes, ratio_axes = axes[:n], axes[n:]
        else:
            fig = new_figure(TWO_COLUMN, 2 * _row_height(n_levels))
            grid = fig.add_gridspec(2, n)
            value_axes = [fig.add_subplot(grid[0, i]) for i in range(n)]
            ratio_axes = [fig.add_subplot(grid[1, i]) for i in range(len(ratios))]
        for i, (ax, m) in enumerate(zip(value_axes, models)):
            plot_heatmap(shown, metric, model=m, ax=ax, norm=norm, colorbar=False, site=site)
            ax.set_title(f"{m} ({notes[m]})" if notes.get(m) else m)
            if i:
                ax.set_ylabel("")
        cb = fig.colorbar(value_axes[0].collections[0], ax=value_axes, label=label, shrink=0.95)
        round_log_colorbar(cb)
        flat_colorbar(cb, np.concatenate([g.to_numpy().ravel() for g in grids.values()]), label)
        if ratios:
            all_ratios = np.concatenate([r.to_numpy().ravel() for r in ratios.values()])
            rnorm = ratio_norm(all_ratios)
            for i, (ax, m) in enumerate(zip(ratio_axes, ratios)):
                plot_ratio_heatmap(sub, metric, numerator=m, denominator=baseline, ax=ax, site=site, norm=rnorm,
                                   colorbar=False)
                if i or n <= 2:
                    ax.set_ylabel("")
            ratio_colorbar(ratio_axes, ratio_axes[0].collections[0], f"ratio of {metric}", all_ratios)
        _finish(fig, sub[sub["model"].isin(models)])
    return fig


# ============================================================================ §7.3 CKA


def fig_cka(df: pd.DataFrame, noise_levels: Sequence[float] | None = None,
            models: Sequence[str] | None = None) -> Figure:
    """CKA matrices: one row per model (``models``: which, in order; default the table's), one column
    per noise level (default: 3 spread levels), one shared colour scale; titles give each model's
    depth where the depths differ."""
    sub = _data.latest_checkpoint(_data.metric_rows(df, "cka"))
    models = _order(sub, models)
    notes = depth.notes(sub, batch=False)
    avail = _data.levels_of(sub)
    if not avail:
        levels: list[float | None] = [None]
    elif noise_levels is None:
        levels = _data.spread(avail, 3)
    else:
        levels = _data.nearest(avail, noise_levels)
    mats = {}
    for m in models:
        for lvl in levels:
            try:
                mats[m, lvl] = cka_matrix(sub, model=m, noise_level=lvl)
            except ValueError:
                pass
    if not mats:
        raise ValueError("no cka matrix could be formed (rows need block and other_block)")
    vals = np.concatenate([v.to_numpy().ravel() for v in mats.values()])
    vals = vals[np.isfinite(vals)]
    norm = Normalize(min(0.0, float(vals.min())), max(1.0, float(vals.max())))
    ncol, nrow = len(levels), len(models)
    width = TWO_COLUMN if ncol > 1 else ONE_COLUMN
    height = min(9.0, nrow * (width / ncol) * 0.85 + 0.3)
    with paper_style():
        fig = new_figure(width, height)
        axes = fig.subplots(nrow, ncol, squeeze=False)
        for r, m in enumerate(models):
            for c, lvl in enumerate(levels):
                ax = axes[r, c]
                if (m, lvl) in mats:
                    plot_cka_matrix(sub, model=m, noise_level=lvl, ax=ax, norm=norm, colorbar=False)
                    if notes.get(m):
                        ax.set_title(ax.get_title().replace(m, f"{m} ({notes[m]})", 1))
                else:
                    _note(ax, f"{m}: no cka at noise {level_label(lvl)}")
                if c:
                    ax.set_ylabel("")
                if r < nrow - 1:
                    ax.set_xlabel("")
        mesh = next(ax.collections[0] for ax in axes.ravel() if ax.collections)
        fig.colorbar(mesh, ax=axes.ravel().tolist(), label=metric_label("cka"), shrink=0.9)
        _finish(fig, sub)
    return fig


# ============================================================================ §7.4 routing


def _shallow_deep(sublayers: Sequence[int]) -> list[int]:
    """A shallow (about a quarter deep, with at least two sources) and the deepest sublayer."""
    s = sorted(set(int(x) for x in sublayers))
    deep = s[-1]
    cands = [x for x in s if x >= 2] or s
    shallow = cands[min(len(cands) - 1, max(0, round(len(cands) / 4) - 1))]
    return [shallow] if shallow == deep else [shallow, deep]


def _routing_plan(sub: pd.DataFrame, models: Sequence[str], sublayers: Sequence[int] | None):
    """Per model: (metric, D, [sublayers]): a shallow sublayer at the same relative depth for every
    model, the last sublayer l = 2D, and DAR's final aggregator l = 2D + 1 where the model has one."""
    info = {}
    for m in models:
        metric = routing_metric(sub, m)
        at = sub.loc[(sub["model"] == m) & (sub["metric"] == metric), "sublayer"]
        have = sorted(at.dropna().astype(int).unique())
        if have:
            d = max(have) // 2  # residual: l <= 2D; DAR: up to its final aggregator 2D + 1
            info[m] = (metric, d, have)
    if not info:
        raise ValueError("routing rows carry no sublayer index")
    if sublayers is not None:
        return {m: (metric, d, list(sublayers)) for m, (metric, d, _) in info.items()}
    first_metric, first_d, first_have = next(iter(info.values()))
    frac = _shallow_deep([h for h in first_have if h <= 2 * first_d])[0] / (2 * first_d)
    plan = {}
    for m, (metric, d, have) in info.items():
        inner = [h for h in have if h <= 2 * d] or have
        shallow = min(inner, key=lambda h: (abs(h - frac * 2 * d), h))
        plan[m] = (metric, d, [shallow, max(inner)] + ([2 * d + 1] if 2 * d + 1 in have else []))
    return plan


def fig_routing(df: pd.DataFrame, sublayers: Sequence[int] | None = None,
                models: Sequence[str] | None = None) -> Figure:
    """Routing maps, one row per model (residual models: the counterfactual importance; DAR models:
    alpha): a shallow sublayer (the same relative depth for every model), the last sublayer l = 2D
    and, for DAR, its final aggregator l = 2D + 1 (a residual model has none: its row has two panels,
    as wide as the room allows). ``sublayers`` overrides the panels."""
    _data.check_frame(df)
    sub = _data.latest_checkpoint(df[df["metric"].isin(ROUTING_METRICS)])
    if sub.empty:
        raise ValueError(f"none of {list(ROUTING_METRICS)} in the table")
    plan = _routing_plan(sub, _order(sub, models), sublayers)
    widest = max(len(sls) for _, _, sls in plan.values())
    n_levels = len(_data.levels_of(sub))
    with paper_style():
        fig = new_figure(TWO_COLUMN if widest > 1 else ONE_COLUMN, 0.3 + len(plan) * max(2.0, 0.8 + 0.11 * n_levels))
        rows = fig.add_gridspec(len(plan), 1)
        for r, (m, (metric, d, sls)) in enumerate(plan.items()):
            row = rows[r].subgridspec(1, len(sls))  # a row's panels share its whole width
            for c, sl in enumerate(sls):
                ax = fig.add_subplot(row[0, c])
                try:
                    plot_routing_map(sub, model=m, sublayer=sl, metric=metric, ax=ax, depth=d)
                except ValueError:
                    _note(ax, f"{m}: sublayer {sl} not recorded")
                    continue
                if c:
                    ax.set_ylabel("")
        _finish(fig, sub[sub["model"].isin(list(plan))])
    return fig


# ============================================================================ §7.5 probe


def fig_probe(df: pd.DataFrame, models: Sequence[str] | None = None) -> Figure:
    """Probe R^2 per block (site z; per sublayer when only site h was probed), one column wide; y
    fitted to the data and x_t (spaced by 1 - R^2 near 1), models of different depth over k / D."""
    rows = _data.metric_rows(df, "probe_r2")
    site = "z" if (rows.get("site") == "z").any() else "h"
    with paper_style():
        fig = new_figure(ONE_COLUMN, 2.6)
        ax = fig.subplots()
        plot_probe_r2(df, ax=ax, site=site, models=_order(rows, models))
        _finish(fig, rows)
    return fig


# ============================================================================ §7.6 training


def _training_panels(sub: pd.DataFrame, where: str, blocks: Sequence[int] | None) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per panel: a shallow, a middle and a deep place. Models of one depth share the
    blocks; of different depths each model is taken at the same relative depth (its own block)."""
    depths = depth.model_depths(sub.assign(**{"block": sub[where]}) if where == "sublayer" else sub)
    if blocks is not None or len(set(depths.values())) <= 1:
        have = sorted(int(v) for v in sub[where].dropna().unique())
        picks = list(blocks) if blocks is not None else _data.spread(have, 3)
        return [(f"{where} {int(p)}", sub[sub[where] == p]) for p in picks]
    panels = []
    for frac in (0.0, 0.5, 1.0) if len(set(depths.values())) > 1 else ():
        parts, names = [], []
        for m, g in sub.groupby("model", sort=False):
            have = sorted(int(v) for v in g[where].dropna().unique())
            pick = min(have, key=lambda k: (abs(k - frac * max(have)), k))
            parts.append(g[g[where] == pick].assign(**{where: 0}))  # one common place: the panel's
            names.append(str(pick))
        panels.append((f"k/D = {frac:g}: {where} {' / '.join(names)}", pd.concat(parts)))
    return panels


def fig_training(
    df: pd.DataFrame,
    metric: str,
    *,
    blocks: Sequence[int] | None = None,
    noise_level: float | None = None,
    models: Sequence[str] | None = None,
) -> Figure:
    """``metric`` against training step at a shallow, a middle and a deep block (or sublayer; one
    panel for metrics without depth, like loss), one line per model (and noise level: each model's
    colour map, keyed by its colour bar). Models of different depth: the same relative depth."""
    sub = _data.metric_rows(df, metric)
    sub = sub[sub["step"].notna()] if "step" in sub.columns else sub.iloc[:0]
    if sub["step"].nunique() < 2:
        raise ValueError(f"{metric!r} has fewer than two training steps; a series of checkpoints is needed")
    colors = model_colors(df["model"].dropna().unique())
    order = _order(sub, models)
    sub = sub[sub["model"].isin(order)]
    where = "block" if _data.has(sub, "block") else "sublayer" if _data.has(sub, "sublayer") else None
    panels = [("", sub)] if where is None else _training_panels(sub, where, blocks)
    levels = [] if noise_level is not None else _levels_drawn(sub, None)
    with paper_style():
        fig = new_figure(TWO_COLUMN if len(panels) > 1 else ONE_COLUMN, 2.5)
        axes = list(np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0]))
        for i, (ax, (title, rows)) in enumerate(zip(axes, panels)):
            plot_metric_vs_step(rows, metric, noise_level=noise_level, ax=ax, legend=False)
            if title:
                ax.set_title(title + (f", {ax.get_title()}" if "noise" in ax.get_title() else ""))
            if i:
                ax.set_ylabel("")
        level_key(fig, axes, order, colors, levels, band=_has_band(fig), notes=depth.notes(sub),
                  of=len(_data.levels_of(sub)))
        _finish(fig, sub)
    return fig


# ============================================================================ §9 outliers


def fig_channel_spectrum(
    df: pd.DataFrame, *, blocks: Sequence[int] | None = None, noise_level: float | None = None,
    models: Sequence[str] | None = None,
) -> Figure:
    """Per-channel RMS spectra (sorted, log y), one panel per model on a shared y axis, at a
    shallow, a middle and the last block of each model (``blocks`` overrides) and one noise level
    (default the middle one); titles say each model's depth where the depths differ."""
    rows = _data.metric_rows(df, SPECTRUM_METRIC)
    notes = depth.notes(_data.latest_checkpoint(rows), batch=False)
    order, models, reasons = _order(rows, models), [], []
    for m in order:
        try:
            spectrum_rows(rows, model=m, noise_level=noise_level)
            models.append(m)
        except ValueError as e:
            reasons.append(str(e))
    if not models:
        raise ValueError(reasons[0] if len(set(reasons)) == 1 else "; ".join(reasons))
    n = len(models)
    with paper_style():
        fig = new_figure(TWO_COLUMN if n > 1 else ONE_COLUMN, 2.4)
        axes = np.atleast_1d(fig.subplots(1, n, squeeze=False, sharey=True)[0])
        for i, (ax, m) in enumerate(zip(axes, models)):
            plot_channel_spectrum(df, model=m, blocks=blocks, noise_level=noise_level, ax=ax)
            if notes.get(m):
                ax.set_title(ax.get_title().replace(m, f"{m} ({notes[m]})", 1))
            if i:
                ax.set_ylabel("")
        log_axis(axes[0], "y", np.concatenate([line.get_ydata() for ax in axes for line in ax.lines]))  # shared
        _finish(fig, rows[rows["model"].isin(models)])
    return fig


# ============================================================================ seaborn grid


def grid_by_block(
    df: pd.DataFrame,
    metrics: Sequence[str] = SYMPTOM_METRICS,
    *,
    noise_levels: Sequence[float] | None = None,
    height: float = 1.6,
    aspect: float = 1.3,
) -> sns.FacetGrid:
    """A ``seaborn.FacetGrid`` of metrics over depth: one row per metric (its own y scale, log where
    the metric is), one column per model, one line per noise level (the model's colour map, darker =
    noisier, keyed by a colour bar per model) with +-2 s.e. bands. Returns the grid (its figure is
    pyplot's, as with any seaborn grid: ``plt.close(g.figure)`` when done); save it with :func:`save`."""
    _data.check_frame(df)
    present = [m for m in metrics if m in _metrics(df)]
    if not present:
        raise ValueError(f"none of {list(metrics)} in the table")
    colors = model_colors(df["model"].dropna().unique())
    rows = _data.latest_checkpoint(df[df["metric"].isin(present)])
    levels = _levels_drawn(rows, noise_levels)
    models = _order(rows)
    depth = {m: _data.depth_column(rows[rows["metric"] == m]) for m in present}
    bands = []

    def draw(data: pd.DataFrame, **_) -> None:  # one facet: one metric of one model
        ax = plt.gca()
        metric = str(data["metric"].iloc[0])
        d = data[data[depth[metric]].notna()]
        avail = _data.levels_of(d)
        lv = _data.nearest(avail, levels) if levels and avail else []
        log = is_log(metric) and bool((d["value"] > 0).all())
        *_, band = draw_lines(ax, d, depth[metric], colors, lv, log=log)
        bands.append(band)
        if log:
            log_axis(ax)

    with paper_style(**{"figure.constrained_layout.use": False}):  # seaborn lays out with tight_layout
        g = sns.FacetGrid(rows, row="metric", row_order=present, col="model", col_order=models,
                          sharex=False, sharey="row", height=height, aspect=aspect, margin_titles=True)
        g.map_dataframe(draw)
        g.set_titles(row_template="", col_template="{col_name}")  # rows: the y labels say which metric
        for i, (metric, ax_row) in enumerate(zip(present, g.axes)):
            ax_row[0].set_ylabel(metric_label(metric))
            last = i == len(present) - 1
            label = "block k" if depth[metric] == "block" else "sublayer l"  # short: one per panel
            for ax in ax_row:  # the bottom row, and any row indexed unlike it, say what x is
                ax.set_xlabel(label if last or depth[metric] != depth[present[-1]] else "")
                ax.xaxis.set_major_locator(depth_locator())
        g.figure.set_layout_engine(LegibleLayout())  # room for the legend, the colour bars and the footer
        fig, renderer = g.figure, g.figure._get_renderer()
        plain = fig.legend(handles=line_legend_handles(colors, models, band=any(bands)), loc="outside right upper")
        wide = plain.get_window_extent(renderer).width
        plain.remove()
        legend = fig.legend(handles=line_legend_handles(colors, models, levels, band=any(bands),
                                                        of=len(_data.levels_of(rows))), loc="outside right upper")
        # the figure grows by what the levels entry adds to the legend, so the panels keep their width
        fig.set_figwidth(fig.get_figwidth() + (legend.get_window_extent(renderer).width - wide) / fig.dpi)
        for m in reversed(models) if len(levels) > 1 else []:  # each model's noise-level colour map
            level_colorbar(g.figure, colors[m], levels, ax=list(g.axes.ravel()), orientation="vertical",
                           label=f"noise level: {m}")
        _finish(g.figure, rows)
    return g


# ============================================================================ everything


@dataclass(frozen=True)
class FigureSpec:
    """One figure :func:`render_all` writes: its file name, the metrics it needs (any one of them), what
    else the table must hold (``"levels"``: two noise levels; ``"steps"``: a series of checkpoints), and
    ``build(df, models, baseline) -> Figure``."""

    name: str
    metrics: tuple[str, ...]
    build: Callable[[pd.DataFrame, list[str], str | None], Figure]
    needs: str | None = None


def _registry() -> list[FigureSpec]:
    specs = [FigureSpec("symptoms", SYMPTOM_METRICS, lambda d, ms, b: fig_symptoms(d, models=ms))]
    specs += [FigureSpec(f"heatmap_{m}", (m,), lambda d, ms, b, m=m: fig_heatmaps(d, m, models=ms, baseline=b),
                         needs="levels") for m in HEATMAP_METRICS]
    specs += [
        FigureSpec("cka", ("cka",), lambda d, ms, b: fig_cka(d, models=ms)),
        FigureSpec("routing", ROUTING_METRICS, lambda d, ms, b: fig_routing(d, models=ms)),
        FigureSpec("probe", ("probe_r2",), lambda d, ms, b: fig_probe(d, models=ms)),
        FigureSpec("channel_spectrum", (SPECTRUM_METRIC,), lambda d, ms, b: fig_channel_spectrum(d, models=ms)),
        FigureSpec("cache_map", CACHE_MAP_METRICS, lambda d, ms, b: fig_cache_map(d)),
        FigureSpec("ablation", ABLATION_METRICS, lambda d, ms, b: fig_ablation(d)),
    ]
    specs += [FigureSpec(f"training_{m}", (m,), lambda d, ms, b, m=m: fig_training(d, m, models=ms), needs="steps")
              for m in TRAINING_METRICS]
    return specs


FIGURES: tuple[FigureSpec, ...] = tuple(_registry())  # every figure render_all writes, in order

# why a metric can be missing: the analysis that records it ("--no-x" turns it off, "--x" turns it on)
ANALYSIS_FLAGS = {
    **dict.fromkeys(("h_rms", "v_rms"), ("sublayers", "--no-sublayers")),
    **dict.fromkeys(ROUTING_METRICS + ("route_entropy",), ("routes", "--no-routes")),
    "cka": ("cka", "--no-cka"),
    "probe_r2": ("probe", "--no-probe"),
    **dict.fromkeys(OUTLIER_METRICS, ("outliers", "--no-outliers")),
    SPECTRUM_METRIC: ("channel_maps", "--channel-maps"),
    **dict.fromkeys(CACHE_MAP_METRICS, ("trajectory", "--trajectory")),
    **dict.fromkeys(ABLATION_METRICS, ("ablation", "--ablation")),
}
SUBLAYER_SITES = ("h_rms", "v_rms", "route_importance")  # recorded at sublayer sites (DAR's alpha: its own)
DAR_ONLY = {"route_alpha", "route_entropy"}


def missing_reason(df: pd.DataFrame, metrics: Sequence[str]) -> str:
    """Why the table has none of ``metrics``: the analysis was off (and the flag that turns it on), or the
    models have no sites where it is measured; else only that the rows are missing."""
    text = f"no {' / '.join(metrics)} rows"
    analyses = ((df.attrs.get("dardiag") or {}).get("settings") or {}).get("analyses") or {}
    field, flag = ANALYSIS_FLAGS.get(metrics[0], (None, None))
    if field is not None:
        on = analyses.get(field)
        if flag.startswith("--no-") and on is False:
            return f"{text}: profiled with {flag}"
        if not flag.startswith("--no-") and not on:
            return f"{text}: profile with {flag}"
    if "probe_r2" in metrics and "n_samples" in df.columns and df["n_samples"].max() < PROBE_MIN_PAIRS:
        return (f"{text}: the timestep probe needs {PROBE_MIN_PAIRS} or more images per level, the run has "
                f"{int(df['n_samples'].max())}")
    if set(metrics) <= DAR_ONLY and "routing" in df.columns and (df["routing"].dropna() == "residual").all():
        return f"{text}: does not apply, no DAR model (routing weights exist only in DAR)"
    if any(m in SUBLAYER_SITES for m in metrics) and _data.has(df, "block") and not _data.has(df, "sublayer"):
        return (f"{text}: does not apply, the models are recorded per block only (no sublayer sites: "
                f"diffusers and generic transformers)")
    return text


def render_all(df: pd.DataFrame, out_dir: str | Path, *, models: Sequence[str] | None = None,
               baseline: str | None = None) -> list[tuple[str, Path | str]]:
    """Render every figure the table's metrics allow (:data:`FIGURES`) to ``out_dir/{name}.pdf`` and
    ``.png``. ``models``: which models, in the panels' order (default: the table's order); ``baseline``:
    the denominator of the heatmaps' ratio panels (default: the one residual model, else the first).

    Returns ``[(name, pdf_path | skip_reason)]``: a :class:`~pathlib.Path` (PNG beside it) for each
    rendered figure, a string starting with ``"skipped: "`` that says why otherwise. A missing metric
    never raises; an empty table raises :class:`DardiagError`.
    """
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise DardiagError("the table holds no rows; nothing to plot")
    missing = [c for c in ("model", "metric", "value") if c not in df.columns]
    if missing:
        raise DardiagError(f"the table lacks column(s) {missing}; is it a dardiag profile?")
    df = _data.with_optional_columns(df)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if models is not None:
        df = df[df["model"].isin(list(models))]
    have = _metrics(df)
    multi_step = "step" in df.columns and df["step"].dropna().nunique() >= 2
    order = _order(df, models)

    results: list[tuple[str, Path | str]] = []
    for spec in FIGURES:
        if not any(m in have for m in spec.metrics):
            results.append((spec.name, f"skipped: {missing_reason(df, spec.metrics)}"))
            continue
        if spec.needs == "levels" and len(_data.levels_of(df[df["metric"].isin(spec.metrics)])) < 2:
            results.append((spec.name, "skipped: fewer than two noise levels"))
            continue
        if spec.needs == "steps" and not multi_step:
            results.append((spec.name, "skipped: one checkpoint step only; needs a series"))
            continue
        try:
            fig = spec.build(df, order, baseline)
        except ValueError as e:  # the rows do not support this figure: say why, render the rest
            results.append((spec.name, f"skipped: {e}"))
            continue
        with paper_style():
            pdf, _ = save(fig, out_dir / spec.name)
        results.append((spec.name, pdf))
    return results
