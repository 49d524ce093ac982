"""Paper figures (design §7, §9) composed from the Axes-level functions, and ``render_all``.

Each ``fig_*`` returns a :class:`matplotlib.figure.Figure` built in the paper style with constrained
layout; it is not registered with pyplot, never shown and never saved. When the table says what the
models looked at (an ``inputs`` column), a grey footer names it (design §10). :func:`grid_by_block`
is the seaborn figure-level view (rows = metrics, columns = models) and returns the ``FacetGrid``.
:func:`render_all` saves every figure the table's metrics allow and says why it skipped the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import Normalize
from matplotlib.ticker import MaxNLocator
from matplotlib.figure import Figure

from dardiag.errors import DardiagError
from dardiag.plots import _data
from dardiag.plots.ablation import ABLATION_METRICS, fig_ablation
from dardiag.plots.cache_map import CACHE_MAP_METRICS, fig_cache_map
from dardiag.plots.cka import cka_matrix, plot_cka_matrix
from dardiag.plots.heatmap import auto_norm, heatmap_grid, plot_heatmap, plot_ratio_heatmap, round_log_colorbar
from dardiag.plots.labels import (
    add_inputs_footer,
    is_log,
    level_label,
    line_legend_handles,
    metric_label,
)
from dardiag.plots.outliers import OUTLIER_METRICS, SPECTRUM_METRIC, plot_channel_spectrum, spectrum_rows
from dardiag.plots.probe import plot_probe_r2
from dardiag.plots.routing import ROUTING_METRICS, plot_routing_map, routing_metric
from dardiag.plots.symptoms import BAND_GID, MAX_LEVELS, draw_lines, log_axis, plot_metric_by_block
from dardiag.plots.theme import ONE_COLUMN, TWO_COLUMN, model_colors, new_figure, no_ligatures, paper_style, save
from dardiag.plots.training import plot_metric_vs_step

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


def _legend(
    fig: Figure, models: Sequence[str], colors: dict[str, str], levels: Sequence[float], band: bool = False
) -> None:
    fig.legend(handles=line_legend_handles(colors, models, levels, band=band), loc="outside right upper")


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
    return _data.spread(avail, MAX_LEVELS) if noise_levels is None else _data.nearest(avail, noise_levels)


def _dar_over_residual(df: pd.DataFrame, models: Sequence[str]) -> tuple[str, str]:
    """(numerator, denominator) for a two-model ratio: DAR / residual when the routing says so."""
    a, b = models
    if "routing" in df.columns:
        routing = df.groupby("model")["routing"].first()
        if routing.get(a) == "residual" and routing.get(b) != "residual":
            return b, a
        if routing.get(b) == "residual" and routing.get(a) != "residual":
            return a, b
    return b, a


# ============================================================================ §7.1 symptoms


def fig_symptoms(df: pd.DataFrame, noise_levels: Sequence[float] | None = None) -> Figure:
    """act_rms and grad_rms (log y) and cos_prev over block index, one line per model and noise level."""
    _data.check_frame(df)
    present = [m for m in SYMPTOM_METRICS if m in _metrics(df)]
    if not present:
        raise ValueError(f"none of {list(SYMPTOM_METRICS)} in the table")
    colors = model_colors(df["model"].dropna().unique())
    rows = df[df["metric"].isin(present)]
    with paper_style():
        fig = new_figure(TWO_COLUMN, 2.4)
        axes = fig.subplots(1, len(SYMPTOM_METRICS))
        for ax, metric in zip(axes, SYMPTOM_METRICS):
            if metric in present:
                plot_metric_by_block(df, metric, ax=ax, noise_levels=noise_levels, legend=False)
            else:
                _note(ax, f"{metric} not recorded")
        _legend(fig, sorted(rows["model"].unique()), colors, _levels_drawn(rows, noise_levels), _has_band(fig))
        _finish(fig, rows)
    return fig


# ============================================================================ §7.2 heatmaps


def fig_heatmaps(df: pd.DataFrame, metric: str, *, site: str | None = None) -> Figure:
    """Depth x noise-level maps of ``metric``, models side by side on ONE colour scale (log when the
    values span more than a decade), plus the DAR / residual ratio when there are two models, whose
    dots mark the cells where the models differ by more than 2 combined standard errors.

    Metrics recorded at several sites (the outlier metrics: z, h and v) are shown at site z unless
    ``site`` says otherwise."""
    sub = _data.latest_checkpoint(_data.metric_rows(df, metric))
    models = sorted(sub["model"].unique().tolist())
    grids = {}
    for m in models:
        try:
            grids[m] = heatmap_grid(sub, metric, m, site)
        except ValueError:
            continue  # e.g. this model has the metric only without a noise level
    if not grids:
        raise ValueError(f"{metric!r} has no rows with both a depth index and a noise level")
    models = list(grids)
    norm = auto_norm(np.concatenate([g.to_numpy().ravel() for g in grids.values()]))
    ratio = len(models) == 2
    n = len(models) + ratio
    with paper_style():
        fig = new_figure(TWO_COLUMN if n > 1 else ONE_COLUMN, 2.3)
        axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
        for i, (ax, m) in enumerate(zip(axes, models)):
            plot_heatmap(sub, metric, model=m, ax=ax, norm=norm, colorbar=False, site=site)
            if i:
                ax.set_ylabel("")
        mesh = axes[0].collections[0]
        round_log_colorbar(fig.colorbar(mesh, ax=list(axes[: len(models)]), label=metric_label(metric), shrink=0.95))
        if ratio:
            num, den = _dar_over_residual(sub, models)
            plot_ratio_heatmap(sub, metric, numerator=num, denominator=den, ax=axes[-1], site=site)
            axes[-1].set_ylabel("")
        _finish(fig, sub[sub["model"].isin(models)])
    return fig


# ============================================================================ §7.3 CKA


def fig_cka(df: pd.DataFrame, noise_levels: Sequence[float] | None = None) -> Figure:
    """CKA matrices: one row per model, one column per noise level (default: 3 spread levels), one
    shared colour scale."""
    sub = _data.latest_checkpoint(_data.metric_rows(df, "cka"))
    models = sorted(sub["model"].unique().tolist())
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


def fig_routing(df: pd.DataFrame, sublayers: Sequence[int] | None = None) -> Figure:
    """Routing maps at a shallow and a deep sublayer (rows), one column per model: residual models
    show the counterfactual importance, DAR models alpha. ``sublayers`` overrides the choice."""
    _data.check_frame(df)
    sub = _data.latest_checkpoint(df[df["metric"].isin(ROUTING_METRICS)])
    if sub.empty:
        raise ValueError(f"none of {list(ROUTING_METRICS)} in the table")
    models = sorted(sub["model"].unique().tolist())
    plan = {}
    for m in models:
        metric = routing_metric(sub, m)
        have = sub.loc[(sub["model"] == m) & (sub["metric"] == metric), "sublayer"].dropna().astype(int)
        if have.empty:
            continue
        plan[m] = (metric, list(sublayers) if sublayers is not None else _shallow_deep(have.tolist()))
    if not plan:
        raise ValueError("routing rows carry no sublayer index")
    nrow = max(len(s) for _, s in plan.values())
    ncol = len(plan)
    with paper_style():
        fig = new_figure(TWO_COLUMN if ncol > 1 else ONE_COLUMN, 0.3 + 2.0 * nrow)
        axes = fig.subplots(nrow, ncol, squeeze=False)
        for c, (m, (metric, sls)) in enumerate(plan.items()):
            for r in range(nrow):
                ax = axes[r, c]
                if r >= len(sls):
                    ax.set_axis_off()
                    continue
                try:
                    plot_routing_map(sub, model=m, sublayer=sls[r], metric=metric, ax=ax)
                except ValueError:
                    _note(ax, f"{m}: sublayer {sls[r]} not recorded")
                    continue
                if c:
                    ax.set_ylabel("")
        _finish(fig, sub[sub["model"].isin(list(plan))])
    return fig


# ============================================================================ §7.5 probe


def fig_probe(df: pd.DataFrame) -> Figure:
    """Probe R^2 per block (site z; per sublayer when only site h was probed), one column wide."""
    rows = _data.metric_rows(df, "probe_r2")
    site = "z" if (rows.get("site") == "z").any() else "h"
    with paper_style():
        fig = new_figure(ONE_COLUMN, 2.4)
        ax = fig.subplots()
        plot_probe_r2(df, ax=ax, site=site)
        _finish(fig, rows)
    return fig


# ============================================================================ §7.6 training


def fig_training(
    df: pd.DataFrame,
    metric: str,
    *,
    blocks: Sequence[int] | None = None,
    noise_level: float | None = None,
) -> Figure:
    """``metric`` against training step at a shallow, a middle and a deep block (or sublayer; one
    panel for metrics without depth, like loss), one line per model (and noise level)."""
    sub = _data.metric_rows(df, metric)
    sub = sub[sub["step"].notna()] if "step" in sub.columns else sub.iloc[:0]
    if sub["step"].nunique() < 2:
        raise ValueError(f"{metric!r} has fewer than two training steps; a series of checkpoints is needed")
    colors = model_colors(df["model"].dropna().unique())
    depth = "block" if _data.has(sub, "block") else "sublayer" if _data.has(sub, "sublayer") else None
    if depth is None:
        where: list[dict] = [{}]
    else:
        have = sorted(int(v) for v in sub[depth].dropna().unique())
        picks = list(blocks) if blocks is not None else _data.spread(have, 3)
        where = [{depth: int(p)} for p in picks]
    levels = [] if noise_level is not None else _levels_drawn(sub, None)
    with paper_style():
        fig = new_figure(TWO_COLUMN if len(where) > 1 else ONE_COLUMN, 2.2)
        axes = np.atleast_1d(fig.subplots(1, len(where), squeeze=False)[0])
        for i, (ax, sel) in enumerate(zip(axes, where)):
            plot_metric_vs_step(sub, metric, noise_level=noise_level, ax=ax, legend=False, **sel)
            if i:
                ax.set_ylabel("")
        _legend(fig, sorted(sub["model"].unique()), colors, levels, _has_band(fig))
        _finish(fig, sub)
    return fig


# ============================================================================ §9 outliers


def fig_channel_spectrum(
    df: pd.DataFrame, *, blocks: Sequence[int] | None = None, noise_level: float | None = None
) -> Figure:
    """Per-channel RMS spectra (sorted, log y), one panel per model on a shared y axis, at a
    shallow, a middle and the last block (``blocks`` overrides) and one noise level (default the
    middle one)."""
    rows = _data.metric_rows(df, SPECTRUM_METRIC)
    models, reasons = [], []
    for m in sorted(rows["model"].unique().tolist()):
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
    the metric is), one column per model, one line per noise level (the model's colour, darker =
    noisier) with +-2 s.e. bands. Returns the grid (its figure is pyplot's, as with any seaborn
    grid: ``plt.close(g.figure)`` when done); save it with :func:`save`."""
    _data.check_frame(df)
    present = [m for m in metrics if m in _metrics(df)]
    if not present:
        raise ValueError(f"none of {list(metrics)} in the table")
    colors = model_colors(df["model"].dropna().unique())
    rows = _data.latest_checkpoint(df[df["metric"].isin(present)])
    levels = _levels_drawn(rows, noise_levels)
    models = sorted(rows["model"].unique().tolist())
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
                ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        g.figure.set_layout_engine("constrained")  # room for the legend and the footer
        g.figure.legend(handles=line_legend_handles(colors, models, levels, band=any(bands)), loc="outside right upper")
        _finish(g.figure, rows)
    return g


