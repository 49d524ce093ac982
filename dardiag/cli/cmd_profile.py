"""``dardiag profile CKPT [CKPT ...] [--out OUT]``: the depth x noise-level sweep into one table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from dardiag.cli.app import command
from dardiag.cli.pipeline_flags import CALL, HEIGHT, NUM_FRAMES, PIPELINE, PROMPTS, WIDTH
from dardiag.errors import DardiagError


def parse_floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise DardiagError(f"{flag} takes comma-separated numbers, e.g. {flag} 0.1,0.5,0.9; got {text!r}") from None


def default_out(checkpoints: list[Path]) -> Path:
    """``profile-<name>`` in the current directory, named after the checkpoint(s): the same command
    again finds the same run (and continues it or reads it back)."""
    names = [(c.parent.name if c.is_dir() and c.name in ("transformer", "unet") else c.stem) or "model"
             for c in checkpoints]
    shown = "+".join(names[:2]) + (f"+{len(names) - 2}" if len(names) > 2 else "")
    return Path(f"profile-{shown}")


def _rank_line(line: str) -> None:
    from dardiag.engine.distributed import rank

    print(f"rank {rank()}: {line}", file=sys.stderr, flush=True)


@command("profile")
def profile_cmd(
    checkpoints: List[Path] = typer.Argument(..., help="checkpoint files or diffusers directories"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output run directory (parquet parts); default: "
                                       "profile-<checkpoint name> in the current directory"),
    inputs: Optional[str] = typer.Option(None, help="latents file (from `dardiag latents` or `dardiag generate`, or a "
                                         ".pt/.npz with x0, y?, noise?), or 'generated' (samples of the model: its "
                                         "pipeline for a diffusers model); default: synthetic"),
    cond: Optional[Path] = typer.Option(None, "--cond", help="text conditioning from `dardiag prompts` (with "
                                        "--inputs latents, or alone with synthetic latents)"),
    generate_steps: Optional[int] = typer.Option(None, help="--inputs generated: sampler steps (default: a pipeline's "
                                                 "own; 50 for dardiag's DDIM/Euler)"),
    generate_cfg: Optional[float] = typer.Option(None, help="--inputs generated / --trajectory: guidance scale "
                                                 "(default: a pipeline's own; 1 = off for dardiag's sampler)"),
    prompts: Optional[Path] = PROMPTS,
    pipeline: Optional[Path] = PIPELINE,
    height: Optional[int] = HEIGHT,
    width: Optional[int] = WIDTH,
    num_frames: Optional[int] = NUM_FRAMES,
    call: Optional[List[str]] = CALL,
    noise_levels: Optional[str] = typer.Option(None, help="comma-separated levels in [0, 1], 1 = noise"),
    levels: int = typer.Option(16, help="number of evenly spaced noise levels when none are given (cost: levels x "
                               "samples forward+backward passes)"),
    timesteps: Optional[str] = typer.Option(None, help="comma-separated native timesteps instead"),
    samples: Optional[int] = typer.Option(None, help="images per noise level (default: all of --inputs, or 64 synthetic)"),
    batch_size: int = typer.Option(16, help="images per minibatch (grad_rms scales with 1/B)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto (CUDA when present, else cpu), cpu, cuda or cuda:N"),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16 (autocast)"),
    family: Optional[str] = typer.Option(None, help="noise process when the files cannot say: dit, sit, repa, "
                                         "flow1000, flow, flow-rev, ddpm-v"),
    num_heads: Optional[int] = typer.Option(None, help="attention heads for non-preset widths"),
    input_size: Optional[int] = typer.Option(None, help="latent side (files without pos_embed; diffusers: "
                                             "instead of the pipeline's default)"),
    frames: Optional[int] = typer.Option(None, help="video models: latent frames (default: the pipeline's)"),
    text_tokens: Optional[int] = typer.Option(None, help="length of synthetic text embeddings (default: the pipeline's)"),
    blocks: Optional[str] = typer.Option(None, help="diffusers: block list path(s), comma-separated in call order, "
                                         "when the guess for an unknown class is wrong"),
    config_dir: Optional[Path] = typer.Option(None, "--config", help="a single original .safetensors: the folder "
                                              "holding its diffusers config.json (offline machines)"),
    name: Optional[List[str]] = typer.Option(None, help="display name per checkpoint (repeat)"),
    cka: bool = typer.Option(True, help="CKA matrix between all block states"),
    cka_rows: str = typer.Option("tokens", help="CKA examples: tokens or images"),
    cka_max_rows: Optional[int] = typer.Option(None, help="split CKA minibatches above this many rows"),
    sublayers: bool = typer.Option(True, help="RMS of every sublayer input and output"),
    routes: bool = typer.Option(True, help="DAR routing weights / residual counterfactual importance"),
    probe: bool = typer.Option(True, help="timestep probe (ridge R^2 per block)"),
    token_maps: bool = typer.Option(False, help="per-token act_rms / grad_rms maps"),
    outliers: bool = typer.Option(True, help="max |z|, kurtosis and top-1% channel / token shares of every state"),
    channel_maps: bool = typer.Option(False, help="per-channel RMS of every state (which channels are massive)"),
    ablation: bool = typer.Option(False, help="skip each block in turn: loss and output change (ablate_*)"),
    trajectory: bool = typer.Option(False, help="along the model's own sampler: step changes and the causal "
                                    "cache error of every (block, step) cell"),
    trajectory_steps: Optional[int] = typer.Option(None, help="--trajectory: sampler steps (default: a pipeline's own; "
                                                   "50 for dardiag's sampler; guidance: --generate-cfg)"),
    cache_error: bool = typer.Option(True, help="--trajectory: the causal cache error (one more forward per block "
                                     "and step)"),
    figures: bool = typer.Option(True, help="render the figures into OUT/_figures"),
    force: bool = typer.Option(False, help="replace a run with other settings in OUT (kept until the new one completes)"),
    resume: bool = typer.Option(False, help="continue the run in OUT (the same command without it does too)"),
    progress: Optional[bool] = typer.Option(None, help="progress bar (default: on a terminal; in a log, one line "
                                            "per finished unit)"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's choice)"),
    checkpoint_blocks: Optional[bool] = typer.Option(None, "--checkpoint-blocks/--no-checkpoint-blocks",
                                                     help="recompute every block in the backward: the same table "
                                                     "in less memory (default: when the plain backward would not "
                                                     "fit the free memory)"),
    shard: bool = typer.Option(False, "--shard", help="under torchrun: shard the weights over the processes "
                               "(FSDP2, each block its own unit), each process loading only its share"),
):
    """Measure act_rms, grad_rms, cos_prev, CKA, routing and the timestep probe per block and level."""
    if threads is not None:
        import torch

        if threads < 1:
            raise DardiagError("--threads must be at least 1")
        torch.set_num_threads(threads)
    from dardiag.cli.live import LiveProgress
    from dardiag.cli.report import console, print_probe, print_symptoms
    from dardiag.cli.savings import print_ablation, print_trajectory
    from dardiag.engine.config import Analyses, ProfileConfig, default_grid
    from dardiag.engine.devices import describe_device
    from dardiag.engine.distributed import is_main
    from dardiag.runs.stop import stop_on_signals
    from dardiag.adapters.options import LoadOptions
    from dardiag.api import profile
    from dardiag.pipelines.options import parse_call

    grid = parse_floats(noise_levels, "--noise-levels")
    ts = parse_floats(timesteps, "--timesteps")
    if grid is None and ts is None:
        grid = default_grid(levels)
    if name and len(name) != len(checkpoints):
        raise DardiagError(f"{len(name)} --name values for {len(checkpoints)} checkpoints")
    analyses = Analyses(cka=cka, cka_rows=cka_rows, cka_max_rows=cka_max_rows, sublayers=sublayers,
                        routes=routes, probe=probe, token_maps=token_maps, outliers=outliers,
                        channel_maps=channel_maps, ablation=ablation, trajectory=trajectory, cache_error=cache_error)
    config = ProfileConfig(noise_levels=grid, timesteps=ts, samples=samples, batch_size=batch_size, seed=seed,
                           device=device, dtype=dtype, analyses=analyses, generate_steps=generate_steps,
                           generate_cfg=generate_cfg, trajectory_steps=trajectory_steps,
                           checkpoint_blocks=checkpoint_blocks)
    load = LoadOptions(family=family, num_heads=num_heads, input_size=input_size, frames=frames,
                       text_tokens=text_tokens, blocks=blocks, config=str(config_dir) if config_dir else None,
                       shard=shard)
    if out is None:
        out = default_out(checkpoints)
    where = describe_device(device)  # a bad --device is one line before anything else
    if is_main():
        console.print(f"OUT: {out}  ({where}; the same command again continues the run there, or reads it back)",
                      markup=False, highlight=False, soft_wrap=True)
    if inputs is not None and inputs != "generated":
        inputs = Path(inputs)
    # under torchrun each signalled process says so at once (rank 0 plainly, the others with their rank);
    # the processes agree to stop after the same minibatch (dardiag.engine.sweep)
    with LiveProgress(console, progress if is_main() else False) as live, \
            stop_on_signals("this minibatch", notify=live.alert if is_main() else _rank_line):
        df = profile([str(c) for c in checkpoints], out=out, inputs=inputs, conditioning=cond, config=config,
                     load=load, names=name, pipeline=str(pipeline) if pipeline else None,
                     prompts=str(prompts) if prompts else None, height=height, width=width, num_frames=num_frames,
                     call=parse_call(call),
                     force=force, resume=resume, progress=live if is_main() else None,
                     report=live.print if is_main() else None)

    if not is_main():  # under torchrun only rank 0 reports and draws
        return
    print_symptoms(df)
    print_probe(df)
    print_ablation(df)
    print_trajectory(df)
    console.print(f"wrote {len(df)} rows to {out}  (pandas.read_parquet('{out}'))")
    if figures:
        from dardiag.cli.figures import write_figures

        write_figures(df, Path(out) / "_figures")
