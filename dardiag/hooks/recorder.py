"""Forward hooks on named taps, gradients through tensor hooks; everything removed on exit.

A ``Tap`` names a tensor of a model: the output of a module (our DiT's identity sites, or a
diffusers block whose output is a tuple and needs ``pick``), or a module's input (``pre=True``,
e.g. the hidden state entering the first block). Gradients are taken with ``Tensor.register_hook``
on the very tensor the model goes on using, attached from inside the forward hook: this sees
dL/d(tensor) exactly, survives in-place ops and keyword-only calls, and never needs
``register_full_backward_hook``. Hooks return nothing, so recording cannot change any output.

Blocks checkpointed for the backward (``dardiag.hooks.recompute``) run again inside it; hooks that fire
then are ignored, so a state is recorded once per forward and its gradient once, through the tensor
of the forward itself.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch
from torch import nn

from dardiag.hooks.recompute import recomputing


@dataclass(frozen=True)
class Tap:
    name: str  # logical site name: z_k, h_l, v_l, alpha_l
    module: str  # submodule path inside the model
    pick: Callable | None = None  # output -> tensor; for pre taps (args, kwargs) -> tensor
    pre: bool = False  # tap the module's input instead of its output


class Sink(Protocol):
    def on_forward(self, name: str, x: torch.Tensor) -> None: ...

    def on_backward(self, name: str, grad: torch.Tensor) -> None: ...


class Keep:
    """A sink that keeps the latest tensor seen at each tap (detached; no gradients): one forward's states."""

    def __init__(self):
        self.seen: dict[str, torch.Tensor] = {}

    def on_forward(self, name: str, x: torch.Tensor) -> None:
        self.seen[name] = x.detach()

    def on_backward(self, name: str, grad: torch.Tensor) -> None:
        pass  # record(..., grads=False): never called


@contextmanager
def record(model: nn.Module, taps: list[Tap], sink: Sink, *, grads: bool = True) -> Iterator[None]:
    """Inside the block, every forward through a tap calls ``sink.on_forward`` (and, when the tapped
    tensor is part of the autograd graph and ``grads``, later ``sink.on_backward`` with its gradient)."""
    handles = []

    def attach(name: str, x) -> None:
        if recomputing():  # the backward running a checkpointed block again: the forward recorded it
            return
        if not torch.is_tensor(x):
            raise TypeError(f"tap {name} picked a {type(x).__name__}, not a tensor")
        sink.on_forward(name, x)
        if grads and x.requires_grad:
            x.register_hook(lambda g, _name=name: sink.on_backward(_name, g))

    try:
        for tap in taps:
            module = model.get_submodule(tap.module)
            if tap.pre:
                def pre_hook(mod, args, kwargs, _tap=tap):
                    attach(_tap.name, _tap.pick(args, kwargs) if _tap.pick else args[0])

                handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            else:
                def hook(mod, args, output, _tap=tap):
                    attach(_tap.name, _tap.pick(output) if _tap.pick else output)

                handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters need no gradient for activation statistics: skip weight-gradient work, then restore."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
