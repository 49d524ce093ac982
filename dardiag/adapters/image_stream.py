"""The image tokens of a block's input or output, whatever the class's stream layout (``Stream``).

A block's image stream may share its tensor with text tokens (a joint sequence, image first or last),
or hold its tokens sequence-first or folded into the batch. ``through(x, stream, T, change)`` hands the
T image tokens of ``x`` to ``change`` as (N, T, D) and puts what it returns back in their place, the
rest of ``x`` unchanged. The taps see image tokens this way (``ImagePart``), and DAR routing rewrites
them (``dardiag.adapters.routed``).

Legend: N batch, S tokens of a joint sequence, T image tokens, D width.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from dardiag.adapters.classes.spec import ClassEntry, Stream, from_tokens, to_tokens
from dardiag.adapters.generic import resolve_blocks


def through(x: torch.Tensor, stream: Stream, T: int, change: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``x`` in ``stream``'s layout with its image tokens replaced by ``change(image tokens as (N, T, D))``."""
    if stream.part is None:  # image tokens only, batch-first or in a folded or sequence-first layout
        if stream.layout == "batch":
            return change(x)
        return from_tokens(change(to_tokens(x, stream.layout, T)), stream.layout, x.shape)
    dim, S = stream.token_dim, x.shape[stream.token_dim]  # S: image + other tokens of a sample
    head = stream.part == "head"
    image = x.narrow(dim, 0 if head else S - T, T)
    rest = x.narrow(dim, T, S - T) if head else x.narrow(dim, 0, S - T)
    image = from_tokens(change(to_tokens(image, stream.layout, T)), stream.layout, image.shape)  # seen as (N, T, D)
    return torch.cat([image, rest] if head else [rest, image], dim=dim)


def image_of(x: torch.Tensor, stream: Stream, T: int) -> torch.Tensor:
    """The image tokens of ``x`` as (N, T, D), without changing anything."""
    seen = []
    through(x, stream, T, lambda z: seen.append(z) or z)
    return seen[0]


def entry_streams(model: nn.Module, entry: ClassEntry) -> dict[str, Stream]:
    """Stack path -> where the image stream is in its blocks' outputs (the entry's, adapted to the model)."""
    streams = {s.path: s.stream for s in entry.stacks}
    if entry.adapt is not None:
        streams.update(entry.adapt(model))
    return streams


def stream_blocks(model: nn.Module, entry: ClassEntry, streams: dict[str, Stream]) -> list[tuple[str, Stream]]:
    """(block path, its stream) in call order: stack after stack, or alternating (``entry.interleaved``,
    as the model zips its stacks). ``streams``: stack path -> Stream (the entry's, adapted to the model)."""
    stacks = [[(p, streams[s.path]) for p in resolve_blocks(model, s.path)] for s in entry.stacks]
    if entry.interleaved:
        return [b for turn in zip(*stacks) for b in turn]
    return [b for blocks in stacks for b in blocks]


def innermost(block: nn.Module) -> nn.Module:
    """The class's own block inside dardiag's probe wrappers (modules marked ``wraps_block``)."""
    while getattr(block, "wraps_block", False):
        block = block.block
    return block
