"""Activation checkpointing that the recorder can tell apart from a forward pass.

A checkpointed function keeps only its inputs in the forward; the backward runs it again to get the
activations it needs (torch's non-reentrant ``torch.utils.checkpoint``). That second run goes through
the same modules, so forward hooks fire again, on tensors that are not the forward's: a recorder that
took them would count every state twice and attach gradient hooks to tensors no gradient reaches.
:func:`checkpointed` runs the recomputation inside :func:`recomputation`, and the recorder
(``dardiag.hooks.recorder``) ignores whatever fires while :func:`recomputing` is true, so each state is
recorded once per forward and each gradient once, by the hooks attached in the forward itself.

Non-reentrant only: the reentrant variant runs the forward without autograd, so the tensors inside
the checkpointed function would have no gradient to record.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils.checkpoint import checkpoint

_state = threading.local()  # autograd may run a backward on another thread than the forward's


def recomputing() -> bool:
    """True while a checkpointed function is being run again for the backward."""
    return getattr(_state, "again", 0) > 0


def in_checkpoint() -> bool:
    """True while a checkpointed function runs in the forward (a block inside needs no checkpoint of its own)."""
    return getattr(_state, "first", 0) > 0


@contextmanager
def _counting(key: str) -> Iterator[None]:
    setattr(_state, key, getattr(_state, key, 0) + 1)
    try:
        yield
    finally:  # torch stops a recomputation early by raising inside it: the count goes down all the same
        setattr(_state, key, getattr(_state, key) - 1)


def recomputation():
    """The context a checkpointed function runs in again for the backward."""
    return _counting("again")


def _contexts():
    return _counting("first"), recomputation()


def checkpointed(function, *args, **kwargs):
    """``function(*args, **kwargs)``, its activations recomputed in the backward instead of kept."""
    return checkpoint(function, *args, use_reentrant=False, context_fn=_contexts, **kwargs)


def checkpointed_call(module: torch.nn.Module, *args):
    """The ``gradient_checkpointing_func`` diffusers' ``enable_gradient_checkpointing`` takes: the
    module's call (its hooks included), checkpointed as above."""
    return checkpointed(module.__call__, *args)
