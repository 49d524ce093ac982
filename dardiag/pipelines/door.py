"""Where dardiag's call of a class meets its pipeline's: learned at the transformer's door.

dardiag calls a diffusers transformer through its class entry (``dardiag.adapters.classes``): latents in
dardiag's layout (N, C, H, W) or (N, C, F, H, W), the family's native timestep and conditioning under the
entry's names, and the entry builds everything else (2x2 packing, rotary ids, the timestep's scale,
masks). A pipeline calls the same transformer with its own latents layout (packed tokens for Flux-style
classes, frames before channels for CogVideoX, ...), its own timestep scale and keyword names. Instead of a
second table of per-pipeline conventions, dardiag's own call is run with tagged inputs and stopped at the
transformer's door (a forward pre-hook that raises before any block runs, so it costs no compute):

* latents: every element of x carries its own index (as digits in a base the model's dtype holds
  exactly); where the indices arrive in the transformer's input is a gather map between the layouts;
* time: two timesteps give the affine map from the native timestep to the value the transformer gets;
* conditioning and labels: each tensor, drawn at random, is found again by value among the arguments,
  which names the argument each conditioning name travels in.

What a pipeline hands the transformer then reads back in dardiag's terms (:class:`CallMap`): its latents
(``output_type="latent"`` returns the layout the transformer takes), a call's noise level, the
conditioning of a call's rows. A class whose call transforms the latents (scaled, or concatenated with
other channels) has no such map and is refused in one line.

Legend: N batch, E elements of one latent, C channels, F frames, H/W latent side.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from dardiag.errors import DardiagError
from dardiag.subject import Subject

EXACT_INTEGERS = {torch.float32: 2**24, torch.float64: 2**53, torch.bfloat16: 2**8, torch.float16: 2**11}


class AtTheDoor(Exception):
    """Raised by the door hook: the arguments the transformer was about to run with."""

    def __init__(self, arguments: dict):
        super().__init__("stopped at the transformer's door")
        self.arguments = arguments


def bind(model: nn.Module, args: tuple, kwargs: dict) -> dict:
    """The transformer's arguments by name (positional ones bound to the names of its ``forward``)."""
    try:  # the class's forward: an instance's may be replaced while a pipeline call is observed
        bound = inspect.signature(type(model).forward).bind_partial(model, *args, **kwargs)
    except TypeError:  # a forward taking *args only: positions as names
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    out = dict(bound.arguments)
    out.pop(next(iter(out)), None)  # self
    out.update(out.pop("kwargs", {}) if isinstance(out.get("kwargs"), dict) else {})
    return out


@contextmanager
def door(model: nn.Module) -> Iterator[None]:
    """Inside, the first call of ``model`` raises :class:`AtTheDoor` with its arguments, before it runs."""

    def stop(module, args, kwargs):
        raise AtTheDoor(bind(module, args, kwargs))

    handle = model.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def stopped_call(model: nn.Module, fn: Callable[[], object], what: str) -> dict:
    """Run ``fn`` until it calls ``model``; -> the arguments of that call (nothing of the model runs)."""
    with door(model):
        try:
            fn()
        except AtTheDoor as d:
            return d.arguments
    raise DardiagError(f"{what} never called the transformer")


def per_sample(arguments: dict, n: int) -> dict[str, torch.Tensor]:
    """The tensor arguments with one row per sample (first dimension ``n``)."""
    return {k: v for k, v in arguments.items() if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == n}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``b`` (what dardiag passed) arrived as ``a``, up to the cast into ``a``'s dtype."""
    return tuple(a.shape) == tuple(b.shape) and torch.equal(a.float(), b.to(a.dtype).float())


#################################################################################
#                                 The map                                       #
#################################################################################


