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
    family: Optional[str] = typer.Option(None, help="noise process, when the files cannot say"),
    num_heads: Optional[int] = typer.Option(None, help="attention heads, for non-preset widths"),
    input_size: Optional[int] = typer.Option(None, help="latent side (files without pos_embed; diffusers: "
                                             "instead of the pipeline's default)"),
    frames: Optional[int] = typer.Option(None, help="video models: latent frames"),
    text_tokens: Optional[int] = typer.Option(None, help="length of synthetic text embeddings"),
    blocks: Optional[str] = typer.Option(None, help="diffusers: block list path(s), comma-separated"),
    config_dir: Optional[Path] = typer.Option(None, "--config", help="a single original .safetensors: the folder "
                                              "holding its diffusers config.json"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
):
    """Print the detected architecture, family, weights and file facts, and for diffusers models the
    plan (stacks, depth, stream, family, conditioning); non-zero exit on any error."""
    from dardiag.adapters.options import LoadOptions

    options = LoadOptions(family=family, input_size=input_size, frames=frames, text_tokens=text_tokens,
                          blocks=blocks, config=str(config_dir) if config_dir else None)
    diffusers_dir = checkpoint.is_dir() and (
        (checkpoint / "config.json").exists() or (checkpoint / "model_index.json").exists())
    if diffusers_dir or (checkpoint.suffix == ".safetensors" and _is_original_single_file(checkpoint)):
        return _inspect_diffusers(checkpoint, options, as_json)
    from dardiag.checkpoints import load_model
    from dardiag.checkpoints.infer import MissingFlags

    try:
        model, info = load_model(checkpoint, family=family, num_heads=num_heads, input_size=input_size)
    except MissingFlags as e:  # show what the file says, then what it cannot (the error, exit 2)
        _print_partial(checkpoint, e, as_json)
        raise
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


def _print_partial(path: Path, e, as_json: bool) -> None:
    """A bare file that cannot say everything: what it says, with where it was read, and what is missing."""
    if as_json:
        print(json.dumps({"known": e.known, "sources": e.sources, "missing": e.missing}, indent=2, default=str))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{path} (incomplete)", show_header=False)
    for key, value in e.known.items():
        if value is not None:
            src = e.sources.get(key, "the weights' shapes")
            table.add_row(key, escape(str(value)) + f"  [dim]({escape(src)})[/dim]")
    for flag, why in e.missing.items():
        table.add_row("missing", escape(f"{why}: pass {flag}"))
    Console().print(table)


def _is_original_single_file(path: Path) -> bool:
    try:
        from dardiag.adapters.diffusers import is_single_file
    except ImportError:
        return False
    return is_single_file(path)


def _inspect_diffusers(path: Path, options, as_json: bool) -> None:
    """A diffusers transformer (folder, pipeline or single file): the class, the plan, its size and files."""
    if path.is_dir():  # the plan without reading a weight: headers checked, model on the meta device
        from dardiag.adapters.diffusers import diffusers_subject

        subject = diffusers_subject(path, options, weights=False)
    else:
        from dardiag.adapters.open import open_subject

        subject = open_subject(path, options)
    info = subject.info
    plan = info.get("plan") or {}
    d = {
        "name": subject.name,
        "class_name": info.get("class_name"),
        "adapter": info.get("adapter"),
        "family": subject.family.name,
        "family_description": subject.family.description,
        "routing": subject.routing,
        "depth": subject.spec.depth,
        "block_lists": info.get("block_lists"),
        "stacks": plan.get("stacks"),
        "order": plan.get("order"),
        "left_out": plan.get("left_out"),
        "note": plan.get("note"),
        "guess": info.get("guess"),
        "input_shape": list(subject.input_shape),
        "sizes": plan.get("sizes"),  # defaults shrunk to what the config's position tables take
        "image_tokens": info.get("image_tokens"),
        "stream_tokens": info.get("stream_tokens"),  # tokens a block carries (image, and joint text)
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
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=str(path), show_header=False)
    for key, value in d.items():
        if key in ("config", "block_lists") or value in (None, "", {}, []):
            continue
        if key == "files":
            value = ", ".join(value or {})
        elif key == "stacks":  # the plan: which blocks, in call order, and where the image stream is
            value = "\n".join(f"{s['path']} x {s['blocks']}: image stream {s['stream']}" for s in value)
        elif key == "left_out":
            value = "; ".join(f"{k} ({why})" for k, why in value.items())
        table.add_row(key, escape(str(value)))  # "[text; image]" is text, not rich markup
    Console().print(table)
