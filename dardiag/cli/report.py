"""Rich renderings shared by commands (profile, demo): the symptom table and a progress bar."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import pandas as pd
from rich.console import Console

from dardiag.cli.tables import print_comparison_table, print_first_lines, print_probe_table, print_symptom_table
from dardiag.analysis.sanity import NOTICES_ATTR
from dardiag.analysis.summary import compare_runs

# Tables need ~130 columns; rich assumes 80 when stdout is not a terminal (CI logs, pipes).
console = Console(width=None if sys.stdout.isatty() else 140)


def print_symptoms(df: pd.DataFrame, title: str = "Symptoms (noisiest and cleanest level)") -> None:
    """The sanity notices first (df.attrs["dardiag_notices"]), then the symptom table (80 columns)."""
    print_first_lines(console, notices=df.attrs.get(NOTICES_ATTR, ()))
    print_symptom_table(console, df, title)


def print_comparison(df: pd.DataFrame, baseline: str | None = None) -> None:
    """Every model against the baseline (dardiag.summary.compare_runs); nothing for a single model. The
    notices are print_symptoms' (printed before it): here only how the models were measured unlike."""
    if df["model"].nunique() < 2:
        return
    res = compare_runs(df, baseline=baseline)
    print_first_lines(console, warnings=res.attrs["warnings"])
    print_comparison_table(console, res, first_lines=False)


def print_probe(df: pd.DataFrame) -> None:
    """Probe R^2 per model: raw x_t, then the block states (80 columns)."""
    print_probe_table(console, df)


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
