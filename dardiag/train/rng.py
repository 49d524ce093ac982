"""Every random draw of a training run is a pure function of (seed, stream, index).

Data order depends on (seed, epoch), timesteps, noise and label dropout on (seed, step). So a run
resumed at step s draws exactly what the uninterrupted run drew at step s, with no generator state to
save, and no stream can shift another (adding profiling, say, leaves training's draws unchanged).
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = {"init": 0, "order": 1, "batch": 2, "dropout": 3, "probe": 4, "sample": 5}


def seed_for(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed from numpy's SeedSequence hash of (seed, stream, index): well mixed, not seed+index."""
    state = np.random.SeedSequence([seed, STREAMS[stream], index]).generate_state(2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) >> 1


def generator(seed: int, stream: str, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for(seed, stream, index))


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> torch.Tensor:
    """Indices of step ``step``'s batch: a fresh permutation per epoch, read as one endless stream."""
    pos = torch.arange(step * batch_size, (step + 1) * batch_size)  # (B,) positions in the stream
    epochs, within = pos // n, pos % n
    idx = torch.empty(batch_size, dtype=torch.long)
    for e in epochs.unique().tolist():
        perm = torch.randperm(n, generator=generator(seed, "order", e))  # (n,)
        sel = epochs == e
        idx[sel] = perm[within[sel]]
    return idx  # (B,)
