"""What the engine does with the Subjects it is given (it opens none: ``dardiag.adapters.open`` does):
identify weights handed over in memory, and name models in the table, one name per training series
and distinct names otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from dardiag.subject import Subject


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's current parameters and buffers (names, dtypes, shapes, bytes).

    A model handed over in memory may have changed since its file was read (a notebook training it
    between two profiles): only its tensors say which weights a run measured.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if hasattr(t, "full_tensor"):  # sharded over processes (--shard): every process gathers the whole tensor
            t = t.full_tensor()
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def name_series(subjects: list[Subject]) -> None:
    """Checkpoints of one training run share one model name, its directory's, so that tables and
    figures follow the run over ``step`` (as ``dardiag train --profile-every`` writes it): files in the
    same directory, of the same architecture, routing and family, each with its own step."""
    groups: dict[tuple, list[Subject]] = {}
    for s in subjects:
        if s.step is None or not s.checkpoint or not Path(s.checkpoint).is_file():
            continue
        arch = json.dumps(s.info.get("config"), sort_keys=True, default=str)
        key = (str(Path(s.checkpoint).resolve().parent), s.routing, s.family.name, arch)
        groups.setdefault(key, []).append(s)
    for (folder, *_), members in groups.items():
        steps = [s.step for s in members]
        if len(members) > 1 and len(set(steps)) == len(steps):
            for s in members:
                s.name = Path(folder).name or "series"


def unique_names(subjects: list[Subject]) -> None:
    """Give models with the same display name distinct names (e.g. two 'last' checkpoints); a series
    from :func:`name_series` (one name, distinct steps) keeps its name."""
    seen: dict[str, int] = {}
    steps: dict[str, set] = {}
    for s in subjects:
        seen[s.name] = seen.get(s.name, 0) + 1
        steps.setdefault(s.name, set()).add(s.step)
    for name, count in seen.items():
        if count > 1 and None not in steps[name] and len(steps[name]) == count:
            seen[name] = 1
    if all(c == 1 for c in seen.values()):
        return
    for s in subjects:
        if seen[s.name] > 1:
            parent = Path(s.checkpoint).parent.name if s.checkpoint else ""
            s.name = f"{parent}/{s.name}" if parent else s.name
    keys = [(s.name, s.step) for s in subjects]
    if len(set(keys)) != len(keys):
        for i, s in enumerate(subjects):
            s.name = f"{s.name}#{i}"
