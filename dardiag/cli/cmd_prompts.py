"""``dardiag prompts PROMPTS.txt --pipeline DIR --out cond.pt``: real text conditioning for ``profile --cond``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dardiag.cli.app import command
from dardiag.errors import DardiagError

DTYPES = ("float32", "bfloat16", "float16")


@command("prompts")
def prompts_cmd(
    prompts: Path = typer.Argument(..., help="a text file, one prompt per line (# comments and blank lines skipped)"),
    pipeline: Path = typer.Option(..., help="a local diffusers pipeline folder (model_index.json, text encoders)"),
    out: Path = typer.Option(..., help="the conditioning file to write (.pt), for `dardiag profile --cond`"),
    max_length: Optional[int] = typer.Option(None, help="text tokens (default: the pipeline's own)"),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N"),
    dtype: str = typer.Option("float32", help="the text encoders' dtype: float32, bfloat16 or float16"),
    force: bool = typer.Option(False, "--force", help="replace OUT if it exists"),
):
    """Encode prompts with the pipeline's own text encoder(s), as its denoiser takes them."""
    import torch

    from dardiag.adapters.prompts import encode_prompts
    from dardiag.checkpoints.save import atomic_save, check_torch_name
    from dardiag.engine.devices import resolve_device
    from dardiag.data import read_prompts

    check_torch_name(out, "--out")
    device = str(resolve_device(device))  # before the text encoders load (auto: CUDA when present)
    if out.exists() and not force:
        raise DardiagError(f"--out {out} already exists; pass --force to replace it, or choose another name")
    if dtype not in DTYPES:
        raise DardiagError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if max_length is not None and max_length < 1:
        raise DardiagError("--max-length must be a positive integer")
    texts = read_prompts(prompts)
    cond = encode_prompts(texts, pipeline, device=device, dtype=getattr(torch, dtype), max_length=max_length)
    atomic_save(cond, out)
    meta = cond["meta"]
    shapes = ", ".join(f"{k} {v}" for k, v in meta["shapes"].items())
    notes = "".join(f"; {n}" for n in meta["mask_notes"])  # masks not kept, and why
    print(f"encoded {len(texts)} prompts with {pipeline.name} for {meta['denoiser']}: {shapes}{notes} -> {out}")
