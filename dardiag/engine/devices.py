"""``--device`` for every command: the profiler and the trainer run on CPU and CUDA only.

``auto`` (every command's default) is CUDA when this machine has it, else the CPU; commands say on
their first line which one it became and why (:func:`describe_device`), so a run on the CPU of a GPU
machine is never a surprise.
"""

from __future__ import annotations

import torch

from dardiag.errors import DardiagError

AUTO = "auto"


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch.device: auto, cpu, cuda or cuda:N, and only a CUDA device that exists here."""
    if name == AUTO:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise DardiagError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DardiagError(f"--device {name}: CUDA is not available here; use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DardiagError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device


def device_name(name: str) -> str:
    """``name`` with ``auto`` resolved ("cuda" or "cpu"); any other valid name as given."""
    device = resolve_device(name)  # validates every name
    return str(device) if name == AUTO else name


def describe_device(name: str) -> str:
    """``device cpu (auto: no CUDA here)``: what ``--device name`` became, for a command's first line."""
    device = resolve_device(name)
    if name != AUTO:
        return f"device {device}"
    if device.type == "cuda":
        return f"device cuda (auto: {torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} CUDA device(s))"
    return "device cpu (auto: no CUDA here)"
