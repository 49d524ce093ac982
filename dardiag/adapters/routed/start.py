"""What a conversion measures on the source model: its first call, and the start gap.

``first_call`` runs a Subject's call up to its model's first block and stops there (no block is
computed): the timestep the model's forward receives at noise levels 0 and 1 (static_t's query reads
the noise level off it) and the width of the image stream entering the first block. ``check_batch``
and ``outputs`` give the fixed batch both models see; the gap itself is ``dardiag.convert.StartGap``.

Legend: N batch, C latent channels, F frames, H/W latent side, D width.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from dardiag.adapters.generic import first_input
from dardiag.adapters.image_stream import entry_streams, innermost, stream_blocks
from dardiag.errors import DardiagError
from dardiag.subject import Subject

TIMESTEP_ARGS = ("timestep", "timesteps", "t")  # what diffusers transformers call it


class _Reached(Exception):
    """The first block was reached: stop the call."""


@dataclass(frozen=True)
class FirstCall:
    dim: int  # width of the image stream entering the first block
    timestep_arg: str | None
    t_clean: float  # the timestep argument per sample at noise level 0 (its noisiest entry per sample)
    t_noise: float  # ... and at noise level 1


def _per_sample(t, noisier: bool) -> float:
    t = torch.as_tensor(t).detach().float().cpu()
    t = t.reshape(t.shape[0] if t.dim() else 1, -1)
    return float((t.amax(1) if noisier else t.amin(1))[0])


@contextmanager
def _stop_at_first_block(model, block, seen: dict, arg: str | None) -> Iterator[None]:
    sig = inspect.signature(type(model).forward)

    def at_model(mod, args, kwargs):  # every call of the model (an extra pass before the profiled one too)
        if arg is not None:
            seen["timestep"] = sig.bind_partial(mod, *args, **kwargs).arguments.get(arg)

    def at_block(mod, args, kwargs):
        seen["x"] = first_input(args, kwargs)
        raise _Reached

    handles = [model.register_forward_pre_hook(at_model, with_kwargs=True),
               block.register_forward_pre_hook(at_block, with_kwargs=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def first_call(subject: Subject, entry) -> FirstCall:
    """Run ``subject``'s call on one zero latent at noise levels 0 and 1 up to its first block."""
    model = subject.model
    params = inspect.signature(type(model).forward).parameters
    arg = next((a for a in TIMESTEP_ARGS if a in params), None)
    path = stream_blocks(model, entry, entry_streams(model, entry))[0][0]
    block = innermost(model.get_submodule(path))
    found = {}
    for level in (0.0, 1.0):
        seen: dict = {}
        t = subject.family.to_native(torch.full((1,), level, dtype=torch.float64))
        t = t.long() if subject.family.integer_time else t.float()
        x = torch.zeros(1, *subject.input_shape)
        cond = subject.make_cond(1, torch.arange(1)) if subject.make_cond else None
        try:
            with _stop_at_first_block(model, block, seen, arg), torch.no_grad():
                subject.call(model, x, t, torch.zeros(1, dtype=torch.long), cond)
        except _Reached:
            pass
        if "x" not in seen:
            raise DardiagError(f"{subject.name}: its call never reached its first block ({path}); the class table's "
                               "stacks for this class are wrong")
        found[level] = seen
    dim = int(found[0.0]["x"].shape[-1])
    t0, t1 = found[0.0].get("timestep"), found[1.0].get("timestep")
    if t0 is None or t1 is None:
        return FirstCall(dim, None, 0.0, 1.0)
    up = _per_sample(t1, True) >= _per_sample(t0, True)  # the timestep grows with the noise level
    return FirstCall(dim, arg, _per_sample(t0, up), _per_sample(t1, up))


def check_batch(subject: Subject, n: int, seed: int) -> dict:
    """``n`` inputs at noise levels spread over [0, 1] (both ends), seeded: x0, noise, t, y, conditioning."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, *subject.input_shape)
    x0 = torch.randn(shape, generator=g)  # (N, C, [F,] H, W)
    noise = torch.randn(shape, generator=g)
    levels = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.full((1,), 0.5, dtype=torch.float64)
    t = subject.family.to_native(levels)
    t = t.long() if subject.family.integer_time else t.float()  # (N,)
    y = torch.randint(0, subject.num_classes, (n,), generator=g) if subject.num_classes else torch.zeros(n, dtype=torch.long)
    cond = subject.make_cond(n, torch.arange(n)) if subject.make_cond else None
    return {"x0": x0, "noise": noise, "t": t, "y": y, "cond": cond}


@torch.no_grad()
def outputs(subject: Subject, batch: dict) -> torch.Tensor:
    """The subject's prediction on ``batch`` (eval mode, on the model's device), (N, C_out, [F,] H, W)."""
    model = subject.model
    p = next(model.parameters())
    x_t = subject.family.corrupt(batch["x0"], batch["noise"], batch["t"]).to(p.device)
    cond = {k: v.to(p.device) for k, v in batch["cond"].items()} if batch["cond"] else None
    was = model.training
    model.eval()
    try:
        return subject.call(model, x_t, batch["t"].to(p.device), batch["y"].to(p.device), cond).float().cpu()
    finally:
        model.train(was)
