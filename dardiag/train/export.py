"""Export a training checkpoint as a small file to ship: float32 EMA weights, config, no optimizer."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dardiag.checkpoints import atomic_save, checkpoint_dict, load_model, read_file
from dardiag.errors import DardiagError


def export(checkpoint: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write ``path``: a dardiag checkpoint holding only the EMA weights (under ``"ema"``).

    ``load_model(path)`` reads it with no flags. The training settings and final loss ride along
    under ``"train"`` (plain values, a few hundred bytes) so the file says how it was made.
    """
    checkpoint, path = Path(checkpoint), Path(path)
    ema, info = load_model(checkpoint, weights="ema")
    if info.file_format != "dardiag":
        raise DardiagError(f"{checkpoint} is not a dardiag training checkpoint; export needs one")
    train = read_file(checkpoint).get("train", {})
    obj = checkpoint_dict(ema.float(), family=info.family, step=info.step)
    obj["ema"] = obj.pop("model")  # one copy of the weights, labelled as what they are
    # no wall-clock time: the same weights then give the same file bytes (and sha256)
    obj["train"] = {k: train[k] for k in ("config", "loss") if k in train}
    atomic_save(obj, path)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # the temp file behind atomic_save is 0600; a file to ship is not private
    torch.load(path, map_location="cpu", weights_only=True)  # prove it reads back safely
    return path
