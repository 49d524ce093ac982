"""How much a tensor moved: the relative change between two versions of it, per image.

Feature caching (FORA, Delta-DiT, TeaCache) decides from exactly this signal whether a block's output
may be reused at the next sampler step; ablation asks how much the prediction moves without a block.
Both are ratios of Frobenius norms over everything but the image axis.

Dimension letters: N images (batch); any further axes are flattened.
"""

import torch

__all__ = ["relative_change"]


def relative_change(new: torch.Tensor, old: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``||new - old|| / max(||old||, eps)`` per image (N,), norms over all non-batch axes, float64.

    Two zero tensors give 0, not NaN (a zero-initialised block's contribution does not move).
    """
    if new.shape != old.shape:
        raise ValueError(f"new and old must have the same shape, got {tuple(new.shape)} and {tuple(old.shape)}")
    if new.dim() < 1 or new.shape[0] == 0:
        raise ValueError(f"expected a batch [N, ...] of N >= 1, got shape {tuple(new.shape)}")
    a, b = new.detach().double().flatten(1), old.detach().double().flatten(1)  # (N, F)
    return (a - b).norm(dim=1) / b.norm(dim=1).clamp_min(eps)  # (N,)
