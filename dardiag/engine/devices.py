"""``--device`` for every command: the profiler and the trainer run on CPU and CUDA only."""

from __future__ import annotations

import torch

from dardiag.errors import DardiagError


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch.device: cpu, cuda or cuda:N, and only a CUDA device that exists here."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise DardiagError(f"unknown --device {name!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DardiagError(f"--device {name}: CUDA is not available here; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DardiagError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device
