"""Checkpoint files, read strictly and written atomically: ``files`` opens a file safely (the first
bytes decide what it is; a pickle that needs code is refused unrun), ``infer`` reads the architecture
and family off the contents, ``load`` builds dardiag's DiT from them, ``save`` writes dardiag's own
checkpoints, and ``diffusers_dir`` reads diffusers model and pipeline directories."""

from dardiag.checkpoints.files import checked_entries, read_file, read_with_format, sha256_file
from dardiag.checkpoints.infer import infer_config
from dardiag.checkpoints.load import ModelInfo, check_tensors, load_model
from dardiag.checkpoints.save import atomic_save, checkpoint_dict, save_checkpoint

__all__ = [
    "load_model", "ModelInfo", "save_checkpoint", "checkpoint_dict", "atomic_save", "read_file",
    "read_with_format", "sha256_file", "check_tensors", "checked_entries", "infer_config",
]
