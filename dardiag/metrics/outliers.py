"""Where the magnitude comes from: massive activations, outlier channels and tokens (diagnostics.md §9).

Magnitude inflation can be the bulk of a state growing or a few "massive" channels or token positions
(Sun et al. 2024, "Massive Activations in Large Language Models", arXiv 2402.17762). Everything here
is a sum or a max over images, so a level's statistics stream over minibatches and add up exactly
across processes; the ratios are taken once, at the end:

- ``act_absmax``        = max |z| over images, tokens and channels;
- ``act_kurtosis``      = mean(z^4) / mean(z^2)^2 over all entries, not centred (3 for a Gaussian);
- ``channel_top_share`` = share of sum(z^2) held by the top ceil(d / 100) channels, ranked by their
  sum of z^2 over images and tokens; ``token_top_share`` the same over token positions (top ceil(T / 100));
- per-channel RMS over images and tokens: sqrt(channel sum of z^2 / (N T)).

Dimension letters: N images, T tokens, D channels.
"""

from __future__ import annotations

import math

import torch

__all__ = ["energy_sums", "top_share", "kurtosis", "TOP_FRACTION"]

TOP_FRACTION = 0.01  # "top 1%": ceil(d / 100) channels, ceil(T / 100) token positions


def energy_sums(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The streaming sums of one minibatch of a state ``x`` [N, T, D].

    Returns ``per_token`` [N, T] (each token's sum of x^2 over channels: its RMS is
    ``sqrt(per_token / D)``), ``channel`` [D] and ``token`` [T] (sums of x^2 over the other two axes),
    ``fourth`` (sum of x^4), ``absmax`` (max |x|) and ``count`` (N T D entries). One pass squares ``x``
    in float32 (float64 input stays float64); sums within a minibatch are pairwise float32 sums (a
    relative error near 1e-7), handed back in float64 for the running sums across minibatches.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be [N, T, D], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    x = x if x.dtype == torch.float64 else x.float()  # (N, T, D)
    q = x.square()  # (N, T, D)
    per_token = q.sum(dim=-1)  # (N, T)
    return {
        "per_token": per_token,
        "channel": q.sum(dim=(0, 1)).to(torch.float64),  # (D,)
        "token": per_token.sum(dim=0).to(torch.float64),  # (T,)
        # sum over channels of q^2 = the squared norm of each token's q: no (N, T, D) temporary
        "fourth": torch.linalg.vector_norm(q, dim=-1).square().sum(dtype=torch.float64),  # ()
        "absmax": q.amax().sqrt().to(torch.float64),  # ()
        "count": torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device),  # ()
    }


def top_share(energy: torch.Tensor, fraction: float = TOP_FRACTION) -> float:
    """Share of the total held by the largest ceil(K * fraction) of the K entries of ``energy``.

    NaN when the total is 0 (an all-zero state has no energy to share)."""
    if energy.dim() != 1 or energy.numel() == 0:
        raise ValueError(f"energy must be a non-empty [K] tensor, got shape {tuple(energy.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = math.ceil(energy.numel() * fraction)
    total = float(energy.sum())
    return float(torch.topk(energy, k).values.sum()) / total if total > 0 else float("nan")


def kurtosis(sum2: float, sum4: float, count: float) -> float:
    """mean(x^4) / mean(x^2)^2 from the sums over ``count`` entries (not centred); NaN for a zero state."""
    m2, m4 = float(sum2) / float(count), float(sum4) / float(count)
    return m4 / (m2 * m2) if m2 > 0 else float("nan")
