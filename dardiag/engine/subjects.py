"""From what a user passes to what the engine profiles: paths, (model, info) pairs and Subjects.

Checkpoint files open through ``dardiag.checkpoints``, diffusers directories through
``dardiag.adapters.diffusers`` (imported only when one is given: diffusers is an optional extra).
Also the names models get in the table: one name per training series, distinct names otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from dardiag.adapters.dit import dit_subject
from dardiag.checkpoints import ModelInfo, load_model
from dardiag.errors import DardiagError
from dardiag.models import DiT
from dardiag.subject import Subject


def load_subject(path, *, family=None, num_heads=None, device="cpu", name=None, input_size=None) -> Subject:
    """Open a checkpoint file (or a diffusers directory) as a Subject.

    ``input_size``: latent side for files that cannot say (no pos_embed; diffusers: else sample_size).
    """
    path = Path(path)
    if path.is_dir() and (path / "config.json").exists():
        try:
            from dardiag.adapters.diffusers import diffusers_subject
        except ImportError:
            raise DardiagError(
                f"{path} is a diffusers model directory; install the extra: pip install 'dardiag[diffusers]'"
            ) from None
        return diffusers_subject(path, device=device, name=name, family=family, latent_size=input_size)
    model, info = load_model(path, family=family, num_heads=num_heads, device=device, input_size=input_size)
    return dit_subject(model, info, name=name)


def as_subject(obj, **kw) -> Subject:
    """Accept a Subject, a (model, ModelInfo) pair, a dardiag ``DiT`` (with ``family``), or a path."""
    if isinstance(obj, Subject):
        return obj
    if isinstance(obj, DiT):
        if kw.get("family") is None:
            raise DardiagError("a DiT in memory cannot say its noise process; pass family='dit', 'sit' or 'repa'")
        return dit_subject(obj, ModelInfo.in_memory(obj, family=kw["family"], name=kw.get("name") or "model"))
    if isinstance(obj, tuple) and len(obj) == 2:
        return dit_subject(obj[0], obj[1], name=kw.get("name"))
    if isinstance(obj, (str, Path)):
        return load_subject(obj, **kw)
    raise DardiagError(f"cannot profile a {type(obj).__name__}; pass a path, a dardiag DiT, (model, info) or a Subject")


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's current parameters and buffers (names, dtypes, shapes, bytes).

    A model handed over in memory may have changed since its file was read (a notebook training it
    between two profiles): only its tensors say which weights a run measured.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
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