@dataclass
class CallMap:
    """What dardiag's call of one subject hands its transformer, as a map both ways (module docstring)."""

    shape: tuple[int, ...]  # dardiag's latent shape (C, [F,] H, W) the map holds for
    latents_key: str  # the argument that holds the latents
    door_shape: tuple[int, ...]  # their per-sample shape as the transformer takes them
    gather: torch.Tensor  # (E,) transformer element j = dardiag element gather[j]
    time_key: str | None = None  # the argument that carries time: value = time_a * t_native + time_b
    time_a: float = 1.0
    time_b: float = 0.0
    cond_keys: dict[str, str] = field(default_factory=dict)  # dardiag conditioning name -> argument
    label_key: str | None = None  # the argument of class labels

    def to_subject(self, latents: torch.Tensor) -> torch.Tensor:
        """A pipeline's latents (N, *door_shape) in dardiag's layout (N, *shape)."""
        if tuple(latents.shape[1:]) != self.door_shape:
            raise DardiagError(f"the pipeline's latents have shape {list(latents.shape)}, not [N, "
                               f"{', '.join(map(str, self.door_shape))}] as the transformer takes them")
        flat = latents.reshape(latents.shape[0], -1)  # (N, E)
        x = torch.empty_like(flat)
        x[:, self.gather.to(flat.device)] = flat
        return x.reshape(latents.shape[0], *self.shape)

    def to_pipeline(self, x: torch.Tensor) -> torch.Tensor:
        """dardiag's latents (N, *shape) in the layout the transformer takes (N, *door_shape)."""
        return x.reshape(x.shape[0], -1)[:, self.gather.to(x.device)].reshape(x.shape[0], *self.door_shape)

    def t_native(self, arguments: dict) -> float | None:
        """The native timestep of a call (its first row), or None where the map has no time."""
        value = arguments.get(self.time_key) if self.time_key else None
        if not torch.is_tensor(value) and not isinstance(value, (int, float)):
            return None
        first = float(torch.as_tensor(value).flatten()[0])
        return (first - self.time_b) / self.time_a

    def conditioning(self, arguments: dict, rows: slice) -> dict[str, torch.Tensor]:
        """The rows ``rows`` of a call's conditioning, under dardiag's names (float; masks as they came)."""
        out = {}
        for name, key in self.cond_keys.items():
            value = arguments.get(key)
            if torch.is_tensor(value):
                out[name] = value[rows].detach().cpu()
                out[name] = out[name] if name.endswith("_mask") else out[name].float()
        return out

    def keys_of_rows(self) -> tuple[str, ...]:
        """The arguments that tell one sample's conditioning from another's (branch matching)."""
        keys = [k for n, k in self.cond_keys.items() if not n.endswith("_mask")]
        return tuple(keys + ([self.label_key] if self.label_key else []))


#################################################################################
#                       Learning the map from tagged calls                      #
#################################################################################


def _call(subject: Subject, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cond: dict | None) -> dict:
    return stopped_call(subject.model, lambda: subject.call(subject.model, x, t, y, cond), f"dardiag's call of {subject.name}")


def _probe_cond(subject: Subject, g: torch.Generator) -> dict[str, torch.Tensor]:
    """One sample of random conditioning under every name the subject takes, with a random padding mask
    for each token sequence (found again only where the class's call passes masks)."""
    shapes = getattr(subject.make_cond, "shapes", None) or {}
    cond = {k: torch.randn(1, *s, generator=g) for k, s in shapes.items()}
    for k, s in shapes.items():
        if len(s) == 2 and s[0] >= 2:  # (L, D): a token sequence
            m = torch.rand(1, s[0], generator=g) < 0.5
            m[:, 0] = True
            cond[f"{k}_mask"] = m
    return cond


def _ts(subject: Subject, level: float, device) -> torch.Tensor:
    fam = subject.family
    t = fam.to_native(torch.tensor([level], dtype=torch.float64))
    return (t.round().long() if fam.integer_time else t.float()).to(device)


def _digits(E: int, dtype: torch.dtype) -> tuple[int, int]:
    """(base, passes): element indices 0..E-1 written in ``passes`` digits of ``base``, each exact in ``dtype``."""
    base = EXACT_INTEGERS.get(dtype, 2**8)
    return base, max(1, math.ceil(math.log(max(E, 2)) / math.log(base)))


def latents_argument(subject: Subject, shape: tuple[int, ...] | None = None, device="cpu") -> tuple[str, dict]:
    """-> (the argument that takes the latents, the arguments of a tagged call at ``shape``)."""
    shape = tuple(shape or subject.input_shape)
    E = math.prod(shape)
    idx = torch.arange(E, dtype=torch.float64)
    base, _ = _digits(E, next(subject.model.parameters()).dtype)
    x = (idx % base).float().reshape(1, *shape).to(device)  # (1, C, [F,] H, W): the lowest digit
    g = torch.Generator().manual_seed(0)
    args = _call(subject, x, _ts(subject, 0.5, device), torch.zeros(1, dtype=torch.long, device=device),
                 {k: v.to(device) for k, v in _probe_cond(subject, g).items()} or None)
    want = torch.sort(x.flatten().double()).values
    for key, value in args.items():
        if torch.is_tensor(value) and value.is_floating_point() and value.numel() == E and \
                torch.equal(torch.sort(value.flatten().double()).values.cpu(), want.cpu()):
            return key, args
    raise DardiagError(f"{subject.name}: dardiag's call hands its latents to the transformer changed (scaled, or "
                       "with other channels), so a pipeline's latents cannot be brought to its layout")