# ============================================================================ everything


def render_all(df: pd.DataFrame, out_dir: str | Path) -> list[tuple[str, Path | str]]:
    """Render every figure the table's metrics allow to ``out_dir/{name}.pdf`` and ``.png``.

    Returns ``[(name, pdf_path | skip_reason)]``: a :class:`~pathlib.Path` (PNG beside it) for each
    rendered figure, a string starting with ``"skipped: "`` otherwise. A missing metric never
    raises; an empty table raises :class:`DardiagError`.
    """
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise DardiagError("the table holds no rows; nothing to plot")
    missing = [c for c in ("model", "metric", "value") if c not in df.columns]
    if missing:
        raise DardiagError(f"the table lacks column(s) {missing}; is it a dardiag profile?")
    df = _data.with_optional_columns(df)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    have = _metrics(df)
    multi_step = "step" in df.columns and df["step"].dropna().nunique() >= 2

    plan: list[tuple[str, Callable[[], Figure] | str]] = []

    def need(name: str, metrics: Sequence[str], build: Callable[[], Figure]) -> None:
        if any(m in have for m in metrics):
            plan.append((name, build))
        else:
            plan.append((name, f"skipped: no {' / '.join(metrics)} rows"))

    need("symptoms", SYMPTOM_METRICS, lambda: fig_symptoms(df))
    for metric in HEATMAP_METRICS:
        if metric in have and len(_data.levels_of(df[df["metric"] == metric])) < 2:
            plan.append((f"heatmap_{metric}", "skipped: fewer than two noise levels"))
        else:
            need(f"heatmap_{metric}", [metric], lambda metric=metric: fig_heatmaps(df, metric))
    need("cka", ["cka"], lambda: fig_cka(df))
    need("routing", ROUTING_METRICS, lambda: fig_routing(df))
    need("probe", ["probe_r2"], lambda: fig_probe(df))
    need("channel_spectrum", [SPECTRUM_METRIC], lambda: fig_channel_spectrum(df))
    need("cache_map", CACHE_MAP_METRICS, lambda: fig_cache_map(df))
    need("ablation", ABLATION_METRICS, lambda: fig_ablation(df))
    for metric in TRAINING_METRICS:
        if metric in have and not multi_step:
            plan.append((f"training_{metric}", "skipped: one checkpoint step only; needs a series"))
        else:
            need(f"training_{metric}", [metric], lambda metric=metric: fig_training(df, metric))

    results: list[tuple[str, Path | str]] = []
    for name, job in plan:
        if isinstance(job, str):
            results.append((name, job))
            continue
        try:
            fig = job()
        except ValueError as e:  # the rows do not support this figure: say why, render the rest
            results.append((name, f"skipped: {e}"))
            continue
        with paper_style():
            pdf, _ = save(fig, out_dir / name)
        results.append((name, pdf))
    return results
