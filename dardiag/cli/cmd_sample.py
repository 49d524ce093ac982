"""``dardiag sample CKPT``: a class-by-class grid of samples, optionally scored (digits models)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dardiag.cli.app import command
from dardiag.errors import DardiagError


@command("sample")
def sample_cmd(
    checkpoint: Path = typer.Argument(..., help="a dardiag checkpoint, or a DiT/SiT one (with --family, and "
                                      "--num-heads where its width is not a preset's)"),
    out: Path = typer.Option(Path("samples.png"),
                             help="image grid, one row per class: .png (or .jpg, .bmp, .tif, .webp)"),
    n_per_class: int = typer.Option(8, help="samples per class"),
    steps: int = typer.Option(50, help="Euler (sit) / DDIM (dit) steps"),
    cfg: float = typer.Option(1.0, help="classifier-free guidance scale >= 0 (1 = off, 0 = unconditional)"),
    seed: int = typer.Option(0),
    family: Optional[str] = typer.Option(None, help="sit | dit, when the file cannot say"),
    num_heads: Optional[int] = typer.Option(None, help="attention heads, when the file cannot say (a bare state "
                                            "dict of a non-preset width)"),
    input_size: Optional[int] = typer.Option(None, help="latent side, when the file cannot say (no pos_embed)"),
    device: str = typer.Option("auto", help="auto (CUDA when present, else cpu), cpu, cuda or cuda:N"),
    score: bool = typer.Option(False, "--score", help="digit score: classifier accuracy and Fréchet distance"),
    force: bool = typer.Option(False, "--force", help="replace OUT if it exists"),
    cache_schedule: Optional[Path] = typer.Option(None, help="reuse blocks as this schedule says (dardiag cache-plan --out)"),
):
    """Sample every class with a deterministic ODE sampler and save a grid."""
    import torch

    from dardiag.checkpoints import load_model
    from dardiag.train import digit_score, sample, save_grid
    from dardiag.sampler import check_grid, check_sampling, grid_format
    from dardiag.engine.devices import resolve_device
    from dardiag.runs.stop import stop_on_signals

    # every flag first: a bad one must not cost a model load and a sampling run
    if n_per_class < 1:
        raise DardiagError(f"--n-per-class must be at least 1, got {n_per_class}")
    check_sampling(steps=steps, cfg_scale=cfg)
    fmt = grid_format(out, overwrite=force)
    schedule = None
    if cache_schedule is not None:
        from dardiag.savings.schedule import CacheSchedule

        schedule = CacheSchedule.load(cache_schedule)
        if schedule.steps != steps:
            raise DardiagError(f"the schedule is for {schedule.steps} steps; pass --steps {schedule.steps}")
    from dardiag.engine.devices import describe_device

    print(f"{describe_device(device)}; grid -> {out}", flush=True)
    device = str(resolve_device(device))
    # a grid needs every sampler step, so a stop keeps nothing: a first Ctrl-C / SIGTERM ends the current
    # step (or the grid's write) and says so; loading, and a second signal, stop at once
    nothing = f"nothing was written to {out} (a stopped sample does not resume: the same command starts over)"
    with stop_on_signals("this sampler step", keeps=nothing) as halt:
        model, info = load_model(checkpoint, family=family, num_heads=num_heads, input_size=input_size, device=device,
                                 finite=True)
        cfg_model = model.config
        if score and (cfg_model.in_channels, cfg_model.input_size, cfg_model.num_classes) != (1, 16, 10):
            raise DardiagError("--score is for digits models (1 x 16 x 16 latents, 10 classes)")
        check_grid(cfg_model.num_classes, n_per_class, cfg_model.input_size, fmt=fmt)  # before a huge batch is drawn
        y = torch.arange(cfg_model.num_classes).repeat_interleave(n_per_class)  # (classes * n,)
        forward = None
        if schedule is not None:  # a real cached sampler: reused blocks are not computed
            from dardiag.adapters.dit import dit_subject
            from dardiag.savings.schedule import CachedForward

            schedule.check_weights(info.sha256, checkpoint)
            forward = CachedForward(dit_subject(model, info), schedule)
        with halt.deferred(then=f"nothing is written to {out}: the grid needs every step"):
            x = sample(model, info.family, y, steps=steps, cfg_scale=cfg, seed=seed, forward=forward,
                       on_step=lambda i: halt.check())
        if not torch.isfinite(x).all():
            raise DardiagError(f"the samples are not finite (NaN or inf), so nothing was written: {checkpoint} holds "
                               "non-finite weights, or the guidance diverged (try a smaller --cfg)")
        with halt.deferred("writing the grid", then=f"{out} will be complete"):  # atomic: all of it or nothing
            save_grid(x, out, nrow=n_per_class, overwrite=force)
        halt.keeps = f"{out} was written in full" + (" (the digit score was not computed)" if score else "")
        print(f"{x.shape[0]} samples ({cfg_model.num_classes} classes x {n_per_class}, {steps} steps, cfg {cfg:g}) "
              f"-> {out}")
        if forward is not None:
            print(f"cache: {forward.reused} of {forward.reused + forward.computed} block evaluations reused")
        halt.check()  # a stop asked for while the grid was written
        if score:
            s = digit_score(x, y)
            print(f"digit score (n={s['n']}): accuracy {s['accuracy']:.3f} (real test digits: "
                  f"{s['real_accuracy']:.3f}); FD {s['fd']:.2f} (real train digits, same n: {s['fd_real']:.2f}; "
                  "lower is better)")
