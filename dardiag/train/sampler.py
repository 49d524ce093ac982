"""Deterministic ODE samplers for trained models, and a PNG grid writer.

- sit: Euler on the velocity field from t = 0 (noise) to t = 1 (data), ``steps`` uniform steps.
- dit: DDIM with eta = 0 (Song et al. 2021), the deterministic sampler of an epsilon model; it is an
  Euler step of the probability-flow ODE in the (x / sqrt(abar), sqrt(1/abar - 1)) coordinates.
Class-conditional; ``cfg_scale != 1`` mixes in the null class (index ``num_classes``) as in DiT.

Legend: N images, C latent channels, H/W latent side.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from dardiag.errors import DardiagError
from dardiag.families import DiTFamily, Family, get_family

SAMPLE_FAMILIES = ("sit", "dit")


def _predict(model, x, t_native, y, cfg_scale: float):
    """The model's prediction (first C channels), with classifier-free guidance when cfg_scale != 1."""
    C = x.shape[1]
    t = t_native.expand(x.shape[0])  # (N,)
    if cfg_scale == 1.0:
        return model(x, t, y)[:, :C]  # (N, C, H, W)
    null = torch.full_like(y, model.config.num_classes)
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))[:, :C]  # (2N, C, H, W)
    cond, uncond = out.chunk(2)
    return uncond + cfg_scale * (cond - uncond)  # (N, C, H, W)


@torch.no_grad()
def sample(model, family: str | Family, y, *, steps: int = 50, cfg_scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Draw one sample per label in ``y`` -> ``(N, C, H, W)`` float32 on the model's device.

    Deterministic: the starting noise comes from a CPU generator seeded with ``seed``.
    """
    fam = get_family(family) if isinstance(family, str) else family
    if fam.name not in SAMPLE_FAMILIES:
        raise DardiagError(f"sampling supports the {' and '.join(SAMPLE_FAMILIES)} families, not {fam.name!r}")
    if steps < 1:
        raise DardiagError(f"--steps must be at least 1, got {steps}")
    cfg = model.config
    device = next(model.parameters()).device
    y = torch.as_tensor(y, dtype=torch.long).to(device)  # (N,)
    if y.numel() and (y.min() < 0 or y.max() >= cfg.num_classes):
        raise DardiagError(f"class labels must lie in 0..{cfg.num_classes - 1}")
    if cfg_scale != 1.0 and cfg.class_dropout_prob <= 0:
        raise DardiagError("--cfg needs a model trained with label dropout (it has no null class); use --cfg 1")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(y.shape[0], cfg.in_channels, cfg.input_size, cfg.input_size, generator=g).to(device)  # (N, C, H, W)
    was_training = model.training
    model.eval()
    try:
        if fam.name == "sit":
            x = _euler_velocity(model, x, y, steps, cfg_scale)
        else:
            x = _ddim(model, x, y, steps, cfg_scale)
    finally:
        model.train(was_training)
    return x.float()


def _euler_velocity(model, x, y, steps, cfg_scale):
    ts = torch.linspace(0.0, 1.0, steps + 1, device=x.device)  # 0 = noise, 1 = data
    for i in range(steps):
        v = _predict(model, x, ts[i : i + 1], y, cfg_scale)  # (N, C, H, W), velocity x0 - eps
        x = x + (ts[i + 1] - ts[i]) * v
    return x


def _ddim(model, x, y, steps, cfg_scale):
    abar = DiTFamily.alphas_cumprod(x.device)  # (1000,) float64
    # evenly spaced integer timesteps from 999 (noise) down to 0; duplicates appear only if steps > 1000
    ts = torch.unique(torch.linspace(999, 0, min(steps, 1000), device=x.device).round().long()).flip(0)
    for i, t in enumerate(ts):
        eps = _predict(model, x, t.view(1), y, cfg_scale)  # (N, C, H, W)
        a_t = abar[t].float()
        a_prev = abar[ts[i + 1]].float() if i + 1 < len(ts) else torch.ones((), device=x.device)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()  # (N, C, H, W)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def save_grid(x: torch.Tensor, path: str | os.PathLike, *, nrow: int | None = None, scale: int = 4) -> Path:
    """Write images ``(N, C, H, W)`` in [-1, 1] as one PNG, ``nrow`` per row, each pixel ``scale`` x ``scale``.

    C = 3 is drawn as RGB; any other channel count shows channel 0 in grey (latents are not images).
    """
    from PIL import Image

    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() != 4 or x.shape[0] == 0:
        raise DardiagError(f"save_grid needs images [N, C, H, W], got shape {list(x.shape)}")
    x = x if x.shape[1] == 3 else x[:, :1]
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    pad = 1
    grid = torch.zeros(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)  # 0 = mid grey separators
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = x[i]
    img = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H', W', c)
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img[..., 0] if c == 1 else img).save(path)  # uint8 2-D -> L, (H, W, 3) -> RGB
    return path
