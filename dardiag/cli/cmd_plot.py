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
    from dardiag.cli.report import console
    from dardiag.cli.tables import print_first_lines
    from dardiag.analysis.sanity import NOTICES_ATTR

    df = _read(run)
    print_first_lines(console, notices=df.attrs.get(NOTICES_ATTR, ()))  # what says the model is broken
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
    runs: List[Path] = typer.Argument(..., help="run directories to put side by side (their order is the panels')"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="directory for the figures (default: the table only)"),
    baseline: Optional[str] = typer.Option(None, help="the model the others are compared with (default: the one "
                                           "residual model, else the first)"),
    nearest: bool = typer.Option(False, help="pair noise levels the runs do not share with the nearest one"),
    json_out: bool = typer.Option(False, "--json", help="print the comparison as JSON for scripts"),
    model: Optional[List[str]] = typer.Option(None, help="keep only these model names, in this order (repeat)"),
    routing: Optional[List[str]] = typer.Option(None, help="keep only these routings (repeat)"),
    force: bool = typer.Option(False, help="overwrite figures in a non-empty OUT"),
):
    """Every model against a baseline: where they differ beyond 2 combined standard errors, and figures
    with shared colour scales and a ratio panel per model (each / the baseline)."""
    import pandas as pd

    from dardiag.analysis.comparability import merge_runs
    from dardiag.analysis.sanity import sanity_notices
    from dardiag.analysis.summary import compare_runs

    frames = [_read(r) for r in runs]
    ids = [sorted(set(f["run_id"])) for f in frames]
    for i in range(len(runs)):
        for j in range(i):
            if ids[i] == ids[j]:
                raise DardiagError(f"{runs[j]} and {runs[i]} are the same run; give each run once")
    df = select_models(merge_runs(frames, [str(r) for r in runs]), model, routing)
    if out is not None:
        _check_out(out, force)
    order = [m for m in (model or pd.unique(df["model"])) if m in set(df["model"])]
    if baseline is not None and baseline not in order:
        raise DardiagError(f"no model named {baseline!r} to use as the baseline; models: {', '.join(order)}")
    why = f"one model after the filters ({order[0]}): nothing to compare" if len(order) < 2 else None
    if why is None:
        try:
            res = compare_runs(df, baseline=baseline, models=order, nearest=nearest)
        except DardiagError as e:
            if out is None:  # the table was all that was asked for
                raise
            why = f"{e}; figures only"  # each model's figures still show its own levels
    if why is not None:
        res = pd.DataFrame(columns=["model", "baseline", "metric"])
        res.attrs.update(warnings=[why], notices=[n.message for n in sanity_notices(df)],
                         baseline=baseline or order[0], models=order)
    order, baseline = res.attrs["models"], res.attrs["baseline"]
    if json_out:
        print(comparison_json(res))
    else:
        from dardiag.cli.report import console
        from dardiag.cli.tables import print_comparison_table

        print_comparison_table(console, res)
    if out is not None:
        from dardiag.cli.figures import write_figures

        write_figures(df[df["model"].isin(order)], out, models=order, baseline=baseline, to_stderr=json_out)


def comparison_json(res) -> str:
    """compare_runs' rows and attrs as JSON (NaN as null)."""
    import json
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v.item() if hasattr(v, "item") else v

    rows = [{k: clean(v) for k, v in r.items()} for r in res.to_dict(orient="records")]
    return json.dumps({**{k: clean(v) for k, v in res.attrs.items()}, "rows": rows}, indent=1)
