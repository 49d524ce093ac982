"""``dardiag latents IMAGES --vae VAE --out FILE``: real-image latents for ``dardiag profile --inputs``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dardiag.cli.app import command


@command("latents")
def latents_cmd(
    images: Path = typer.Argument(..., help="a folder of class subfolders of images (labels in sorted name "
                                            "order, as ImageFolder), or of images only"),
    vae: str = typer.Option(..., help="a local diffusers AutoencoderKL directory (config.json + weights)"),
    out: Path = typer.Option(..., help="the latents file to write (.pt): x0, y, meta"),
    size: int = typer.Option(256, help="image side in pixels, after DiT's center crop"),
    samples: Optional[int] = typer.Option(None, help="encode at most this many images (default: all)"),
    seed: int = typer.Option(0, help="which images when --samples is below the total; the seed of --sample"),
    batch_size: int = typer.Option(16, help="images per VAE call"),
    device: str = typer.Option("auto", help="auto (CUDA when present, else cpu), cpu, cuda or cuda:N"),
    dtype: str = typer.Option("float32", help="the VAE's dtype: float32, bfloat16 or float16"),
    force: bool = typer.Option(False, "--force", help="replace OUT if it exists"),
    sample: bool = typer.Option(False, "--sample", help="draw from the posterior instead of taking its mean"),
    class_index: Optional[int] = typer.Option(None, "--class", help="label every image of a flat folder"),
):
    """Encode a folder of images with the model's VAE into a latents file for `dardiag profile --inputs`."""
    from dardiag.cli.report import progress_bar
    from dardiag.engine.devices import describe_device
    from dardiag.latents import encode_folder
    from dardiag.runs.stop import stop_on_signals

    print(f"{describe_device(device)}; latents -> {out}", flush=True)
    with progress_bar(None, label="encoding") as update, stop_on_signals("this batch"):
        s = encode_folder(images, vae, out, size=size, samples=samples, seed=seed, batch_size=batch_size,
                          device=device, dtype=dtype, force=force, sample=sample, class_index=class_index,
                          progress=lambda done, total: update(completed=done, total=total))
    print(summary_lines(s))


def summary_lines(s: dict) -> str:
    """Two lines whose counts add up: encoded + skipped = the images read, out of those found."""
    labels = f"{s['classes']} classes" if s["classes"] else ("one label" if s["labelled"] else "no labels")
    noun = "image" if s["chosen"] == 1 else "images"
    skipped = f", skipped {s['skipped']} ({'; '.join(s['skipped_examples'])})" if s["skipped"] else ""
    read = (f"all {s['found']} found" if s["chosen"] == s["found"]
            else f"{s['chosen']} of {s['found']} found, chosen at random (seed {s['seed']})")
    return (f"encoded {s['count']} of {s['chosen']} {noun}{skipped}\n"
            f"images read: {read}; {labels}; x0 {s['shape']} -> {s['path']}")
