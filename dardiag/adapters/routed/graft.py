"""Grafting DAR routing onto a diffusers transformer, in place, keeping its class, weights and names.

``graft(model, entry, spec)`` attaches a ``DepthRouter`` as ``model.dar_routing`` and gives three kinds of
objects a subclass of their own class that adds the routing around the class's own ``forward``:

* the model: its forward opens one routing pass (the timestep it received, its latents);
* each profiled block (``entry``'s stacks, in call order): its image input becomes the routed mixture,
  and the last block's image output the final aggregate (``router.py``); other streams (text, context)
  pass through unchanged;
* sublayer level: the norm before each block's MLP, which routes the MLP's input (``sublayers.py``).

Nothing is renamed: ``state_dict()`` holds the source's keys plus ``dar_routing.*``, so the source's
weight files load into a routed model as they are, and LoRA finds the same linears. The same block
subclass also does gradient checkpointing (``enable_checkpointing``), of the class's own forward only:
the routing around it runs once, so a recomputation in the backward never adds a source twice.

Legend: N batch, T image tokens, D width.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dardiag.adapters.classes.spec import ClassEntry, Stream, patch2d
from dardiag.adapters.generic import first_input, with_first_input
from dardiag.adapters.image_stream import entry_streams, innermost, stream_blocks, through
from dardiag.adapters.routed.router import DepthRouter, Pass
from dardiag.adapters.routed.spec import ROUTER, RoutingSpec
from dardiag.adapters.routed.sublayers import SUBLAYERS, sublayer_refusal
from dardiag.errors import DardiagError
from dardiag.hooks.recorder import Tap
from dardiag.subject import SiteSpec

#################################################################################
#                     The subclasses grafted onto the objects                   #
#################################################################################


class _Grafted(nn.Module):
    """Base of the grafted subclasses; ``_base`` is the class's own class."""

    _base: type = nn.Module


class _RoutedModel(_Grafted):
    """The model: every forward is one routing pass."""

    def forward(self, *args, **kwargs):
        router: DepthRouter = getattr(self, ROUTER)
        arguments = _signature(self._base).bind_partial(self, *args, **kwargs).arguments
        first = next(iter(v for k, v in arguments.items() if k != "self"), None)
        timestep = arguments.get(router.spec.timestep_arg) if router.spec.timestep_arg else None
        before = router.current
        router.current = Pass(timestep, first, router.forced_tokens, router.count_tokens)
        try:
            return super().forward(*args, **kwargs)
        finally:
            router.current = before


class _Block(_Grafted):
    """A block: routed (``_dar`` set) and/or checkpointed (``_checkpointed``) around its class's forward."""

    _dar: tuple | None = None  # ([router], k, stream, last), k = 1..D in call order
    _checkpointed = False

    def forward(self, *args, **kwargs):
        own = super().forward
        if self._dar is None:
            return self._run(own, args, kwargs)
        holder, k, stream, last = self._dar
        router: DepthRouter = holder[0]
        p = router.current
        if p is None:
            raise RuntimeError(f"routed block {k} ran outside its model's forward")
        if not stream.wrapped and not p.image_tokens:  # an image-only (N, T, D) input says T
            p.image_tokens = first_input(args, kwargs).shape[1]
        T = p.tokens() if stream.wrapped else 0
        seen = Stream(part=stream.part, layout=stream.layout)  # the first input: one tensor in the stream's layout
        if router.spec.level == "block":
            args, kwargs = with_first_input(args, kwargs, lambda x: through(x, seen, T, lambda a: router.enter(p, k, a)))
            out = self._run(own, args, kwargs)
            return _with_output(out, stream, T, lambda o: router.leave(p, k, o)) if last else out
        ctx: dict = {}

        def enter(a: torch.Tensor) -> torch.Tensor:
            ctx.update(router.sub_enter(p, k, a))
            return ctx["h"]

        def inner(*a, **kw):  # the MLP norm reads ctx, also when checkpointing runs this again
            before, router.block_ctx = router.block_ctx, ctx
            try:
                return own(*a, **kw)
            finally:
                router.block_ctx = before

        def leave(o: torch.Tensor) -> torch.Tensor:
            final = router.sub_leave(p, ctx, o, last)
            return o if final is None else final

        args, kwargs = with_first_input(args, kwargs, lambda x: through(x, seen, T, enter))
        return _with_output(self._run(inner, args, kwargs), stream, T, leave)

    def _run(self, fn: Callable, args: tuple, kwargs: dict):
        if self._checkpointed and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False, **kwargs)
        return fn(*args, **kwargs)


