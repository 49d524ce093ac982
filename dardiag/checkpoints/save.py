"""Writing dardiag's own checkpoints: the model config embedded, so ``load_model`` needs no flags."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dardiag import __version__
from dardiag.atomic import atomic_write
from dardiag.errors import DardiagError
from dardiag.families import DIT_FAMILIES
from dardiag.models.dit import DiT

FORMAT_VERSION = 1


def check_torch_name(path: str | os.PathLike, flag: str) -> None:
    """A file dardiag writes with torch.save may not be named ``.safetensors``: that format cannot hold a
    checkpoint's config, and readers (torch >= 2.13 among them) would take the name at its word."""
    if Path(path).suffix.lower() == ".safetensors":
        raise DardiagError(f"{flag} {path}: dardiag writes this file in torch.save's format (weights with their "
                           f"config), not safetensors; name it {Path(path).with_suffix('.pt').name}")


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then rename over it."""
    atomic_write(path, lambda f: torch.save(obj, f))


def checkpoint_dict(model: DiT, *, family: str, ema: DiT | None = None, step: int | None = None,
                    extra: dict | None = None) -> dict:
    """A dardiag checkpoint: full config embedded, so ``load_model`` needs no flags."""
    if family not in DIT_FAMILIES:
        raise ValueError(f"family must be one of {DIT_FAMILIES}")
    meta = {"format": FORMAT_VERSION, "config": model.config.to_dict(), "family": family,
            "step": step, "version": __version__}
    obj = {"dardiag": meta, "model": model.state_dict()}
    if ema is not None:
        obj["ema"] = ema.state_dict()
    obj.update(extra or {})
    return obj


def save_checkpoint(path, model: DiT, *, family: str, ema: DiT | None = None, step: int | None = None,
                    extra: dict | None = None) -> None:
    atomic_save(checkpoint_dict(model, family=family, ema=ema, step=step, extra=extra), path)
