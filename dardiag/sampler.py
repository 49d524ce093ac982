"""Deterministic ODE samplers for trained models, and an image grid writer.

- sit, repa: Euler on the velocity field from the family's pure-noise end to its data end (SiT: t = 0
  to 1, REPA: t = 1 to 0), ``steps`` uniform steps in the noise level.
- dit: DDIM with eta = 0 (Song et al. 2021), the deterministic sampler of an epsilon model; it is an
  Euler step of the probability-flow ODE in the (x / sqrt(abar), sqrt(1/abar - 1)) coordinates.
Class-conditional; ``cfg_scale != 1`` mixes in the null class (index ``num_classes``) as in DiT.

Legend: N images, C latent channels, H/W latent side.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dardiag.atomic import atomic_write
from dardiag.engine.config import MAX_SAMPLER_STEPS
from dardiag.errors import DardiagError
from dardiag.families import DIT_FAMILIES, DiTFamily, Family, get_family

# file extension -> PIL format for ``save_grid``: lossless rasters, and JPEG
GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                ".webp": "WEBP"}


def check_sampling(*, steps: int, cfg_scale: float) -> None:
    """The sampler settings, checked before a model is loaded or run."""
    if not 1 <= steps <= MAX_SAMPLER_STEPS:
        raise DardiagError(f"--steps must be between 1 and {MAX_SAMPLER_STEPS}, got {steps}")
    # cfg 0 samples the null class alone (unconditional); below 0 it steers away from the class, which is
    # never what a user asking for class y wants
    if not (math.isfinite(cfg_scale) and cfg_scale >= 0):
        raise DardiagError(f"--cfg must be a finite number >= 0 (1 = off, 0 = unconditional), got {cfg_scale}")


def grid_format(path: str | os.PathLike, *, overwrite: bool = True) -> str:
    """The PIL format ``save_grid`` writes ``path`` in; a one-line error for a path it cannot write."""
    path = Path(path)
    if path.is_dir():
        raise DardiagError(f"{path} is a directory; pass a file name such as {path / 'samples.png'}")
    fmt = GRID_FORMATS.get(path.suffix.lower())
    if fmt is None or not _pil_can_save(fmt):
        accepted = ", ".join(e for e, f in GRID_FORMATS.items() if _pil_can_save(f))
        got = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise DardiagError(f"{path} has {got}; the grid is an image: use one of {accepted}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DardiagError(f"cannot write {path}: {parent} is a file, not a directory; choose another --out")
            break
    if not overwrite and (path.exists() or path.is_symlink()):
        raise DardiagError(f"{path} already exists; pass --force to replace it, or choose another --out")
    return fmt


GRID_SCALE = 4  # save_grid draws each latent pixel as GRID_SCALE x GRID_SCALE image pixels
GRID_PAD = 1


def _max_grid_pixels() -> int:
    """PIL refuses to open images over twice ``Image.MAX_IMAGE_PIXELS`` (and warns over once): a larger
    grid could not be looked at with the library that wrote it."""
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 89_478_485)


# the largest width or height each format can store
MAX_GRID_SIDE = {"JPEG": 65_535, "WEBP": 16_383}


def check_grid(rows: int, per_row: int, side: int, *, fmt: str = "PNG", scale: int = GRID_SCALE,
               what: str = "--n-per-class") -> None:
    """A one-line error, before any sampling, when ``rows`` x ``per_row`` images of ``side`` latent pixels
    make a grid image too large to write in ``fmt`` or to open again (and a batch far too large to sample)."""
    limit, max_side = _max_grid_pixels(), MAX_GRID_SIDE.get(fmt, 2**31 - 1)
    cell = (side + GRID_PAD) * scale
    height = rows * cell + GRID_PAD * scale
    width = per_row * cell + GRID_PAD * scale
    if per_row >= 1 and height * width <= limit and max(width, height) <= max_side:
        return
    fit = max(0, min(limit // max(height, 1), max_side) - GRID_PAD * scale) // cell if height <= max_side else 0
    hint = f"use {what} {fit} or less" if fit >= 1 else "this model has too many classes for one grid"
    why = (f"over the {limit / 1e6:.0f} M pixels PIL will open" if height * width > limit else
           f"over {fmt}'s {max_side}-pixel side limit")
    raise DardiagError(f"{what} {per_row} with {rows} classes makes a {width} x {height} pixel grid, {why}; {hint}")


def _pil_can_save(fmt: str) -> bool:
    from PIL import Image, features

    Image.init()
    return fmt in Image.SAVE and (fmt != "WEBP" or bool(features.check("webp")))


def _predict(model, x, t_native, y, cfg_scale: float, forward=None, i: int = 0):
    """The model's prediction (first C channels), with classifier-free guidance when cfg_scale != 1.
    ``forward(i, x, t, y)``, when given, runs the model instead (step ``i``; a cached or observed forward)."""
    C = x.shape[1]
    t = t_native.expand(x.shape[0])  # (N,)
    run = model if forward is None else (lambda x_, t_, y_: forward(i, x_, t_, y_))
    if cfg_scale == 1.0:
        return run(x, t, y)[:, :C]  # (N, C, H, W)
    null = torch.full_like(y, model.config.num_classes)
    out = run(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))[:, :C]  # (2N, C, H, W)
    cond, uncond = out.chunk(2)
    return uncond + cfg_scale * (cond - uncond)  # (N, C, H, W)


@torch.no_grad()
def sample(model, family: str | Family, y, *, steps: int = 50, cfg_scale: float = 1.0, seed: int = 0,
           forward=None, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Draw one sample per label in ``y`` -> ``(N, C, H, W)`` float32 on the model's device.

    Deterministic: the starting noise comes from a CPU generator seeded with ``seed``. ``forward(i, x,
    t_native, y) -> output``, when given, replaces ``model(x, t_native, y)`` at step ``i`` (0 = the
    noisiest): a cached sampler (``dardiag.savings.schedule``) or an observer (``dardiag.savings.trajectory``).
    ``on_step(i)`` is called after step ``i`` (``dardiag sample`` stops there at a first Ctrl-C).
    """
    fam = get_family(family) if isinstance(family, str) else family
    if fam.name not in DIT_FAMILIES:
        raise DardiagError(f"sampling supports the {', '.join(DIT_FAMILIES)} families, not {fam.name!r}")
    check_sampling(steps=steps, cfg_scale=cfg_scale)
    cfg = model.config
    device = next(model.parameters()).device
    y = torch.as_tensor(y, dtype=torch.long).to(device)  # (N,)
    if y.numel() and (y.min() < 0 or y.max() >= cfg.num_classes):
        raise DardiagError(f"class labels must lie in 0..{cfg.num_classes - 1}")
    if cfg_scale != 1.0 and cfg.class_dropout_prob <= 0:
        raise DardiagError("--cfg needs a model trained with label dropout (it has no null class); use --cfg 1")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(y.shape[0], cfg.in_channels, cfg.input_size, cfg.input_size, generator=g).to(device)  # (N, C, H, W)
    was_training = model.training
    model.eval()
    try:
        if fam.prediction == "epsilon":
            x = _ddim(model, x, y, steps, cfg_scale, forward, on_step)
        else:
            x = _euler_velocity(model, fam, x, y, steps, cfg_scale, forward, on_step)
    finally:
        model.train(was_training)
    return x.float()


