"""``dardiag calibrate RUN --method M``: a caching method's configuration for this model, from a trajectory run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dardiag.cli.app import command
from dardiag.errors import DardiagError


@command("calibrate")
def calibrate_cmd(
    run: Path = typer.Argument(..., help="a profile run made with --trajectory on a diffusers pipeline"),
    method: str = typer.Option(..., help="magcache, firstblock, teacache, taylorseer, pab or fastercache"),
    steps: Optional[int] = typer.Option(None, help="magcache: resample the ratios to this many steps "
                                        "(default: the run's)"),
    computed: Optional[int] = typer.Option(None, help="firstblock / teacache: steps to compute in full "
                                           "(default: half the run's)"),
    branch: Optional[str] = typer.Option(None, help="guidance branch: cond (default) or uncond"),
    model: Optional[str] = typer.Option(None, help="which model of the run (needed when it holds several)"),
    degree: int = typer.Option(4, help="teacache: the polynomial's degree"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (config, stderr, branch, source) only"),
    out: Optional[Path] = typer.Option(None, help="where to write the JSON (default: RUN/_calibration/METHOD-BRANCH.json)"),
    force: bool = typer.Option(False, help="replace --out if it exists"),
):
    """Calibrate a caching method (MagCache, FirstBlockCache, TeaCache, ...) on a pipeline's trajectory run."""
    from dardiag.atomic import atomic_write
    from dardiag.savings.calibrate import calibrate, python_line
    from dardiag.runs import read_profile
    from dardiag.runs.layout import CALIBRATION_DIRNAME

    df = read_profile(run)
    result = calibrate(df, method, model=model, branch=branch, steps=steps, computed=computed, degree=degree)
    target = out or run / CALIBRATION_DIRNAME / f"{method}-{result['branch'] or 'all'}.json"
    if target.exists() and not force and out is not None:
        raise DardiagError(f"{target} already exists; pass --force to replace it, or choose another --out")
    text = json.dumps(result, indent=1, allow_nan=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda f: f.write(text.encode()), overwrite=True)
    if as_json:
        print(json.dumps(result, allow_nan=False))
        return
    src = result["source"]
    print(f"{method} for {src['model']} ({src['pipeline']}, {src['steps']} steps, {src['samples']} prompts, "
          f"branch {result['branch']}):")
    print(python_line(result))
    for note in result.get("notes", []):
        print(f"  {note}")
    if "r2" in result:
        held = "n/a" if result["r2_held_out"] is None else f"{result['r2_held_out']:.3f}"
        print(f"  R^2 {result['r2']:.3f}, held-out R^2 {held} ({result['folds']} prompt folds)")
    print(f"written to {target}")

