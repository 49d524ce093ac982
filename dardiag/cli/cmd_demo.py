"""``dardiag demo``: the bundled residual and DAR models profiled side by side on held-out digits."""

from __future__ import annotations

from pathlib import Path

import typer

from dardiag.cli.app import command
from dardiag.errors import DardiagError


@command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("dardiag-demo"), "--out", "-o", help="output run directory"),
    samples: int = typer.Option(64, help="held-out digits per noise level"),
    levels: int = typer.Option(8, help="evenly spaced noise levels"),
    batch_size: int = typer.Option(16),
    ablation: bool = typer.Option(False, help="also skip each block in turn (ablate_dloss, ablate_rel_out)"),
    trajectory: bool = typer.Option(False, help="also observe each model's sampler (step changes, cache_error)"),
    trajectory_steps: int = typer.Option(50, help="--trajectory: Euler steps"),
    figures: bool = typer.Option(True, help="render the figures into OUT/_figures"),
    force: bool = typer.Option(False, help="replace a run with other settings in OUT"),
    resume: bool = typer.Option(False, help="continue the run in OUT (the same command without it does too)"),
    device: str = typer.Option("auto", help="auto (CUDA when present, else cpu), cpu, cuda or cuda:N"),
    threads: int = typer.Option(1, help="CPU threads for torch"),
    progress: bool = typer.Option(None, help="progress bar (default: on a terminal)"),
):
    """Profile the bundled residual and DAR (static_t, chunk 4) digit models side by side."""
    import torch

    if threads < 1:
        raise DardiagError("--threads must be at least 1")
    # The bundled models are tiny (64 tokens, width 64): one thread is as fast as two on an idle
    # machine and avoids OpenMP spin-waits that made a busy 2-core machine 50x slower (measured).
    torch.set_num_threads(threads)
    from dardiag.bundled import bundled_checkpoints, held_out_digits
    from dardiag.cli.live import LiveProgress
    from dardiag.cli.report import console, print_comparison, print_probe, print_symptoms
    from dardiag.cli.savings import print_ablation, print_trajectory
    from dardiag.engine.config import Analyses, ProfileConfig, default_grid
    from dardiag.engine.devices import describe_device
    from dardiag.api import profile
    from dardiag.runs.stop import stop_on_signals

    console.print(f"OUT: {out}  ({describe_device(device)})", markup=False, highlight=False, soft_wrap=True)
    paths = bundled_checkpoints()
    with LiveProgress(console, progress) as live, stop_on_signals("this minibatch", notify=live.alert):
        # channel maps too: the demo draws every figure, the channel spectrum included
        config = ProfileConfig(noise_levels=default_grid(levels), samples=samples, batch_size=batch_size,
                               device=device, trajectory_steps=trajectory_steps,
                               analyses=Analyses(channel_maps=True, ablation=ablation, trajectory=trajectory))
        df = profile([str(p) for p in paths.values()], out=out, inputs=held_out_digits(), config=config,
                     names=list(paths), force=force, resume=resume, progress=live, report=live.print)
    print_symptoms(df, title="Bundled digit models: residual vs DAR (noisiest and cleanest level)")
    print_comparison(df)
    print_probe(df)
    print_ablation(df)
    print_trajectory(df)
    console.print(f"table: {out}  (pandas.read_parquet('{out}'))")
    if figures:
        from dardiag.cli.figures import write_figures

        write_figures(df, Path(out) / "_figures")
