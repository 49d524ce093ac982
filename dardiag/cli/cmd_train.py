"""``dardiag train``: train a small residual or DAR DiT (digits by default), or fine-tune a checkpoint, resumably."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Optional

import typer

from dardiag.cli.app import command
from dardiag.errors import DardiagError


def _levels(text: Optional[str]) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise DardiagError(f"--profile-noise-levels must be comma-separated numbers, got {text!r}") from None


@command("train")
def train_cmd(
    out: Path = typer.Option(..., help="run directory: checkpoints, loss.csv, profile/"),
    preset: Optional[str] = typer.Option(None, help="model size preset, e.g. DiT-S/2 (instead of --depth ...)"),
    depth: Optional[int] = typer.Option(None, help="blocks (default 8)"),
    hidden: Optional[int] = typer.Option(None, help="hidden size (default 64)"),
    heads: Optional[int] = typer.Option(None, "--heads", "--num-heads", help="attention heads (default 4; with "
                                        "--init, for a bare file whose width is not a preset's)"),
    patch: Optional[int] = typer.Option(None, help="patch size (default 2)"),
    input_size: Optional[int] = typer.Option(None, help="latent side; must match the data (default: the data's)"),
    routing: Optional[str] = typer.Option(None, help="residual | dar (default residual)"),
    query: Optional[str] = typer.Option(None, help="DAR query: static | static_t | dynamic (default static_t)"),
    chunk_size: Optional[int] = typer.Option(None, help="DAR chunk size S, must divide 2 x depth (default 4)"),
    class_dropout: Optional[float] = typer.Option(None, help="label dropout probability (CFG null class; default 0.1)"),
    family: Optional[str] = typer.Option(None, help="sit (velocity objective, default) | dit (epsilon) | repa (flow)"),
    init: Optional[Path] = typer.Option(None, help="fine-tune this checkpoint or diffusers folder (residual or DAR, "
                                        "e.g. from dardiag to-dar); the model flags then come from the file"),
    lora: int = typer.Option(0, help="with --init: LoRA rank on the attention/MLP linears, base frozen, routing "
                             "trained in full (needs dardiag[lora]); 0 = full fine-tune"),
    data: str = typer.Option("digits", help="digits, or a latents file (.pt/.npz with x0 [N,C,H,W], y; for a "
                             "diffusers --init its conditioning too, as dardiag latents + prompts write it)"),
    steps: int = typer.Option(3000, help="optimizer steps in total (a resumed run continues to this)"),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-3, help="AdamW learning rate (weight decay 0)"),
    warmup: int = typer.Option(100, help="linear learning-rate warmup steps"),
    grad_clip: float = typer.Option(1.0, help="max gradient norm; 0 = off"),
    ema: float = typer.Option(0.999, help="EMA decay (with a (1+n)/(10+n) warmup)"),
    seed: int = typer.Option(0),
    save_every: int = typer.Option(500, help="checkpoint every K steps (0 = only at the end)"),
    log_every: int = typer.Option(1, help="loss.csv row every K steps"),
    profile_every: int = typer.Option(0, help="profile the EMA model every K steps into OUT/profile (0 = off)"),
    profile_samples: int = typer.Option(64, help="held-out images in the profiling probe"),
    profile_batch_size: int = typer.Option(32),
    profile_noise_levels: Optional[str] = typer.Option(None, help="comma-separated noise levels (1 = noise)"),
    profile_cka: bool = typer.Option(True, "--profile-cka/--no-profile-cka"),
    device: str = typer.Option("auto", help="auto (CUDA when present, else cpu), cpu, cuda or cuda:N"),
    resume: bool = typer.Option(False, "--resume", help="accepted for old scripts: the same command continues "
                                "an unfinished run in OUT anyway"),
    force: bool = typer.Option(False, "--force", help="start over: the run in OUT (only its own files) is kept in "
                               "OUT/_replaced until the new one completes; also replaces an existing --export file"),
    export: Optional[Path] = typer.Option(None, help="after training, write the EMA weights alone to this file (a "
                                          "diffusers --init: a folder like it) "
                                          "(not overwritten without --force)"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (1 is fastest on a busy machine)"),
):
    """Train a residual or DAR DiT/SiT; stop it any time, and the same command continues it."""
    from dardiag.train import TrainConfig, train
    from dardiag.train import export as export_fn
    from dardiag.train.export import check_target
    from dardiag.train.init import init_config
    from dardiag.train.run import is_diffusers_dir
    from dardiag.train.trainer import prepare

    sizes = {"depth": depth, "hidden_size": hidden, "num_heads": heads, "patch_size": patch}
    given = {k: v for k, v in sizes.items() if v is not None}
    if preset is not None and given:
        raise DardiagError(f"pass either --preset or explicit sizes, not both (got --preset and {', '.join(given)})")
    model_flags = {"input_size": input_size, "routing": routing, "query": query, "chunk_size": chunk_size,
                   "class_dropout": class_dropout, "family": family}
    given.update({k: v for k, v in model_flags.items() if v is not None})
    settings = dict(
        out=str(out), data=data, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, grad_clip=grad_clip,
        ema=ema, seed=seed, save_every=save_every, log_every=log_every, profile_every=profile_every,
        profile_samples=profile_samples, profile_batch_size=profile_batch_size,
        profile_noise_levels=_levels(profile_noise_levels), profile_cka=profile_cka, device=device,
        resume=resume, force=force, lora=lora,
    )
    diffusers = init is not None and is_diffusers_dir(init)
    if diffusers:  # a diffusers folder (residual or routed by to-dar): its config says the model
        from dardiag.train.diffusers_export import check_export_dir as check_target
        from dardiag.train.diffusers_export import export_diffusers as export_fn
        from dardiag.train.diffusers_model import diffusers_init_config

        config = diffusers_init_config(init, given=given, preset=preset, **settings)
    elif init is not None:
        config = init_config(init, given=given, preset=preset, **settings)
    else:
        config = TrainConfig(preset=preset, **given, **settings)
    if threads is not None:
        if threads < 1:
            raise DardiagError(f"--threads must be at least 1, got {threads}")
        import torch

        # not a training setting (so not in TrainConfig); 1 and 2 threads gave bit-identical weights on our
        # 2-core CPU, but the thread count may change float reductions elsewhere
        torch.set_num_threads(threads)
    from dardiag.engine.devices import describe_device
    from dardiag.runs.stop import stop_on_signals

    print(f"OUT: {out}  ({describe_device(device)})", flush=True)
    # OUT and --export before any data is read or any step is trained
    plan = prepare(config)
    if plan.action == "complete":
        print(f"nothing to do: the run in {out} is complete (step {plan.record.progress}, --steps {steps}); pass a larger "
              "--steps to train on, or --force to start over")
        if export is not None:
            check_target(export, out, overwrite=True, init=init)  # not a file of the run, not unwritable
            if export.exists() or export.is_symlink():
                print(f"--export {export} exists, left as it is (delete it to export again)")
                export = None
        train(config, plan=plan)  # drops an OUT/_replaced left by an interrupted finish
        if export is not None:
            print(f"exported EMA weights to {export_fn(out / 'last.pt', export, overwrite=False)}")
        return
    if export is not None:
        check_target(export, out, overwrite=force, init=init)
    from dardiag.cli.live import LiveProgress
    from dardiag.cli.report import console

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # a first Ctrl-C / SIGTERM: finish the step, save last.pt, exit 130 / 143
    with LiveProgress(console) as live, stop_on_signals("this step", notify=live.alert):
        last = train(config, plan=plan, report=lambda line: print(line, flush=True), progress=progress,
                     profile_progress=live)
    print(_summary(out))
    if export is not None:
        print(f"exported EMA weights to {export_fn(last, export, overwrite=force)}")


def _summary(out: Path) -> str:
    with open(out / "loss.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tail = [float(r["loss"]) for r in rows[-100:]]
    step = int(rows[-1]["step"])
    secs = float(rows[-1]["seconds"])
    return (f"trained to step {step}; mean loss over the last {len(tail)} logged steps {sum(tail) / len(tail):.4f}; "
            f"{secs:.0f} s in this process; checkpoints in {out}")
