"""Rich renderings shared by commands (profile, demo): the symptom table and a progress bar."""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager

import pandas as pd
from rich.console import Console
from rich.table import Table

from dardiag.summary import symptom_summary

# Tables need ~130 columns; rich assumes 80 when stdout is not a terminal (CI logs, pipes).
console = Console(width=None if sys.stdout.isatty() else 140)


def _pm(value, se) -> str:
    """``1.61 ± 0.02``: the error to 1 significant digit, the value to the same decimal place."""
    if value is None or pd.isna(value):
        return "-"
    if se is None or pd.isna(se) or se <= 0:
        return f"{value:.3g}"
    digits = max(0, -int(math.floor(math.log10(se))))
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def print_symptoms(df: pd.DataFrame, title: str = "Symptoms (noisiest and cleanest level)") -> None:
    s = symptom_summary(df)
    if s.empty:
        console.print("no per-level metrics in this table")
        return
    table = Table(title=title, caption="growth = act_rms(z_D) / act_rms(z_1); decay = grad_rms(z_1) / "
                  "grad_rms(z_D); cos and CKA: mean over adjacent blocks; top-1% ch.: share of the last "
                  "block's energy in its top 1% channels; ± 1 standard error (ratios and means of blocks: "
                  "conservative); noise level 1 = pure noise")
    cols = [("model", "model"), ("noise_level", "noise"), ("act_growth", "act growth"),
            ("grad_decay", "grad decay"), ("mean_cos_prev", "adj. cos"), ("mean_adjacent_cka", "adj. CKA"),
            ("last_channel_top_share", "top-1% ch."), ("loss", "loss")]
    cols = [(k, h) for k, h in cols if k in s.columns]
    for _, h in cols:
        table.add_column(h, justify="left" if h == "model" else "right")
    for _, r in s.iterrows():
        cells = []
        for k, _ in cols:
            v = r[k]
            cells.append(v if isinstance(v, str) else f"{v:.2g}" if k == "noise_level" else _pm(v, r.get(k + "_se")))
        table.add_row(*cells)
    console.print(table)
    if "inputs" in s.columns:
        for kind in s["inputs"].dropna().unique():
            console.print(f"[dim]inputs: {kind}[/dim]")


def print_comparison(df: pd.DataFrame, metrics=("act_rms", "grad_rms", "cos_prev", "cka")) -> None:
    """For two models: in how many cells each metric differs by more than 2 combined standard errors."""
    from dardiag.summary import compare_models

    if df["model"].nunique() != 2:
        return
    table = Table(title="Where the two models differ beyond 2 combined standard errors",
                  caption="cells: noise level x block (CKA: adjacent blocks); z = difference / combined s.e.")
    for h in ("metric", "b vs a", "cells beyond 2 s.e.", "median |z|"):
        table.add_column(h, justify="left" if h in ("metric", "b vs a") else "right")
    for metric in metrics:
        try:
            c = compare_models(df, metric)
        except ValueError:
            continue
        if metric == "cka":
            c = c[c["other_block"].astype(float) == c["block"].astype(float) - 1]  # adjacent blocks
        if c.empty:  # e.g. two runs on different noise levels: no cell to compare
            continue
        known = c["diff_se"].notna()
        table.add_row(metric, f"{c['model_b'].iloc[0]} vs {c['model_a'].iloc[0]}",
                      f"{int(c['significant'].sum())} of {int(known.sum())}",
                      f"{c.loc[known, 'z'].abs().median():.1f}" if known.any() else "-")
    if table.row_count:
        console.print(table)


def print_probe(df: pd.DataFrame, max_blocks: int = 8) -> None:
    """Probe R^2 per model: raw x_t, then z_0 .. z_{max_blocks - 1} and the last block."""
    from dardiag.summary import probe_summary

    p = probe_summary(df)
    if p.empty:
        return
    blocks = sorted((c for c in p.columns if c != "x_t"), key=lambda c: int(c.split("_")[1]))
    shown = blocks[:max_blocks] + ([blocks[-1]] if len(blocks) > max_blocks else [])
    table = Table(title="Timestep probe: held-out R^2 of a ridge fit of the noise level")
    table.add_column("model")
    for c in ["x_t"] + shown:
        table.add_column(c, justify="right")
    for model, r in p.iterrows():
        table.add_row(str(model), *[f"{r[c]:.3f}" if pd.notna(r.get(c)) else "-" for c in ["x_t"] + shown])
    console.print(table)


@contextmanager
def progress_bar(total: int | None, enabled: bool | None = None, label: str = "profiling"):
    """Yields ``update(desc=None, *, completed=None, total=None)``: one step more (with a new
    description), or the count so far; a rich bar on a terminal (stderr), silent otherwise."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda desc=None, **kw: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)

        def update(desc: str | None = None, *, completed: int | None = None, total: int | None = None) -> None:
            step = {"advance": 1} if completed is None else {"completed": completed}
            bar.update(task, **step, **({"description": desc} if desc else {}), **({"total": total} if total else {}))

        yield update
