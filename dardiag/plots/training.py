"""Any metric against training step, from a series of checkpoints, with +-2 s.e. bands; and several
training runs side by side (their symptom summaries over step, one line per run)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from dardiag.plots import _data
from dardiag.plots.labels import STEP_LABEL, is_log, level_colorbar, level_label, line_legend_handles, metric_label
from dardiag.plots.symptoms import MAX_LINES, draw_lines, log_axis
from dardiag.plots.theme import TWO_COLUMN, model_colors, new_figure, paper_style
from dardiag.analysis.summary import symptom_summary


def plot_metric_vs_step(
    df: pd.DataFrame,
    metric: str,
    *,
    block: int | None = None,
    noise_level: float | None = None,
    ax: Axes | None = None,
    sublayer: int | None = None,
    other_block: int | None = None,
    source: int | None = None,
    site: str | None = None,
    legend: bool = True,
    log: bool | None = None,
) -> Axes:
    """``metric`` over training ``step``, one line per model (and per noise level, a light-to-dark
    ramp, when ``noise_level`` is None and several exist; at most 5 spread evenly), with +-2 s.e.
    bands where the rows carry a finite ``stderr``.

    Select the location with ``block`` (or ``sublayer`` / ``other_block`` / ``source`` / ``site``);
    ValueError if the rows still mix several locations.
    """
    ax = ax if ax is not None else plt.gca()
    colors = model_colors(df["model"].dropna().unique()) if "model" in df.columns else {}
    sub = _data.metric_rows(df, metric)
    if not _data.has(sub, "step"):
        raise ValueError(f"{metric!r} rows carry no training step")
    sub = sub[sub["step"].notna()]
    for col, want in (("block", block), ("sublayer", sublayer), ("other_block", other_block), ("source", source)):
        if want is not None:
            have = sorted(int(v) for v in sub[col].dropna().unique())
            sub = sub[sub[col] == want]
            if sub.empty:
                raise ValueError(f"{metric!r} has no rows at {col} {want}; {col}s: {have}")
    if site is not None:
        sub = sub[sub["site"] == site]
        if sub.empty:
            raise ValueError(f"{metric!r} has no rows at site {site!r}")
    _data.single_valued(sub, f"plot_metric_vs_step({metric!r})")

    available = _data.levels_of(sub)
    if noise_level is not None:
        sub = _data.select_level(sub, noise_level)
        levels = []
    else:
        levels = _data.spread(available, MAX_LINES) if len(available) > 1 else []
        if len(available) == 1:
            noise_level = available[0]

    use_log = (log if log is not None else is_log(metric)) and bool((sub["value"] > 0).all())
    drawn_models, drawn_levels, band = draw_lines(ax, sub, "step", colors, levels, log=use_log)

    if use_log:
        log_axis(ax)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(metric_label(metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))  # whole steps: no 12.5
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
    where = [f"{c} {v}" for c, v in (("block", block), ("sublayer", sublayer), ("other block", other_block), ("source", source)) if v is not None]
    if noise_level is not None:
        lvl = _data.nearest(available, [noise_level])[0] if available else noise_level
        where.append(f"noise {level_label(lvl)}")
    if where:
        ax.set_title(", ".join(where))
    if legend:
        ax.legend(handles=line_legend_handles(colors, drawn_models, drawn_levels, band=band, of=len(available)),
                  loc="best")
        for m in reversed(drawn_models) if len(drawn_levels) > 1 else []:  # each model's noise-level colour map
            level_colorbar(ax.figure, colors[m], drawn_levels, ax=ax, orientation="vertical",
                           label=f"noise level: {m}")
    return ax


# ============================================================================ several runs, one figure

# the symptom summaries (dardiag.summary.symptom_summary) drawn over training: column -> axis label
RUN_SYMPTOMS = {
    "act_growth": r"growth $z_D$ / $z_1$ (act RMS)",
    "grad_decay": r"decay $z_1$ / $z_D$ (grad RMS)",
    "mean_adjacent_cka": r"CKA$(z_{k-1}, z_k)$, mean",
    "loss": "loss (MSE)",
}
LOG_SYMPTOMS = ("act_growth", "grad_decay")  # ratios: DAR's and the residual model's differ by ~10x


def symptoms_by_step(df: pd.DataFrame) -> pd.DataFrame:
    """``symptom_summary`` at every noise level of every profiled step, per model (= training run):
    columns model, step, noise_level, act_growth(_se), grad_decay(_se), mean_adjacent_cka(_se), loss(_se)."""
    sub = df[df["step"].notna()] if "step" in df.columns else df.iloc[:0]
    if sub.empty:
        raise ValueError("the table has no rows with a training step (profile with --profile-every)")
    parts = [symptom_summary(g, levels="all").assign(step=int(step)) for step, g in sub.groupby("step")]
    return pd.concat(parts, ignore_index=True)


def plot_symptom_vs_step(summary: pd.DataFrame, symptom: str, *, noise_level: float | None = None,
                         ax: Axes | None = None, legend: bool = True) -> Axes:
    """One symptom summary (a ``RUN_SYMPTOMS`` column of :func:`symptoms_by_step`) over training step,
    one line per run with a +-2 s.e. band; at ``noise_level`` (default: the one nearest 0.5)."""
    ax = ax if ax is not None else plt.gca()
    if symptom not in summary.columns:
        raise ValueError(f"no {symptom!r} in the summary; have {', '.join(c for c in RUN_SYMPTOMS if c in summary.columns)}")
    levels = sorted(summary["noise_level"].unique())
    want = 0.5 if noise_level is None else noise_level
    level = _data.nearest(levels, [want])[0]
    rows = summary[summary["noise_level"] == level]
    colors = model_colors(summary["model"].unique())
    for model, g in rows.groupby("model", sort=True):
        g = g.sort_values("step")
        x, y = g["step"].to_numpy(float), g[symptom].to_numpy(float)
        ax.plot(x, y, color=colors[model], marker="o", markersize=3, label=model)
        se = g.get(f"{symptom}_se")
        if se is not None and se.notna().any():
            se = se.to_numpy(float)
            ax.fill_between(x, y - 2 * se, y + 2 * se, color=colors[model], alpha=0.2, linewidth=0)
    if symptom in LOG_SYMPTOMS and (rows[symptom] > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel(STEP_LABEL)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.set_ylabel(RUN_SYMPTOMS.get(symptom, symptom))
    ax.set_title(f"noise {level_label(level)}")
    if legend:
        ax.legend(loc="best")
    return ax


def fig_training_runs(df: pd.DataFrame, *, noise_level: float | None = None,
                      symptoms=tuple(RUN_SYMPTOMS)):
    """Several training runs side by side (concatenate their ``OUT/profile`` tables; each run is a
    model): one panel per symptom over training step, +-2 s.e. bands."""
    summary = symptoms_by_step(df)
    symptoms = [s for s in symptoms if s in summary.columns and summary[s].notna().any()]
    with paper_style():
        fig = new_figure(TWO_COLUMN, 2.3)
        axes = fig.subplots(1, len(symptoms), squeeze=False)[0]
        for i, (ax, s) in enumerate(zip(axes, symptoms)):
            plot_symptom_vs_step(summary, s, noise_level=noise_level, ax=ax, legend=i == 0)
    return fig
