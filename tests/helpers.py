"""Small builders and references several test modules share (no fixtures: those live in conftest)."""

from __future__ import annotations

import torch

from dardiag.models import DiT, DiTConfig


def randomised_dit(cfg: dict, seed: int, scale: float = 0.1) -> DiT:
    """A DiT whose every trainable parameter got ``scale`` x N(0, 1) added: no zero-initialised branch,
    so every path carries signal and gradient, as in a trained network."""
    torch.manual_seed(seed)
    model = DiT(DiTConfig(**cfg))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def brute_hsic1(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """diagnostics.md section 4 verbatim, on explicit Grams with zeroed diagonals."""
    n = K.shape[0]
    K, L = K.clone(), L.clone()
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    KL = K @ L
    return (torch.trace(KL) + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * KL.sum()) / (n * (n - 3))
