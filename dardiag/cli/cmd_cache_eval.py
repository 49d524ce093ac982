"""``dardiag cache-eval PIPELINE --prompts P``: caching methods run on the pipeline, speed against error, measured."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dardiag.cli.app import command
from dardiag.cli.pipeline_flags import (
    CALL, GUIDANCE, HEIGHT, NUM_FRAMES, PIPELINE, PROMPTS, WIDTH, pipeline_options,
)
from dardiag.errors import DardiagError


@command("cache-eval")
def cache_eval_cmd(
    model: Path = typer.Argument(..., help="a diffusers pipeline folder, or its transformer folder with --pipeline"),
    out: Path = typer.Option(..., help="a new folder: cache_eval.parquet (one row per method, setting and sample), "
                             "summary.csv, cache_eval.pdf/png"),
    prompts: Optional[Path] = PROMPTS,
    pipeline: Optional[Path] = PIPELINE,
    methods: str = typer.Option("firstblock,magcache,taylorseer,pab,dardiag",
                                help="comma-separated: firstblock, magcache, taylorseer, pab, fastercache, seacache "
                                     "(diffusers' hooks), cache-dit (when installed), dardiag (cache-plan's schedule)"),
    settings: Optional[List[str]] = typer.Option(None, "--settings", help="method=v1,v2 (repeat): the values of its "
                                                 "knob (threshold, cache_interval, skip range, tolerance)"),
    calibration: Optional[Path] = typer.Option(None, help="a --trajectory run of this pipeline: MagCache's ratios "
                                               "and dardiag's schedule come from it"),
    samples: Optional[int] = typer.Option(None, help="samples (default: one per prompt); sample j: prompt j mod P"),
    seed: int = typer.Option(0, help="sample j is drawn with generator seed + j, cached and uncached alike"),
    steps: Optional[int] = typer.Option(None, help="the pipeline's num_inference_steps (default: its own)"),
    generate_cfg: Optional[float] = GUIDANCE,
    height: Optional[int] = HEIGHT,
    width: Optional[int] = WIDTH,
    num_frames: Optional[int] = NUM_FRAMES,
    call: Optional[List[str]] = CALL,
    device: str = typer.Option("auto", help="auto (CUDA when present, else cpu), cpu, cuda or cuda:N"),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16"),
    force: bool = typer.Option(False, "--force", help="replace OUT if it exists"),
):
    """Run diffusers' cache hooks (and dardiag's schedule) on a pipeline: speed-up against error, measured."""
    from dardiag.cli.report import console
    from dardiag.cli.savings import print_cache_eval
    from dardiag.engine.devices import describe_device
    from dardiag.runs.stop import stop_on_signals
    from dardiag.savings.evaluate import run_cache_eval

    if out.exists() and not force:
        raise DardiagError(f"--out {out} already exists; pass --force to replace it, or choose another folder")
    options = pipeline_options(pipeline, prompts, height, width, num_frames, call)
    console.print(f"{describe_device(device)}; cache evaluation -> {out}", markup=False, highlight=False)
    with stop_on_signals("this pipeline call"):
        summary, notes = run_cache_eval(model, out, options=options, methods=[m.strip() for m in methods.split(",")
                                                                               if m.strip()],
                                        settings=settings, calibration=calibration, samples=samples, seed=seed,
                                        steps=steps, guidance=generate_cfg, device=device, dtype=dtype, force=force,
                                        report=lambda line: console.print(line, markup=False, highlight=False))
    print_cache_eval(summary, notes)
    console.print(f"wrote {out}/cache_eval.parquet, summary.csv and cache_eval.pdf/png", markup=False, highlight=False)
