"""One unit of the sweep: all minibatches of one noise level through one model, into a collector.

For each minibatch: forward with the recorder's hooks -> backward of the family's simple loss ->
streaming sums (``dardiag.engine.collector``). ``dardiag.engine.sweep`` decides which units run, where
their rows go and when to stop; this module only measures.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from dardiag.engine import distributed
from dardiag.engine.collector import LevelCollector
from dardiag.engine.config import Analyses
from dardiag.engine.inputs import Inputs, minibatches, noisy_batch
from dardiag.engine.memory import checkpointing
from dardiag.errors import DardiagError
from dardiag.hooks.recorder import frozen_parameters, record
from dardiag.subject import Subject


def run_level(subject: Subject, inputs: Inputs, t_native: float, *, batch_size: int, analyses: Analyses,
              device, dtype=torch.float32, batches: Sequence[slice] | None = None,
              resume: tuple[LevelCollector, int] | None = None,
              on_batch: Callable[[LevelCollector, int, slice], None] | None = None,
              checkpoint: bool = False) -> LevelCollector:
    """All minibatches of one noise level through one model; returns the filled collector.

    ``resume=(collector, k)`` continues a level whose first k minibatches that collector holds;
    ``on_batch(collector, k, slice)`` is called after the k-th minibatch (progress, stopping);
    ``checkpoint``: every block recomputed in the backward (``dardiag.engine.memory``), the same table.
    A model sharded over processes (``--shard``) gathers its weights inside every pass, so each process
    runs as many passes as the one with the most minibatches: the extra one repeats a minibatch of its
    own and keeps nothing of it.
    """
    model = subject.model
    col, skip = resume if resume is not None else (LevelCollector(subject.spec, analyses, device), 0)
    mine = list(batches if batches is not None else minibatches(inputs.count, batch_size))
    sharded = distributed.is_sharded(model) and distributed.is_distributed()
    rounds = distributed.max_over_ranks(len(mine)) if sharded else len(mine)
    _ = inputs.x0  # generated inputs are drawn here, before any hook is attached
    with frozen_parameters(model), checkpointing(subject, checkpoint), distributed.peers(sharded):
        with record(model, list(subject.spec.taps), col):
            for k, sl in enumerate(mine, 1):
                if k <= skip:
                    continue
                losses = _pass(subject, inputs, sl, t_native, device, dtype, begin=col.begin_batch)
                col.end_batch(losses)
                if on_batch is not None:
                    on_batch(col, k, sl)
        for _ in range(rounds - len(mine)):  # outside the recorder: nothing of it is kept
            _pass(subject, inputs, mine[-1] if mine else slice(0, min(batch_size, inputs.count)), t_native, device,
                  dtype)
    return col


def _pass(subject: Subject, inputs: Inputs, sl: slice, t_native: float, device, dtype, begin=None) -> torch.Tensor:
    """Forward and backward of one minibatch -> each image's loss (N,); ``begin(x_t, ids)`` before the forward."""
    model, fam = subject.model, subject.family
    x0, noise, y, t, x_t = noisy_batch(inputs, sl, t_native, fam, device)  # x_t (N, C, [F,] H, W)
    x_t.requires_grad_(True)  # leaf: gradients flow to activations
    ids = torch.arange(sl.start, sl.stop)
    if begin is not None:
        begin(x_t, ids)
    cond = subject.make_cond(x0.shape[0], ids) if subject.make_cond else None
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
        out = subject.call(model, x_t, t, y, cond)  # (N, C_out, H, W)
    losses = fam.loss_per_image(out, x0, noise, t)  # (N,)
    loss = losses.mean()  # the family's simple loss; each image's own value feeds the standard error
    if not torch.isfinite(loss):
        raise DardiagError(
            f"{subject.name}: the loss is not finite at t={t_native:g} (NaN/inf in weights or "
            "inputs?); check the checkpoint with `dardiag inspect`"
        )
    loss.backward()
    return losses
