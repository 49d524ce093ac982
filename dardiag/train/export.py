"""Export a training checkpoint as a small file to ship: float32 EMA weights, config, no optimizer."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dardiag.atomic import atomic_write
from dardiag.checkpoints import checkpoint_dict, load_model, read_file
from dardiag.checkpoints.save import check_torch_name
from dardiag.errors import DardiagError
from dardiag.runs.lifecycle import check_writable
from dardiag.train.outdir import is_written_by_training


def check_target(path: Path, out: Path, *, overwrite: bool, init: Path | None = None) -> None:
    """Refuse, before any work, an export onto a file the training run in ``out`` writes (its
    ``last.pt`` would no longer resume), onto the ``--init`` file it starts from, onto an existing file
    without ``overwrite``, or into a place that cannot be written."""
    check_torch_name(path, "--export")
    if init is not None and path.exists() and Path(init).exists() and path.resolve() == Path(init).resolve():
        raise DardiagError(f"--export {path} is the --init checkpoint the run starts from (--force does not "
                           "replace it); choose another file for the export")
    if is_written_by_training(out, path):
        raise DardiagError(f"--export {path} is a file the training run in {out} writes; "
                           f"choose another name, such as {out / 'ema.pt'}")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        if not overwrite:
            raise DardiagError(f"--export {path} already exists; choose another file, or delete it first "
                               "(--force also replaces it, but starts the training run over)")
    check_writable(path, "--export", directory=False)


def export(checkpoint: str | os.PathLike, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``path``: a dardiag checkpoint holding only the EMA weights (under ``"ema"``).

    ``load_model(path)`` reads it with no flags. The training settings and final loss ride along
    under ``"train"`` (plain values, a few hundred bytes) so the file says how it was made. The file
    appears atomically; with ``overwrite=False`` an existing ``path`` is an error, and a file of the
    training run that ``checkpoint`` belongs to (its ``last.pt``, ``ckpt_*.pt``, ...) is always refused.
    """
    checkpoint, path = Path(checkpoint), Path(path)
    if is_written_by_training(checkpoint.parent, path) or (path.exists() and path.resolve() == checkpoint.resolve()):
        raise DardiagError(f"cannot export onto {path}: it is a file of the training run in {checkpoint.parent}; "
                           "choose another name")
    ema, info = load_model(checkpoint, weights="ema")
    if info.file_format != "dardiag":
        raise DardiagError(f"{checkpoint} is not a dardiag training checkpoint; export needs one")
    train = read_file(checkpoint).get("train", {})
    obj = checkpoint_dict(ema.float(), family=info.family, step=info.step)
    obj["ema"] = obj.pop("model")  # one copy of the weights, labelled as what they are
    # no wall-clock time: the same weights then give the same file bytes (and sha256)
    obj["train"] = {k: train[k] for k in ("config", "loss") if k in train}
    atomic_write(path, lambda f: torch.save(obj, f), overwrite=overwrite)  # readable 0666 & ~umask, as shipped
    torch.load(path, map_location="cpu", weights_only=True)  # prove it reads back safely
    return path
