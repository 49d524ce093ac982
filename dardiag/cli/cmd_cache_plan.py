"""``dardiag cache-plan RUN --tolerance TAU``: which (block, step) cells may reuse their previous output,
what that saves, and what applying it does to the samples (measured, not predicted)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dardiag.cli.app import command
from dardiag.errors import DardiagError


@command("cache-plan")
def cache_plan_cmd(
    run: Path = typer.Argument(..., help="a profile run made with --trajectory"),
    tolerance: float = typer.Option(..., "--tolerance", help="reuse cells whose cache_error is below this"),
    model: Optional[str] = typer.Option(None, help="which model of the run (needed when it holds several)"),
    checkpoint: Optional[Path] = typer.Option(None, help="the model's checkpoint (default: the path the run read)"),
    samples: Optional[int] = typer.Option(None, help="samples drawn uncached and cached to measure the effect "
                                          "(default: 360 images; a pipeline: one per prompt of the run)"),
    seed: int = typer.Option(0, help="the samplers' start noise (the same for both)"),
    out: Optional[Path] = typer.Option(None, help="write the schedule (JSON) for `dardiag sample --cache-schedule`"),
    force: bool = typer.Option(False, help="replace --out if it exists"),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
):
    """Plan a sampler cache from a trajectory run and measure it end to end."""
    import torch

    from dardiag.savings.plan import evaluate_schedule, open_model_of, plan_schedule
    from dardiag.cli.savings import print_cache_plan
    from dardiag.engine.devices import resolve_device
    from dardiag.models.config import DiTConfig
    from dardiag.runs import read_profile
    from dardiag.train.memory import check_sampling_fits

    if threads is not None:
        if threads < 1:
            raise DardiagError("--threads must be at least 1")
        torch.set_num_threads(threads)
    if out is not None and out.exists() and not force:
        raise DardiagError(f"{out} already exists; pass --force to replace it, or choose another --out")
    if out is not None:  # before the measurement, which takes minutes
        from dardiag.runs.lifecycle import check_writable

        check_writable(out, "--out", directory=False)
    if samples is not None and samples < 2:  # before the run is read and the model opened
        raise DardiagError(f"--samples must be at least 2, got {samples}")
    resolve_device(device)
    df = read_profile(run)
    schedule = plan_schedule(df, tolerance, model=model)
    subject = open_model_of(df, schedule.meta["model"], checkpoint=str(checkpoint) if checkpoint else None,
                            device=device)
    if isinstance(getattr(subject.model, "config", None), DiTConfig):
        check_sampling_fits(subject.model.config, samples or 360, resolve_device(device))
    result = evaluate_schedule(subject, schedule, samples=samples, seed=seed)
    print_cache_plan(schedule, result)
    if out is not None:
        schedule.save(out, overwrite=force)
        print(f"schedule -> {out}  (dardiag sample CKPT --cache-schedule {out})")