class _RoutedNorm(_Grafted):
    """Sublayer level: the norm before a block's MLP normalises h_{2k} (the routed mixture) instead of the
    block's own state after its attention (its eps is divided by (2k)^2 at the graft)."""

    _router: list = []

    def forward(self, x):
        return super().forward(self._router[0].sub_mlp(self._router[0].block_ctx, x))


_CLASSES: dict[tuple[type, type], type] = {}


def _patch(obj: nn.Module, mixin: type) -> None:
    """Give ``obj`` the subclass ``mixin`` + its own class (made once per pair)."""
    if isinstance(obj, mixin):
        return
    base = type(obj)
    key = (mixin, base)
    if key not in _CLASSES:
        name = f"{'DAR' if mixin is not _Block else 'Grafted'}{base.__name__}"

        def forward(self, *args, **kwargs):
            return mixin.forward(self, *args, **kwargs)

        # the class's own signature: code that reads it (the class table's adapt functions) reads it unchanged
        forward.__signature__ = inspect.signature(base.forward)
        _CLASSES[key] = type(name, (mixin, base), {"_base": base, "__module__": __name__, "forward": forward})
    obj.__class__ = _CLASSES[key]


_SIGNATURES: dict[type, inspect.Signature] = {}


def _signature(cls: type) -> inspect.Signature:
    if cls not in _SIGNATURES:
        _SIGNATURES[cls] = inspect.signature(cls.forward)
    return _SIGNATURES[cls]


def _with_output(out, stream: Stream, T: int, change: Callable) -> object:
    """A block's output with its image stream's tokens replaced by ``change(them as (N, T, D))``."""
    seen = Stream(part=stream.part, layout=stream.layout)
    if torch.is_tensor(out):
        return through(out, seen, T, change)
    if isinstance(out, (tuple, list)):
        parts = list(out)
        i = stream.index or 0
        parts[i] = through(parts[i], seen, T, change)
        return type(out)(parts)
    raise TypeError(f"a routed block returned a {type(out).__name__}; expected a tensor or a tuple")


#################################################################################
#                                   Grafting                                    #
#################################################################################


def token_counter(model: nn.Module, entry: ClassEntry, raw_config: dict | None = None) -> Callable:
    """(C, [F,] H, W) of one latent -> its image tokens T, as the class table counts them."""
    cfg = {**(raw_config or {}), **dict(model.config)}
    count = entry.tokens or patch2d
    return lambda shape: count(cfg, tuple(shape))


