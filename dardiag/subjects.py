"""A profiled model: the network plus everything the sweep must know to drive and probe it.

The sweep, probe, metrics and store never look inside a model: they see a ``Subject``. Adding a model
kind means writing one function that returns a Subject (our DiT below; diffusers and generic modules
in ``dardiag.adapters``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dardiag.errors import DardiagError
from dardiag.families import Family, get_family
from dardiag.probe.collect import ProbeSpec
from dardiag.probe.recorder import Tap


@dataclass
class Subject:
    name: str  # display name in tables and figures
    model: nn.Module
    family: Family
    spec: ProbeSpec
    routing: str  # "residual", "dar-static_t-c4", ...
    input_shape: tuple[int, int, int]  # (C, H, W) of the latents the model takes
    num_classes: int  # 0 = unconditional / text-conditioned
    call: Callable  # call(model, x_t, t_native, y, cond) -> output (N, >= C, H, W)
    checkpoint: str = ""
    step: int | None = None
    info: dict = field(default_factory=dict)  # detected config, sha256, ...
    # make_cond(N, generator) -> extra conditioning (text embeddings, ...) synthesised per batch
    make_cond: Callable | None = None


def _dit_call(model, x_t, t_native, y, cond):
    return model(x_t, t_native, y)


def dit_subject(model, info, *, name: str | None = None) -> Subject:
    """A Subject for dardiag's ``DiT`` (official DiT/SiT/REPA checkpoints and our own)."""
    layout = model.site_layout()
    taps = [Tap(n.split(".")[-1], n) for n in layout.states + layout.inputs + layout.outputs]
    taps += [Tap(f"alpha_{l}", path) for l, (path, _) in layout.routes.items()]
    cfg = model.config
    spec = ProbeSpec(
        depth=layout.depth,
        taps=tuple(taps),
        has_sublayers=True,
        routes={l: srcs for l, (_, srcs) in layout.routes.items()},
        residual=cfg.routing == "residual",
    )
    return Subject(
        name=name or info.name,
        model=model,
        family=get_family(info.family),
        spec=spec,
        routing=cfg.routing_name,
        input_shape=(cfg.in_channels, cfg.input_size, cfg.input_size),
        num_classes=cfg.num_classes,
        call=_dit_call,
        checkpoint=info.path,
        step=info.step,
        info=info.to_dict(),
    )


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
    from dardiag.checkpoints import load_model

    model, info = load_model(path, family=family, num_heads=num_heads, device=device, input_size=input_size)
    return dit_subject(model, info, name=name)


def as_subject(obj, **kw) -> Subject:
    """Accept a Subject, a (model, ModelInfo) pair, or a path."""
    if isinstance(obj, Subject):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2:
        return dit_subject(obj[0], obj[1], name=kw.get("name"))
    if isinstance(obj, (str, Path)):
        return load_subject(obj, **kw)
    raise DardiagError(f"cannot profile a {type(obj).__name__}; pass a path, (model, info) or a Subject")


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
