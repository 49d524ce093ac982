"""Checkpoint files, read strictly: ``files`` opens a file safely (the first bytes decide what it is;
a pickle that needs code is refused unrun), ``load`` interprets it as a DiT/SiT/REPA model and writes
dardiag's own checkpoints. Diffusers directories are read by ``dardiag.adapters.diffusers``."""

from dardiag.checkpoints.files import read_file, read_with_format, sha256_file
from dardiag.checkpoints.load import (
    ModelInfo,
    atomic_save,
    check_tensors,
    checked_entries,
    checkpoint_dict,
    infer_config,
    load_model,
    save_checkpoint,
)

__all__ = [
    "load_model", "ModelInfo", "save_checkpoint", "checkpoint_dict", "atomic_save", "read_file",
    "read_with_format", "sha256_file", "check_tensors", "checked_entries", "infer_config",
]
