"""``dardiag plot RUN`` and ``dardiag compare RUN [RUN ...]``: figures from stored tables only."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dardiag.cli.app import command
from dardiag.errors import DardiagError


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DardiagError(f"{out} exists and is not a directory; choose a directory for --out")
    from dardiag.runs import RUN_FILE

    if (out / RUN_FILE).exists():  # PDFs beside the parquet parts would break pandas.read_parquet(RUN)
        raise DardiagError(f"{out} is a run directory; its figures belong in {out / '_figures'} (the default "
                           "of dardiag plot), or choose another --out")
    if out.exists() and any(out.iterdir()) and not force:
        raise DardiagError(f"{out} is not empty; pass --force to overwrite figures there")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DardiagError(f"cannot create {out}: {e.strerror or e}; choose a writable directory for --out") from None


@command("plot")
def plot_cmd(
    run: Path = typer.Argument(..., help="a run directory written by dardiag profile/demo/train"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="directory for the PDF and PNG figures "
                                       "(default: RUN/_figures, replaced)"),
    force: bool = typer.Option(False, help="overwrite figures in a non-empty OUT"),
):
    """Render every figure the run's metrics allow (others are skipped with a note)."""
    from dardiag.cli.figures import write_figures

    df = _read(run)
    if out is None:  # the run's own figure folder, as profile writes it: re-rendering it loses nothing
        out, force = run / "_figures", True
    _check_out(out, force)
    write_figures(df, out)


def _read(run: Path):
    """The run's table; an unfinished run is drawn too, with a warning (its figures are partial)."""
    import warnings

    from dardiag.runs import read_profile

    df = read_profile(run)
    if df.attrs.get("dardiag_status") not in (None, "complete"):
        warnings.warn(f"{run} is an unfinished run: the figures show only its finished units; run its "
                      "command again to complete it")
    return df


def select_models(df, models: list[str] | None, routings: list[str] | None):
    if models:
        unknown = sorted(set(models) - set(df["model"]))
        if unknown:
            raise DardiagError(f"no model named {', '.join(unknown)}; the runs hold: {', '.join(sorted(set(df['model'])))}")
        df = df[df["model"].isin(models)]
    if routings:
        df = df[df["routing"].isin(routings)]
        if df.empty:
            raise DardiagError(f"no rows with routing {', '.join(routings)}")
    return df


@command("compare")
def compare_cmd(
    runs: List[Path] = typer.Argument(..., help="run directories to put side by side"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the figures"),
    model: Optional[List[str]] = typer.Option(None, help="keep only these model names (repeat)"),
    routing: Optional[List[str]] = typer.Option(None, help="keep only these routings (repeat)"),
    force: bool = typer.Option(False, help="overwrite figures in a non-empty OUT"),
):
    """Models from several runs side by side, with shared colour scales and ratio panels."""
    import pandas as pd

    from dardiag.cli.figures import write_figures

    frames = [_read(r) for r in runs]
    ids = [sorted(set(f["run_id"])) for f in frames]
    for i in range(len(runs)):
        for j in range(i):
            if ids[i] == ids[j]:
                raise DardiagError(f"{runs[j]} and {runs[i]} are the same run; give each run once")
    names = [set(f["model"]) for f in frames]
    for i, f in enumerate(frames):  # the same model name in two runs: tell them apart by run
        clash = names[i] & set().union(*(n for j, n in enumerate(names) if j != i))
        if clash:
            frames[i] = f.assign(model=f["model"].where(~f["model"].isin(clash), f["model"] + f" ({Path(runs[i]).name})"))
    df = select_models(pd.concat(frames, ignore_index=True), model, routing)
    _check_out(out, force)
    from dardiag.cli.report import print_comparison

    print_comparison(df)
    write_figures(df, out)