def graft(model: nn.Module, entry: ClassEntry, spec: RoutingSpec, *, count_tokens: Callable | None = None) -> DepthRouter:
    """Route ``model`` (a diffusers transformer of ``entry``'s class) as ``spec`` says, in place; -> its
    router, at the exact start (``DepthRouter.reset_parameters``)."""
    if is_routed(model):
        raise DardiagError(f"this {spec.class_name} is routed already ({router_of(model).spec.name})")
    streams = entry_streams(model, entry)
    blocks = stream_blocks(model, entry, streams)
    if len(blocks) != spec.depth:
        raise DardiagError(f"the routing is for {spec.depth} blocks, the model has {len(blocks)}")
    sub = None
    if spec.level == "sublayer":
        refusal = sublayer_refusal(spec.class_name)
        if refusal:
            raise DardiagError(refusal)
        if any(s.wrapped or s.index not in (None, 0, 1) for _, s in blocks):
            raise DardiagError(f"--level sublayer: {spec.class_name}'s image stream is not one tensor per block")
        sub = SUBLAYERS[spec.class_name]
    ref = next(model.parameters())
    router = DepthRouter(spec).to(ref.device if ref.device.type != "meta" else "cpu", ref.dtype)
    router.count_tokens = count_tokens or token_counter(model, entry)
    model.add_module(ROUTER, router)
    for k, (path, stream) in enumerate(blocks, start=1):
        block = innermost(model.get_submodule(path))
        _patch(block, _Block)
        block._dar = ([router], k, stream, k == spec.depth)
        if sub is not None:  # LN(x / n; eps / n^2) = LN(x; eps): each norm reads n = l sources (router.py)
            _scale_eps(block.get_submodule(sub.attention), 2 * k - 1)
            norm = block.get_submodule(sub.mlp)
            _scale_eps(norm, 2 * k)
            _patch(norm, _RoutedNorm)
            norm._router = [router]
    if sub is not None:
        _scale_eps(model.get_submodule(sub.final), 2 * spec.depth + 1)
    _patch(model, _RoutedModel)
    return router


def _scale_eps(norm: nn.Module, n: int) -> None:
    if not isinstance(getattr(norm, "eps", None), float):
        raise DardiagError(f"--level sublayer: {type(norm).__name__} has no eps to scale; the sublayer table's "
                           "entry for this class is wrong")
    norm.eps = norm.eps / n**2


def enable_checkpointing(model: nn.Module, entry: ClassEntry) -> int:
    """Gradient checkpointing of every profiled block's own forward (routed or not), in training mode;
    -> the number of blocks. diffusers' own switch stays off: it would recompute the routing too."""
    blocks = stream_blocks(model, entry, entry_streams(model, entry))
    for path, _ in blocks:
        block = innermost(model.get_submodule(path))
        _patch(block, _Block)
        block._checkpointed = True
    return len(blocks)


#################################################################################
#                           What the rest of dardiag asks                       #
#################################################################################


def is_routed(model: nn.Module) -> bool:
    return isinstance(getattr(model, ROUTER, None), DepthRouter)


def router_of(model: nn.Module) -> DepthRouter:
    router = getattr(model, ROUTER, None)
    if not isinstance(router, DepthRouter):
        raise DardiagError(f"{type(model).__name__} is not a routed model")
    return router


@contextmanager
def image_tokens(model: nn.Module, T: int) -> Iterator[None]:
    """Inside, the routed ``model``'s forwards take T image tokens (dardiag's call knows them; a caller that
    packs other tokens into the model's latents input, e.g. Ideogram4's pipeline, must say so)."""
    router = router_of(model)
    before, router.forced_tokens = router.forced_tokens, T
    try:
        yield
    finally:
        router.forced_tokens = before


def routed_site_spec(model: nn.Module) -> SiteSpec:
    """The probe sites of a routed model: z_k (z_0 the stream entering block 1, z_k for 0 < k < D the routed
    input of block k+1, z_D the final aggregate), alpha_l, and h_l / v_l at sublayer level."""
    router = router_of(model)
    taps = tuple(Tap(name, f"{ROUTER}.sites.{name}") for name in router.sites)
    return SiteSpec(depth=router.spec.depth, taps=taps, has_sublayers=router.spec.level == "sublayer",
                    routes=dict(router.routes), residual=False)


def routed_call(call: Callable, count_tokens: Callable) -> Callable:
    """A Subject's call for a routed model: the image tokens of the latents are given to its router."""
    def routed(model, x_t, t_native, y, cond):
        with image_tokens(model, int(count_tokens(tuple(x_t.shape[1:])))):
            return call(model, x_t, t_native, y, cond)
    return routed
