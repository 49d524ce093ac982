"""A folder of images -> the latents file that ``dardiag profile --inputs FILE`` reads.

Dimension letters: N images, C_lat latent channels, h = w = size / f (f the VAE's downsampling).

One pass, batch by batch: each batch of images is decoded, cropped and encoded, and only its latents
are kept, so memory is flat in the number of images. Every flag and the destination are checked
before the first image is read; the file is written once, atomically, at the end.

Stopped by a first Ctrl-C or SIGTERM (``dardiag.runs.stop``), the current batch finishes and the
latents so far go to a hidden ``.OUT.partial`` beside OUT; the same command continues after them
(the same images, VAE and settings: anything else starts over) and deletes it when OUT is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import torch

from dardiag import __version__
from dardiag.atomic import atomic_write
from dardiag.engine.devices import resolve_device
from dardiag.errors import DardiagError
from dardiag.latents.images import MIN_SIDE, BadImage, ImageList, find_images, load_pixels
from dardiag.latents.vae import (VAEConfig, encode, image_generators, open_vae, read_config,
                                 resolve_dtype)
from dardiag.runs import stop

MAX_EXAMPLES = 5  # skipped files named in the report and in meta


#################################################################################
#                                  Checks                                       #
#################################################################################


def _check_flags(*, size: int, samples: int | None, batch_size: int, class_index: int | None) -> None:
    if size < MIN_SIDE:
        raise DardiagError(f"--size must be at least {MIN_SIDE} pixels, got {size}")
    if batch_size < 1:
        raise DardiagError(f"--batch-size must be at least 1, got {batch_size}")
    if samples is not None and samples < 1:
        raise DardiagError(f"--samples must be at least 1, got {samples}")
    if class_index is not None and class_index < 0:
        raise DardiagError(f"--class must be a class index >= 0, got {class_index}")


def _check_out(out: Path, force: bool) -> None:
    """Refuse an existing ``out`` without ``force`` and an unwritable one, before any work is done."""
    if out.suffix.lower() in (".npz", ".safetensors"):
        raise DardiagError(f"--out {out}: the latents file is a torch.save dict; name it .pt, not {out.suffix}")
    if out.is_dir():
        raise DardiagError(f"--out {out} is a folder; pass a file name such as {out / 'latents.pt'}")
    if out.exists() and not force:
        raise DardiagError(f"--out {out} already exists; pass --force to replace it, or choose another name")
    parent = out.parent
    while not parent.exists():  # atomic_write creates missing folders: the first existing one decides
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DardiagError(f"--out {out}: cannot write in {parent}; choose a writable location")


def _check_size(size: int, vae: VAEConfig) -> None:
    f = vae.downsampling
    if size % f:
        raise DardiagError(f"--size {size} is not a multiple of {f}, the downsampling factor of {vae.path.name}; "
                           f"use e.g. --size {max(f, size // f * f)}")


#################################################################################
#                                 Selection                                     #
#################################################################################


def _choose(images: ImageList, samples: int | None, seed: int) -> tuple[list[int], str]:
    """Indices of the images to encode, in folder order, and a line saying how they were chosen."""
    total = len(images.paths)
    if samples is None or samples >= total:
        return list(range(total)), f"all {total} images"
    g = torch.Generator().manual_seed(seed)
    picked = sorted(torch.randperm(total, generator=g)[:samples].tolist())  # folder order kept
    return picked, f"{samples} of {total} images chosen at random (seed {seed})"


#################################################################################
#                                 Streaming                                     #
#################################################################################


def _decoded_batches(images: ImageList, chosen: list[int], size: int, batch_size: int,
                     skipped: list[str], progress: Callable[[int, int], None] | None, start: int = 0
                     ) -> Iterator[tuple[torch.Tensor, list[int], int]]:
    """Batches of ``batch_size`` decodable images as (pixels (N, 3, size, size), indices into paths,
    how many of ``chosen`` are read so far), from ``chosen[start]`` on.

    A bad file is appended to ``skipped`` as "name: reason" and does not stop the run.
    """
    pixels, kept = [], []
    for done, i in enumerate(chosen[start:], start + 1):
        path = images.paths[i]
        try:
            pixels.append(load_pixels(path, size))  # (3, size, size)
            kept.append(i)
        except BadImage as e:
            skipped.append(f"{path.relative_to(images.folder)}: {e}")
        if progress is not None:
            progress(done, len(chosen))
        if len(pixels) == batch_size or (done == len(chosen) and pixels):
            yield torch.stack(pixels), kept, done  # (N, 3, size, size)
            pixels, kept = [], []


def _partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _resumed(out: Path, key: dict) -> tuple[list[torch.Tensor], list[int], list[str], int]:
    """What a stopped run with the same ``key`` kept: (latents, rows, skipped, images read); else nothing."""
    path = _partial_path(out)
    if path.is_file():
        try:
            kept = torch.load(path, weights_only=True)
            if kept["key"] == key:
                return [kept["x0"]], list(kept["rows"]), list(kept["skipped"]), int(kept["read"])
        except Exception:  # damaged, or another version's: start over
            pass
    return [], [], [], 0


def encode_folder(images: str | os.PathLike, vae: str | os.PathLike, out: str | os.PathLike, *, size: int = 256,
                  samples: int | None = None, seed: int = 0, batch_size: int = 16, device: str = "cpu",
                  dtype: str = "float32", force: bool = False, sample: bool = False, class_index: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Encode a folder of images with a local AutoencoderKL and write ``{"x0", "y"?, "meta"}`` to ``out``.

    ``images`` holds class subfolders (labels 0..K-1 in sorted name order) or images only (no labels,
    or all ``class_index``). ``samples`` caps the count with a subset drawn with ``seed``; ``sample``
    draws from the posterior (seeded per image) instead of taking its mean. ``progress(done, total)``
    is called after each image. Returns a summary: path, count, skipped, skipped_examples, chosen, shape.
    """
    out = Path(out).expanduser().absolute()
    _check_flags(size=size, samples=samples, batch_size=batch_size, class_index=class_index)
    torch_dtype = resolve_dtype(dtype)
    torch_device = resolve_device(device)
    _check_out(out, force)
    found = find_images(images, class_index=class_index)
    vae_config = read_config(str(vae))
    _check_size(size, vae_config)
    chosen, how = _choose(found, samples, seed)
    model = open_vae(vae_config, torch_device, torch_dtype)

    key = {"files": [str(found.paths[i]) for i in chosen], "vae": str(vae_config.path), "size": size,
           "sample": sample, "seed": seed, "dtype": dtype, "batch_size": batch_size, "class_index": class_index}
    latents, rows, skipped, read = _resumed(out, key)
    halt = stop.current()
    with halt.deferred("this batch"):  # reading and encoding; checked between batches
        for x, kept, read in _decoded_batches(found, chosen, size, batch_size, skipped, progress, start=read):
            gens = image_generators(seed, list(range(len(rows), len(rows) + len(kept)))) if sample else None
            latents.append(encode(model, vae_config, x, gens))  # (N, C_lat, h, w)
            rows += kept
            if halt.requested and read < len(chosen):  # keep what is encoded for the same command
                kept_so_far = {"key": key, "x0": torch.cat(latents), "rows": rows, "skipped": skipped, "read": read}
                atomic_write(_partial_path(out), lambda f: torch.save(kept_so_far, f))
                halt.check()
    if not rows:
        raise DardiagError(f"every one of the {len(chosen)} images was skipped, so nothing was written "
                           f"(e.g. {'; '.join(skipped[:MAX_EXAMPLES])})")
    x0 = torch.cat(latents)  # (N, C_lat, h, w)
    if not torch.isfinite(x0).all():
        raise DardiagError(f"the latents are not finite (NaN or inf), so nothing was written; the VAE in "
                           f"{vae_config.path} overflows in --dtype {dtype}: try --dtype float32")

    meta = {
        "folder": str(found.folder),
        "files": [str(found.paths[i].relative_to(found.folder)) for i in rows],  # row i of x0 <- files[i]
        "vae": str(vae_config.path),
        "vae_class": vae_config.class_name,
        "scaling_factor": vae_config.scaling_factor,
        "shift_factor": vae_config.shift_factor,
        "size": size,
        "count": len(rows),
        "found": len(found.paths),
        "selection": how,
        "skipped": len(skipped),
        "skipped_examples": skipped[:MAX_EXAMPLES],
        "posterior": "sample" if sample else "mean",
        "seed": seed,
        "dtype": dtype,
        "dardiag_version": __version__,
    }
    data = {"x0": x0.float().contiguous()}
    if found.labels is not None:
        data["y"] = torch.tensor([found.labels[i] for i in rows], dtype=torch.int64)  # (N,)
        if found.class_names is not None:
            meta["class_names"] = list(found.class_names)
        else:
            meta["class_index"] = class_index
    data["meta"] = meta
    atomic_write(out, lambda f: torch.save(data, f), overwrite=force)
    _partial_path(out).unlink(missing_ok=True)
    return {"path": str(out), "count": len(rows), "skipped": len(skipped), "skipped_examples": skipped[:MAX_EXAMPLES],
            "selection": how, "seed": seed, "chosen": len(chosen), "found": len(found.paths), "shape": list(x0.shape),
            "labelled": "y" in data, "classes": len(found.class_names) if found.class_names else None}
