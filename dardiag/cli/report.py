"""Rich renderings shared by commands (profile, demo): the symptom table and a progress bar."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import pandas as pd
from rich.console import Console
from rich.table import Table

from dardiag.summary import symptom_summary

# Tables need ~110 columns; rich assumes 80 when stdout is not a terminal (CI logs, pipes).
console = Console(width=None if sys.stdout.isatty() else 120)


def print_symptoms(df: pd.DataFrame, title: str = "Symptoms (noisiest and cleanest level)") -> None:
    s = symptom_summary(df)
    if s.empty:
        console.print("no per-level metrics in this table")
        return
    table = Table(title=title, caption="growth = act_rms(z_D) / act_rms(z_1); decay = grad_rms(z_1) / "
                  "grad_rms(z_D); cos and CKA: mean over adjacent blocks; noise level 1 = pure noise")
    cols = [("model", "model"), ("routing", "routing"), ("noise_level", "noise"),
            ("act_growth", "act growth"), ("grad_decay", "grad decay"),
            ("mean_cos_prev", "adj. cos"), ("mean_adjacent_cka", "adj. CKA"), ("loss", "loss")]
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
