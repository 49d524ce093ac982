"""Rich renderings shared by commands (profile, demo): the symptom table and a progress bar."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import pandas as pd
from rich.console import Console
from rich.table import Table

from dardiag.summary import symptom_summary

console = Console(stderr=False)


def print_symptoms(df: pd.DataFrame, title: str = "Symptoms (noisiest and cleanest level)") -> None:
    s = symptom_summary(df)
    if s.empty:
        console.print("no per-level metrics in this table")
        return
    table = Table(title=title)
    cols = [("model", "model"), ("routing", "routing"), ("noise_level", "noise level"),
            ("act_growth", "act_rms last/first"), ("grad_decay", "grad_rms first/last"),
            ("mean_cos_prev", "mean cos(z_k-1, z_k)"), ("mean_adjacent_cka", "mean adjacent CKA"),
            ("loss", "loss")]
    cols = [(k, h) for k, h in cols if k in s.columns]
    for _, h in cols:
        table.add_column(h, justify="left" if h in ("model", "routing") else "right")
    for _, r in s.iterrows():
        cells = []
        for k, _ in cols:
            v = r[k]
            cells.append(v if isinstance(v, str) else f"{v:.3g}" if pd.notna(v) else "-")
        table.add_row(*cells)
    console.print(table)


@contextmanager
def progress_bar(total: int, enabled: bool | None = None):
    """Yields ``advance(desc)``; a rich bar on a terminal, silent otherwise."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda desc: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("profiling", total=total)
        yield lambda desc: bar.update(task, advance=1, description=desc)
