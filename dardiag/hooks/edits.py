"""Whole-block edits of one forward pass: skip a block (ablation) or reuse its earlier contribution (caching).

A block's *contribution* is what it adds to the computation: in a residual model z_k - z_{k-1} (the sum of
its two gated sublayer outputs), in a DAR model its two sublayer outputs v_{2k-1}, v_{2k} (the sources it
hands every later softmax). Two edits act on it:

* **skip** (``BlockEdit()``): the contribution is removed. Residual: z_k = z_{k-1}. DAR: the block's
  outputs are absent from every later aggregator's softmax, which renormalises over the other sources.
* **reuse** (``BlockEdit(reuse=parts)``): the contribution is the given one (recorded at an earlier
  sampler step) instead of the one computed now. Residual: z_k = z_{k-1} + the stored difference; DAR:
  the stored sublayer outputs become the sources.

``rows=None`` edits the whole batch, and a model that knows its blocks (dardiag's DiT) then does not
compute the block at all: this is what a cached sampler saves. ``rows=slice(a, b)`` edits only those rows
(the others compute as usual): one batched forward then measures the effect of editing a different
block in each slice of rows.

How a model is edited is the model's business (a Subject's :class:`Editing`): dardiag's DiT reads the
edits in its forward (``DiT.edited``); any model with a list of blocks is edited here, by forward hooks
that replace the block-state taps (:func:`tap_editing`).

Legend: N batch, T tokens, D channels.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Sequence

import torch
from torch import nn

from dardiag.hooks.recorder import Tap


@dataclass(frozen=True)
class BlockEdit:
    """What one forward does to one block instead of its own computation (see the module docstring)."""

    reuse: tuple[torch.Tensor, ...] | None = None  # the contribution's parts to use; None: skip the block
    rows: slice | None = None  # rows of the batch it applies to; None: every row (the block is not computed)

    def __post_init__(self):
        if self.rows is not None and self.reuse is None:
            # a DAR source cannot be removed from some rows' softmax only; no measurement needs it
            raise ValueError("a skip edit applies to the whole batch (rows=None)")

    @property
    def skip(self) -> bool:
        return self.reuse is None

    def put(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, T, D) with this edit's rows replaced by part ``j`` of the reused contribution."""
        out = x.clone()
        out[self.rows] = self.reuse[j].to(x.dtype)
        return out


@dataclass(frozen=True)
class Editing:
    """How a Subject's blocks are edited and what their contributions are made of.

    ``edit(edits)``: a context manager inside which every forward applies ``edits`` {block k (1..D):
    BlockEdit}. ``parts(recorded, k)``: block k's contribution, as the tuple a reuse edit takes back,
    from the tensors recorded at the taps ``z_0..z_D`` and ``part_taps`` during a forward without
    edits. ``additive``: the contribution is the sum of its parts (residual: it equals z_k - z_{k-1});
    otherwise the parts side by side (DAR's two sublayer outputs).
    """

    edit: Callable[[dict[int, BlockEdit]], ContextManager]
    parts: Callable[[dict[str, torch.Tensor], int], tuple[torch.Tensor, ...]]
    part_taps: tuple[str, ...] = ()
    additive: bool = True


def contribution(parts: Sequence[torch.Tensor], additive: bool) -> torch.Tensor:
    """One tensor (N, T, D or 2D) for a block's contribution parts: their sum, or side by side."""
    if additive:
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out
    return torch.cat(list(parts), dim=-1)


#################################################################################
#                  Any model with a list of blocks: edit by hooks               #
#################################################################################


def _put_back(output, picked: torch.Tensor, new: torch.Tensor):
    """``output`` with the tensor ``picked`` (taken out of it by a tap) replaced by ``new``."""
    if output is picked:
        return new
    if isinstance(output, tuple):
        for i, o in enumerate(output):
            if o is picked:
                return output[:i] + (new,) + output[i + 1:]
    raise TypeError("cannot put an edited block state back into this block's output; the tap's pick must "
                    "return the output itself or one element of a tuple")


def _difference(recorded: dict[str, torch.Tensor], k: int) -> tuple[torch.Tensor]:
    return (recorded[f"z_{k}"] - recorded[f"z_{k - 1}"],)  # (N, T, D)


def tap_editing(model: nn.Module, taps: Sequence[Tap]) -> Editing:
    """Editing for a model whose state z_k is the output of block k (tap ``z_k``, k = 1..D) and z_0 the
    input of the first block: a forward hook on block k's tap replaces z_k by z_{k-1} (skip) or by
    z_{k-1} + the stored difference (reuse), where z_{k-1} is the state this forward passed on (edited
    or not). The block itself still runs: this edits, it does not save compute. Of a block that returns
    several streams (SD3, Flux) only the image stream is edited.

    Enter ``edit`` before any recording context: hooks run in registration order, and a recorder
    registered after the edits sees the edited states.
    """
    z = {int(t.name.split("_")[1]): t for t in taps if t.name.startswith("z_")}

    @contextmanager
    def edit(edits: dict[int, BlockEdit]) -> Iterator[None]:
        seen: dict[int, torch.Tensor] = {}  # k -> z_k as passed on in the current forward
        handles = []

        def first(state: torch.Tensor) -> None:
            seen.clear()  # a new forward begins
            seen[0] = state

        def post(output, k: int, tap: Tap):
            state = tap.pick(output) if tap.pick else output
            e = edits.get(k)
            if e is None:
                seen[k] = state  # the next block's edit may need it
                return None
            if e.skip:
                new = seen[k - 1]
            elif e.rows is None:
                new = seen[k - 1] + e.reuse[0].to(state.dtype)
            else:
                new = state.clone()
                new[e.rows] = seen[k - 1][e.rows] + e.reuse[0].to(state.dtype)
            seen[k] = new
            return _put_back(output, state, new)

        try:
            t0 = z[0]
            m0 = model.get_submodule(t0.module)
            if t0.pre:
                handles.append(m0.register_forward_pre_hook(
                    lambda m, a, kw: first(t0.pick(a, kw) if t0.pick else a[0]), with_kwargs=True))
            else:
                handles.append(m0.register_forward_hook(lambda m, a, o: first(t0.pick(o) if t0.pick else o)))
            for k in sorted(z)[1:]:
                handles.append(model.get_submodule(z[k].module).register_forward_hook(
                    lambda m, a, o, _k=k: post(o, _k, z[_k])))
            yield
        finally:
            for h in handles:
                h.remove()

    return Editing(edit=edit, parts=_difference, part_taps=(), additive=True)
