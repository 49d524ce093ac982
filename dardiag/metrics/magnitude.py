"""Per-token magnitude and direction of hidden states (diagnostics.md section 3).

The block-level symptoms are means of these per-token values over (image, token):

- ``act_rms``  = ``token_rms(z_k).mean()``
- ``grad_rms`` = ``token_rms(dL/dz_k).mean()`` (L is a mean, so this scales with 1/N; record N)
- ``cos_prev`` = ``token_cosine(z_{k-1}, z_k).mean()``

Dimension letters: N images (batch), T tokens, D channels.
"""

import torch

__all__ = ["token_rms", "token_cosine", "rms_from_energy"]


def _as_float(x: torch.Tensor, name: str) -> torch.Tensor:
    """Check ``x`` is a float [N, T, D] tensor; return it in float32 at least (float64 stays)."""
    if x.dim() != 3:
        raise ValueError(f"{name} must be [N, T, D], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x if x.dtype == torch.float64 else x.float()


def token_rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over channels of every token: sqrt(mean_D x^2) (diagnostics.md section 3).

    Computed in float32 (float64 if ``x`` is float64), also for bf16/fp16 input, on ``x``'s device.
    Returns [N, T].
    """
    x = _as_float(x, "x")  # (N, T, D)
    return x.square().mean(dim=-1).sqrt()  # (N, T)


def rms_from_energy(per_token: torch.Tensor, channels: int) -> torch.Tensor:
    """``token_rms`` from each token's sum of squares over its ``channels`` (as ``energy_sums`` gives it),
    so that a state squared once serves both. Returns [N, T]."""
    return (per_token / channels).sqrt()  # (N, T)


def token_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity of every token of ``a`` with the same token of ``b`` (diagnostics.md section 3).

    cos = <a, b> / max(|a| |b|, eps) over the channel axis, so a zero token gives 0, not NaN.
    Computed in float32 (float64 if either input is float64). Returns [N, T].
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = _as_float(a, "a")  # (N, T, D)
    b = _as_float(b, "b")  # (N, T, D)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    dot = (a * b).sum(dim=-1)  # (N, T)
    norms = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)  # (N, T)
    return dot / norms.clamp_min(eps)  # (N, T)