def _euler_velocity(model, fam: Family, x, y, steps, cfg_scale, forward=None, on_step=None):
    # native times from pure noise (noise level 1) to data (0): SiT 0 -> 1, REPA 1 -> 0; the velocity is
    # d x_t / d t in native time for both (SiT: x0 - eps, REPA: eps - x0), so one Euler rule serves
    ts = fam.to_native(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)).float().to(x.device)
    for i in range(steps):
        v = _predict(model, x, ts[i : i + 1], y, cfg_scale, forward, i)  # (N, C, H, W)
        x = x + (ts[i + 1] - ts[i]) * v
        if on_step is not None:
            on_step(i)
    return x


def _ddim(model, x, y, steps, cfg_scale, forward=None, on_step=None):
    abar = DiTFamily().alphas_cumprod(x.device)  # (1000,) float64
    # evenly spaced integer timesteps from 999 (noise) down to 0; duplicates appear only if steps > 1000
    ts = torch.unique(torch.linspace(999, 0, min(steps, 1000), device=x.device).round().long()).flip(0)
    for i, t in enumerate(ts):
        eps = _predict(model, x, t.view(1), y, cfg_scale, forward, i)  # (N, C, H, W)
        a_t = abar[t].float()
        a_prev = abar[ts[i + 1]].float() if i + 1 < len(ts) else torch.ones((), device=x.device)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()  # (N, C, H, W)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        if on_step is not None:
            on_step(i)
    return x


def save_grid(x: torch.Tensor, path: str | os.PathLike, *, nrow: int | None = None, scale: int = GRID_SCALE,
              overwrite: bool = True) -> Path:
    """Write images ``(N, C, H, W)`` in [-1, 1] as one image, ``nrow`` per row, each pixel ``scale`` x ``scale``.

    The format follows the extension (``GRID_FORMATS``); the file is replaced atomically, and with
    ``overwrite=False`` an existing ``path`` is an error. C = 3 is drawn as RGB; any other channel count
    shows channel 0 in grey (latents are not images).
    """
    from PIL import Image

    fmt = grid_format(path, overwrite=overwrite)
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() != 4 or x.shape[0] == 0:
        raise DardiagError(f"save_grid needs images [N, C, H, W], got shape {list(x.shape)}")
    x = x if x.shape[1] == 3 else x[:, :1]
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    check_grid(rows, nrow, max(h, w), fmt=fmt, scale=scale, what="nrow")
    pad = GRID_PAD
    grid = torch.zeros(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)  # 0 = mid grey separators
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = x[i]
    img = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H', W', c)
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    image = Image.fromarray(img[..., 0] if c == 1 else img)  # uint8 2-D -> L, (H, W, 3) -> RGB
    try:
        return atomic_write(path, lambda f: image.save(f, format=fmt), overwrite=overwrite)
    except OSError as e:  # permission denied, disk full, read-only file system
        raise DardiagError(f"cannot write {path}: {e.strerror or e}; choose another --out") from None
