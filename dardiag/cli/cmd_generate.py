"""``dardiag generate DIR --prompts P --out gen.pt``: a pipeline's own samples and conditioning, for ``--inputs``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dardiag.cli.app import command
from dardiag.cli.pipeline_flags import (
    CALL, GUIDANCE, HEIGHT, NUM_FRAMES, PIPELINE, PROMPTS, WIDTH, pipeline_options,
)


@command("generate")
def generate_cmd(
    model: Path = typer.Argument(..., help="a diffusers pipeline folder (model_index.json), or its transformer "
                                           "folder with --pipeline"),
    out: Path = typer.Option(..., help="the file to write (.pt): x0 in the transformer's layout, the conditioning, meta"),
    prompts: Optional[Path] = PROMPTS,
    pipeline: Optional[Path] = PIPELINE,
    samples: Optional[int] = typer.Option(None, help="samples to draw (default: one per prompt); sample j uses "
                                          "prompt j mod P"),
    seed: int = typer.Option(0, help="sample j is drawn with torch.Generator(device).manual_seed(seed + j)"),
    batch_size: int = typer.Option(4, help="prompts per pipeline call"),
    generate_steps: Optional[int] = typer.Option(None, help="the pipeline's num_inference_steps (default: its own)"),
    generate_cfg: Optional[float] = GUIDANCE,
    height: Optional[int] = HEIGHT,
    width: Optional[int] = WIDTH,
    num_frames: Optional[int] = NUM_FRAMES,
    call: Optional[List[str]] = CALL,
    device: str = typer.Option("auto", help="auto (CUDA when present, else cpu), cpu, cuda or cuda:N"),
    dtype: str = typer.Option("float32", help="the pipeline's dtype: float32, bfloat16 or float16"),
    force: bool = typer.Option(False, "--force", help="replace OUT if it exists"),
    progress: Optional[bool] = typer.Option(None, help="progress bar (default: on a terminal)"),
):
    """Draw x0 with a diffusers pipeline (and keep its conditioning) for `dardiag profile --inputs`."""
    from dardiag.cli.live import LiveProgress
    from dardiag.cli.report import console
    from dardiag.engine.devices import describe_device
    from dardiag.pipelines.generate import generate
    from dardiag.runs.stop import stop_on_signals

    options = pipeline_options(pipeline, prompts, height, width, num_frames, call)
    console.print(f"{describe_device(device)}; generated inputs -> {out}", markup=False, highlight=False)
    with LiveProgress(console, progress, unit="sampler steps") as live, stop_on_signals("this batch of prompts",
                                                                                         notify=live.alert):
        began = []

        def on_step(done: int, total: int) -> None:
            if not began:
                live.begin(total=total, done=done - 1, images_per_step=batch_size, units="pipeline calls")
                began.append(1)
            live.step(batch_size)

        obj = generate(model, out, options=options, samples=samples, seed=seed, batch_size=batch_size,
                       steps=generate_steps, guidance=generate_cfg, device=device, dtype=dtype, force=force,
                       on_step=on_step, report=live.print)
    cond = ", ".join(f"{k} {list(v.shape)}" for k, v in obj.items() if k not in ("x0", "meta"))
    console.print(f"generated {obj['meta']['count']} samples ({obj['meta']['source']}): x0 {list(obj['x0'].shape)}"
                  f"{'; ' + cond if cond else ''} -> {out}  (dardiag profile MODEL --inputs {out})",
                  markup=False, highlight=False, soft_wrap=True)
