"""``dardiag to-dar SRC OUT``: a residual DiT/SiT/REPA checkpoint as a DAR model that starts where it is."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dardiag.cli.app import command


@command("to-dar")
def to_dar_cmd(
    src: Path = typer.Argument(..., help="residual checkpoint: released state dict, training dict, safetensors, dardiag"),
    out: Path = typer.Argument(..., help="the DAR checkpoint to write (.pt)"),
    query: str = typer.Option("static_t", help="DAR query: static | static_t | dynamic"),
    chunk_size: int = typer.Option(1, help="chunk size S (divides 2 x depth); 1 = dense, the exact start"),
    num_heads: Optional[int] = typer.Option(None, help="attention heads, for non-preset widths"),
    family: Optional[str] = typer.Option(None, help="dit | sit | repa, when the file cannot say"),
    input_size: Optional[int] = typer.Option(None, help="latent side, for files without pos_embed"),
    weights: Optional[str] = typer.Option(None, help="ema | model in training checkpoints (default: ema)"),
    check_samples: int = typer.Option(4, help="inputs in the start-gap check (noise levels spread over [0, 1]); 0 = skip it"),
    seed: int = typer.Option(0, help="seed of the start-gap batch"),
    device: str = typer.Option("cpu", help="where the start gap is measured"),
    force: bool = typer.Option(False, "--force", help="replace OUT if it exists"),
):
    """Write OUT: DAR routing (zero queries: uniform) over SRC's weights; the last line is the measured start gap."""
    from dardiag.convert import convert_file

    r = convert_file(src, out, query=query, chunk_size=chunk_size, num_heads=num_heads, family=family,
                     input_size=input_size, weights=weights, device=device, check_samples=check_samples, seed=seed,
                     force=force)
    cfg = r.config
    exact = "exact start: the residual function" if cfg.chunk_size == 1 else (
        "uniform start: each sublayer reads the sum of its chunk sources only, not the residual function")
    print(f"{src} ({r.source.family}, depth {cfg.depth}, width {cfg.hidden_size}, {r.source.weights} weights) "
          f"-> {out} ({cfg.routing_name}; {exact})")
    if r.source.ignored_keys:
        print(f"dropped {len(r.source.ignored_keys)} keys that are not part of the model, e.g. {r.source.ignored_keys[0]}")
    print(r.gap.line() if r.gap else "start gap: not measured (--check-samples 0)")
