"""``dardiag inspect CKPT``: what a checkpoint is, as dardiag reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dardiag.cli.app import command


@command("inspect")
def inspect_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint file (.pt/.pth/.safetensors) or diffusers dir"),
    family: Optional[str] = typer.Option(None, help="dit | sit | repa, when the file cannot say"),
    num_heads: Optional[int] = typer.Option(None, help="attention heads, for non-preset widths"),
    input_size: Optional[int] = typer.Option(None, help="latent side, for files without pos_embed"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
):
    """Print the detected architecture, family, weights and file facts; non-zero exit on any error."""
    if checkpoint.is_dir() and ((checkpoint / "config.json").exists() or (checkpoint / "model_index.json").exists()):
        return _inspect_diffusers(checkpoint, family, input_size, as_json)
    from dardiag.checkpoints import load_model

    model, info = load_model(checkpoint, family=family, num_heads=num_heads, input_size=input_size)
    d = info.to_dict()
    d["parameters"] = sum(p.numel() for p in model.parameters())
    if as_json:
        print(json.dumps(d, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(checkpoint), show_header=False)
    for key in ("family", "routing", "depth", "hidden_size", "num_heads", "patch_size", "in_channels",
                "out_channels", "learn_sigma", "num_classes", "latent_size", "parameters", "weights",
                "file_format", "step", "sha256"):
        src = info.sources.get(key, "")
        table.add_row(key, str(d[key]) + (f"  [dim]({src})[/dim]" if src else ""))
    if info.ignored_keys:
        table.add_row("ignored keys", ", ".join(info.ignored_keys[:6]) + (" ..." if len(info.ignored_keys) > 6 else ""))
    if info.rebuilt:
        table.add_row("rebuilt", ", ".join(info.rebuilt))
    Console().print(table)


def _inspect_diffusers(path: Path, family: Optional[str], input_size: Optional[int], as_json: bool) -> None:
    """A diffusers transformer directory: the class, how dardiag drives it, its size and files."""
    from dardiag.adapters.open import open_subject
    from dardiag.adapters.options import LoadOptions

    subject = open_subject(path, LoadOptions(family=family, input_size=input_size))
    info = subject.info
    d = {
        "name": subject.name,
        "class_name": info.get("class_name"),
        "adapter": info.get("adapter"),
        "family": subject.family.name,
        "depth": subject.spec.depth,
        "block_lists": info.get("block_lists"),
        "input_shape": list(subject.input_shape),
        "num_classes": subject.num_classes,
        "conditioning": info.get("conditioning"),
        "parameters": sum(p.numel() for p in subject.model.parameters()),
        "dtype": info.get("dtype"),
        "diffusers_version": info.get("diffusers_version"),
        "files": info.get("files"),
        "sha256": info.get("sha256"),
        "config": info.get("config"),
    }
    if as_json:
        print(json.dumps(d, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(path), show_header=False)
    for key, value in d.items():
        if key == "config":
            continue
        if key == "files":
            value = ", ".join(value or {})
        elif key == "block_lists":
            value = ", ".join(f"{k} x {v}" for k, v in (value or {}).items())
        table.add_row(key, str(value))
    Console().print(table)
