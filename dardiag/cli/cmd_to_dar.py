"""``dardiag to-dar SRC OUT``: a residual model as a DAR model that starts where it is.

SRC is a DiT/SiT/REPA checkpoint file (routed per sublayer, as the paper) or a diffusers folder (a model
or a pipeline of any class of the table: routed per block, or per sublayer where the class allows)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dardiag.cli.app import command
from dardiag.errors import DardiagError


@command("to-dar")
def to_dar_cmd(
    src: Path = typer.Argument(..., help="residual checkpoint (released state dict, training dict, safetensors, "
                               "dardiag) or a diffusers model / pipeline folder"),
    out: Path = typer.Argument(..., help="the DAR checkpoint to write (.pt), or for a folder the routed folder"),
    query: str = typer.Option("static_t", help="DAR query: static | static_t | dynamic"),
    level: Optional[str] = typer.Option(None, help="diffusers folders: block (default, any class) | sublayer "
                                        "(classes whose sublayers the table names); files are routed per sublayer"),
    chunk_size: int = typer.Option(1, help="chunk size S (divides 2 x depth); 1 = dense, the exact start"),
    num_heads: Optional[int] = typer.Option(None, help="attention heads, for non-preset widths"),
    family: Optional[str] = typer.Option(None, help="dit | sit | repa, when the file cannot say"),
    input_size: Optional[int] = typer.Option(None, help="latent side, for files without pos_embed; folders: "
                                             "the side of the start-gap batch"),
    frames: Optional[int] = typer.Option(None, help="folders of video models: latent frames of the start-gap batch"),
    text_tokens: Optional[int] = typer.Option(None, help="folders: text tokens of the start-gap batch"),
    weights: Optional[str] = typer.Option(None, help="ema | model in training checkpoints (default: ema)"),
    check_samples: int = typer.Option(4, help="inputs in the start-gap check (noise levels spread over [0, 1]); 0 = skip it"),
    seed: int = typer.Option(0, help="seed of the start-gap batch"),
    device: str = typer.Option("cpu", help="where the start gap is measured"),
    force: bool = typer.Option(False, "--force", help="replace OUT if it exists"),
):
    """Write OUT: DAR routing (zero queries: uniform) over SRC's weights; the last line is the measured start gap."""
    if src.is_dir():
        return _folder(src, out, query=query, level=level, chunk_size=chunk_size, num_heads=num_heads,
                       family=family, input_size=input_size, frames=frames, text_tokens=text_tokens, weights=weights,
                       check_samples=check_samples, seed=seed, device=device, force=force)
    from dardiag.convert import convert_file

    for flag, value in (("--level", level if level != "sublayer" else None), ("--frames", frames),
                        ("--text-tokens", text_tokens)):
        if value is not None:
            raise DardiagError(f"{flag} is for diffusers folders; a DiT/SiT/REPA file is routed per sublayer "
                               "(the paper's form): drop the flag")
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


def _folder(src: Path, out: Path, *, query, level, chunk_size, num_heads, family, input_size, frames, text_tokens,
            weights, check_samples, seed, device, force) -> None:
    from dardiag.adapters.options import LoadOptions
    from dardiag.convert.folder import convert_folder

    for flag, value, why in (
            ("--chunk-size", chunk_size if chunk_size != 1 else None, "a diffusers model is routed densely"),
            ("--num-heads", num_heads, "config.json says the sizes"),
            ("--family", family, "the class table says the noise process"),
            ("--weights", weights, "a diffusers folder holds one set of weights")):
        if value is not None:
            raise DardiagError(f"{flag} {value} does not apply to the diffusers folder {src} ({why}); drop the flag")
    options = LoadOptions(input_size=input_size, frames=frames, text_tokens=text_tokens)
    r = convert_folder(src, out, query=query, level=level or "block", check_samples=check_samples, seed=seed,
                       device=device, force=force, options=options)
    s = r.spec
    how = ("per block: a gain per aggregator, starting at its source count" if s.level == "block" else
           "per sublayer, gain-free: each routed LayerNorm's eps / n^2")
    print(f"{src} ({s.class_name}, {s.depth} blocks, width {s.dim}) -> {out} ({s.name}; exact start {how}; "
          "text streams unchanged)")
    print(r.gap.line() if r.gap else "start gap: not measured (--check-samples 0)")