def call_map(subject: Subject, shape: tuple[int, ...] | None = None, device="cpu") -> CallMap:
    """The :class:`CallMap` of ``subject`` at latent ``shape`` (default: its own)."""
    shape = tuple(shape or subject.input_shape)
    E = math.prod(shape)
    base, passes = _digits(E, next(subject.model.parameters()).dtype)
    key, first = latents_argument(subject, shape, device)
    idx = torch.arange(E, dtype=torch.float64)
    gather = torch.zeros(E, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    cond = {k: v.to(device) for k, v in _probe_cond(subject, g).items()}
    y0 = torch.zeros(1, dtype=torch.long, device=device)
    t_half = _ts(subject, 0.5, device)
    for p in range(passes):  # gather = sum_p digit_p * base^p, read where each element arrived
        digit = (idx // base**p % base).float().reshape(1, *shape).to(device)
        got = first if p == 0 else _call(subject, digit, t_half, y0, cond or None)
        gather += got[key].flatten().double().cpu() * base**p
    gather = gather.long()
    if not torch.equal(torch.sort(gather).values, torch.arange(E)):
        raise DardiagError(f"{subject.name}: dardiag's call does not hand every latent element to the transformer "
                           "exactly once, so a pipeline's latents cannot be brought to its layout")
    out = CallMap(shape=shape, latents_key=key, door_shape=tuple(first[key].shape[1:]), gather=gather)
    x = torch.zeros(1, *shape, device=device)
    _time(out, subject, x, y0, cond, device)
    out.cond_keys = {n: k for n, v in cond.items() for k, a in first.items() if torch.is_tensor(a) and _same(a, v)}
    if subject.num_classes:
        other = _call(subject, x, t_half, torch.ones(1, dtype=torch.long, device=device), cond or None)
        changed = [k for k, a in first.items() if torch.is_tensor(a) and torch.is_tensor(other.get(k))
                   and a.shape == other[k].shape and not torch.equal(a, other[k]) and k != key]
        out.label_key = changed[0] if len(changed) == 1 else None
    return out


def _time(out: CallMap, subject: Subject, x, y, cond, device) -> None:
    """The argument that carries time and its affine map, from calls at three noise levels."""
    levels = (0.25, 0.75, 0.5)
    ts = [_ts(subject, lv, device) for lv in levels]
    calls = [_call(subject, x, t, y, cond or None) for t in ts]
    varying = [k for k, a in calls[0].items() if torch.is_tensor(a) and torch.is_tensor(calls[1].get(k))
               and a.shape == calls[1][k].shape and not torch.equal(a, calls[1][k])]
    key = "timestep" if "timestep" in varying else (varying[0] if len(varying) == 1 else None)
    if key is None:
        return
    (t1, t2, t3), (v1, v2, v3) = ([float(t[0]) for t in ts], [float(c[key].flatten()[0]) for c in calls])
    if t1 == t2:
        return
    a = (v2 - v1) / (t2 - t1)
    b = v1 - a * t1
    if a == 0 or abs(a * t3 + b - v3) > 1e-4 * max(1.0, abs(v3)):  # not affine: no noise level from it
        return
    out.time_key, out.time_a, out.time_b = key, a, b


def solve_shape(subject: Subject, door_shape: tuple[int, ...], hints: list[tuple[int, ...]] = (),
                device="cpu") -> tuple[int, ...]:
    """dardiag's latent shape whose call hands the transformer latents of per-sample ``door_shape`` (what
    a pipeline's latents are): the subject's own, ``door_shape`` itself (the same layout), it with the
    channel axis moved first (frames-first video), a square of the right size (packed tokens), or a hint
    (sizes a user asked the pipeline for)."""
    own = tuple(subject.input_shape)
    C, E = own[0], math.prod(door_shape)
    candidates = [own, *hints, tuple(door_shape)]
    for i, s in enumerate(door_shape):
        if s == C and i > 0:  # (F, C, H, W) -> (C, F, H, W)
            candidates.append((C, *door_shape[:i], *door_shape[i + 1:]))
    side = math.isqrt(E // C) if E % C == 0 else 0
    if len(own) == 3 and side * side * C == E:
        candidates.append((C, side, side))
    if len(own) == 4 and E % C == 0:  # video: the subject's frames, a square frame
        rest = E // C // own[1] if (E // C) % own[1] == 0 else 0
        s2 = math.isqrt(rest)
        if s2 * s2 == rest and rest:
            candidates.append((C, own[1], s2, s2))
    tried = []
    for shape in dict.fromkeys(c for c in candidates if len(c) == len(own) and math.prod(c) == E and c[0] == C):
        tried.append(shape)
        try:
            key, args = latents_argument(subject, shape, device)
        except Exception:  # noqa: BLE001 - a size the call cannot take is not the one
            continue
        if tuple(args[key].shape[1:]) == tuple(door_shape):
            return shape
    raise DardiagError(f"{subject.name}: the pipeline's latents [N, {', '.join(map(str, door_shape))}] match no "
                       f"latent shape dardiag's call takes (tried {', '.join(str(list(c)) for c in tried) or 'none'}); "
                       "pass --height and --width (and --num-frames) to the pipeline explicitly")
