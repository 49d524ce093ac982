"""Render every figure a table allows and report what was written or skipped."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd


def write_figures(df: pd.DataFrame, out_dir: Path, *, models=None, baseline=None, to_stderr: bool = False) -> None:
    """``models``: their order in the panels; ``baseline``: the ratio panels' denominator;
    ``to_stderr``: report there (stdout carries JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    from rich.console import Console

    from dardiag.cli.report import console
    from dardiag.plots.figures import render_all

    console = Console(stderr=True) if to_stderr else console
    results = render_all(df, out_dir, models=models, baseline=baseline)
    wrote = [r for r in results if not str(r[1]).startswith("skip")]
    console.print(f"figures: {len(wrote)} written to {out_dir}")
    skipped: dict[str, list[str]] = {}  # reason -> figures, so ten skips read as one line
    for name, what in results:
        if str(what).startswith("skip"):
            reason = str(what).split(":", 1)[-1].strip()
            why = re.match(r"no .+ rows: (.+)", reason)  # "no h_rms rows: does not apply, ..." -> why, shared
            skipped.setdefault(why.group(1) if why else reason, []).append(name)
    for reason, names in skipped.items():
        console.print(f"  [dim]skipped {', '.join(names)}: {reason}[/dim]")
