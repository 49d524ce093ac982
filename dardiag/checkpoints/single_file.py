"""Single original checkpoint files (the Flux, SD3.5, Wan ``.safetensors`` as released) through
diffusers' single-file loader."""

from __future__ import annotations

from pathlib import Path

from dardiag.errors import DardiagError


def single_file_model(path: Path, *, config: str | None = None, dtype=None, device="cpu"):
    raise DardiagError(f"{path}: single original files are not readable yet; pass a diffusers model folder")
