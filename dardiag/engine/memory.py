"""The levers for a backward that does not fit: checkpointed blocks, and weights sharded over processes.

With ``--checkpoint-blocks`` each block of a Subject (``Subject.blocks``) is run again in the backward
instead of keeping its activations (``dardiag.hooks.recompute``: torch's non-reentrant checkpoint,
whose recomputation the recorder ignores, so the table is the plain one). A model that checkpoints
itself is asked to, as diffusers' ``enable_gradient_checkpointing()`` asks (dardiag's DiT answers the
same call, sublayer by sublayer, so that its routing stays outside); every block that such a model
does not run through its own checkpointing, and every block of a model that has none, is
checkpointed here, by its module's forward. Without the flag the cost line decides
(:func:`resolve`): on when the plain backward would not fit the free memory.

With ``--shard`` under torchrun the weights are sharded over the processes as they are loaded
(``dardiag.checkpoints.sharded``: FSDP2, each block its own unit) and each process measures its share
of the minibatches, as without it. FSDP2 gathers a unit's weights inside its forward and backward,
so every process must run as many passes as the others: a process with one minibatch fewer runs a
last one whose statistics it does not keep (``dardiag.engine.level``).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from dardiag.engine import cost, distributed
from dardiag.engine.config import ProfileConfig
from dardiag.errors import DardiagError
from dardiag.hooks.recompute import checkpointed, checkpointed_call, in_checkpoint, recomputing
from dardiag.subject import Subject


def _guarded(forward: Callable) -> Callable:
    """A block's forward, checkpointed unless it already runs inside a checkpointed call (the model's
    own checkpointing) or a recomputation."""
    def run(*args, **kwargs):
        if not torch.is_grad_enabled() or in_checkpoint() or recomputing():
            return forward(*args, **kwargs)
        return checkpointed(forward, *args, **kwargs)
    return run


@contextmanager
def _own_checkpointing(model: nn.Module) -> Iterator[None]:
    if not (getattr(model, "_supports_gradient_checkpointing", False)
            and hasattr(model, "enable_gradient_checkpointing")):
        yield
        return
    model.enable_gradient_checkpointing(checkpointed_call)
    try:
        yield
    finally:
        model.disable_gradient_checkpointing()


@contextmanager
def _patched(module: nn.Module) -> Iterator[None]:
    own = module.__dict__.get("forward")  # an instance-level forward (accelerate's hooks, ...) is kept
    module.forward = _guarded(module.forward)
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


def _every_block(model: nn.Module) -> bool:
    """The model's own checkpointing covers every block (dardiag's DiT): no block is wrapped here."""
    return bool(getattr(model, "checkpoints_every_block", False))


def _check_blocks(subject: Subject) -> None:
    if not subject.blocks and not _every_block(subject.model):
        raise DardiagError(f"{subject.name}: dardiag does not know this model's blocks, so --checkpoint-blocks "
                           "cannot recompute them; profile it without --checkpoint-blocks")


@contextmanager
def checkpointing(subject: Subject, on: bool = True) -> Iterator[None]:
    """Inside, every block of ``subject`` is recomputed in the backward (nothing changes when ``on`` is false)."""
    if not on:
        yield
        return
    model = subject.model
    _check_blocks(subject)
    with ExitStack() as stack:
        stack.enter_context(_own_checkpointing(model))
        if not _every_block(model):
            for path in subject.blocks:
                stack.enter_context(_patched(model.get_submodule(path)))
        yield


def resolve(plans: Sequence, config: ProfileConfig, device,
            report: Callable[[str], None] | None = None) -> ProfileConfig:
    """``config`` with ``checkpoint_blocks`` decided: as asked, or (None) on when the plain backward of a
    model exceeds the free memory and off otherwise, said to ``report``; rank 0 decides for every process."""
    if config.checkpoint_blocks:
        for p in plans:
            _check_blocks(p.subject)
    if config.checkpoint_blocks is not None:
        return config
    over = [c for c in (cost.estimate(p, config.replace(checkpoint_blocks=False), device) for p in plans)
            if not c.fits()]
    can = all(p.subject.blocks or _every_block(p.subject.model) for p in plans)
    on = bool(distributed.broadcast_object(bool(over) and can))
    if on and over and report is not None:
        c = over[0]
        need, free = c.work_bytes / cost.GiB, c.free_bytes / cost.GiB
        report(f"checkpointing every block in the backward: {c.model} would need ~{need:.1f} GiB besides its "
               f"weights without it, more than the {free:.1f} GiB free; the table is the same "
               "(--no-checkpoint-blocks keeps every activation)")
    return config.replace(checkpoint_blocks=on)


def check_shard(config: ProfileConfig) -> None:
    """``--shard``, before anything is read: under torchrun with 2 or more processes, and only the analyses
    whose passes every process runs alike (the ablation and the trajectory split their own passes unevenly)."""
    if distributed.world_size() < 2:
        raise DardiagError("--shard spreads the weights over torchrun's processes: start the command with "
                           "torchrun --nproc-per-node N (N >= 2), e.g. torchrun --nproc-per-node 2 -m dardiag "
                           "profile MODEL --shard")
    for name in ("ablation", "trajectory"):
        if getattr(config.analyses, name):
            raise DardiagError(f"--{name} is not available with --shard yet; profile --{name} without --shard")
