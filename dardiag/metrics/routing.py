"""Routing maps: DAR source weights and counterfactual source importance (diagnostics.md section 5).

Dimension letters: S sources, N images, T tokens, D channels.
"""

from typing import Sequence

import torch

__all__ = ["route_weights", "route_entropy", "source_importance"]


def _check_alpha(alpha: torch.Tensor, atol: float) -> torch.Tensor:
    """Check alpha is [S, N, T], non-negative and sums to 1 over S; return it in float32 at least."""
    if alpha.dim() != 3:
        raise ValueError(f"alpha must be [S, N, T], got shape {tuple(alpha.shape)}")
    if not alpha.is_floating_point():
        raise ValueError(f"alpha must be a floating-point tensor, got {alpha.dtype}")
    alpha = alpha if alpha.dtype == torch.float64 else alpha.float()  # (S, N, T)
    bad = (alpha < 0).any() | ((alpha.sum(dim=0) - 1).abs() > atol).any()
    if bad:
        raise ValueError(f"alpha must be non-negative and sum to 1 over sources (dim 0, atol {atol})")
    return alpha


def route_weights(alpha: torch.Tensor, atol: float = 1e-3, *, per_image: bool = False) -> torch.Tensor:
    """The DAR routing weight of every source averaged over images and tokens: [S] float64 (section 5);
    ``per_image=True``: averaged over each image's tokens only, [S, N]."""
    alpha = _check_alpha(alpha, atol)  # (S, N, T)
    a = alpha.to(torch.float64)
    return a.mean(dim=2) if per_image else a.mean(dim=(1, 2))  # (S, N) or (S,)


def route_entropy(alpha: torch.Tensor, atol: float = 1e-3, *, per_image: bool = False) -> torch.Tensor:
    """Shannon entropy in nats of the weights over S sources, averaged over (N, T); 0 log 0 = 0.

    ``alpha`` is [S, N, T] with sum over dim 0 equal to 1 (checked to ``atol``). Uniform weights give
    log(S), one-hot weights 0. Returns a 0-d tensor (float32, or float64 for float64 input), or with
    ``per_image=True`` each image's mean over its tokens, [N].
    """
    alpha = _check_alpha(alpha, atol)  # (S, N, T)
    entropy = -torch.special.xlogy(alpha, alpha).sum(dim=0)  # (N, T)
    return entropy.mean(dim=1) if per_image else entropy.mean()


def source_importance(grad_h: torch.Tensor, sources: Sequence[torch.Tensor], *, per_image: bool = False) -> torch.Tensor:
    """Counterfactual reliance of one sublayer on each earlier source (diagnostics.md section 5).

    With a gate g_i = 1 on every source in the sublayer's branch input h = sum_i g_i v_i,
    dL/dg_i = <dL/dh, v_i>. Here: sum over tokens and channels of grad_h * v_i, averaged over
    images, for each source; ``per_image=True`` returns every image's own sum instead, [S, N].
    ``grad_h`` [N, T, D] must be the gradient through the sublayer's own branch only. Products and
    their sum over a token's channels in float32 (pairwise: a relative error near 1e-7), the sum over
    tokens in float64: the profiler calls this for every (sublayer, source) pair of every minibatch, and
    converting each source to float64 first cost 5x the time (DiT-S). Returns [S] (or [S, N]) float64.
    """
    if grad_h.dim() != 3:
        raise ValueError(f"grad_h must be [N, T, D], got shape {tuple(grad_h.shape)}")
    if len(sources) == 0:
        raise ValueError("sources must hold at least one tensor")
    N = grad_h.shape[0]
    g = grad_h if grad_h.dtype == torch.float64 else grad_h.float()  # (N, T, D)
    out = torch.empty(len(sources), N, dtype=torch.float64, device=grad_h.device)  # (S, N)
    for i, v in enumerate(sources):
        if v.shape != grad_h.shape:
            raise ValueError(f"source {i} has shape {tuple(v.shape)}, expected {tuple(grad_h.shape)}")
        per_token = (g * v.to(device=g.device, dtype=g.dtype)).sum(dim=-1)  # (N, T)
        out[i] = per_token.to(torch.float64).sum(dim=1)
    return out if per_image else out.mean(dim=1)
