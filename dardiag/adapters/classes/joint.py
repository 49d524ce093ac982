"""Image transformers with a joint text-image stream (MMDiT): double-stream blocks, then, in some
classes, single-stream blocks over the concatenated sequence. ``z_k`` is the image stream after
every block of every stack, in call order (diagnostics.md §2).

Flow classes take sigma x 1000 (``flow1000``), or sigma in [0, 1] which the forward below passes as
``t / 1000``; the call of each follows its diffusers pipeline.
"""

from __future__ import annotations

import inspect

import torch

from dardiag.adapters.classes.spec import (
    SECOND, TAIL, ClassEntry, Stack, cfg_get, full, grid_ids, pack2x2, patch2d, sigma, text, text_pooled, unpack2x2,
)

FLUX_GUIDANCE = 3.5  # FluxPipeline's default guidance scale for guidance-distilled (dev) configs


def _packed_tokens(cfg, shape):
    return (shape[-2] // 2) * (shape[-1] // 2)


def _packed_latent(cfg):
    # Flux-style configs count packed channels and carry no sample size: 128 (1024 px) is the default
    side = cfg_get(cfg, "sample_size", default=128)
    return (cfg["in_channels"] // 4, side, side)


def _sd3(m, x, t, y, cond):
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"],
             pooled_projections=cond["pooled_projections"], timestep=t).sample  # (N, C, H, W)


def _flux(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    guidance = full(N, FLUX_GUIDANCE, x) if m.config.guidance_embeds else None
    out = m(
        pack2x2(x),  # (N, T, 4C)
        encoder_hidden_states=ehs,
        pooled_projections=cond["pooled_projections"],
        timestep=sigma(t, x),  # Flux scales sigma by 1000 inside
        img_ids=grid_ids(H // 2, W // 2, device=x.device),  # (T, 3)
        txt_ids=torch.zeros(ehs.shape[1], 3, device=x.device),  # (L, 3)
        guidance=guidance,
    ).sample  # (N, T, 4C)
    return unpack2x2(out, H, W)  # (N, C, H, W)


def _flux_fixed(cfg, shape):
    words = "txt_ids zeros, img_ids (0, row, column) as in FluxPipeline"
    return words + (f", guidance {FLUX_GUIDANCE:g}" if cfg.get("guidance_embeds") else "")


def _flux_streams(model):
    singles = model.single_transformer_blocks
    if len(singles) and "encoder_hidden_states" not in inspect.signature(type(singles[0]).forward).parameters:
        return {"single_transformer_blocks": TAIL}  # diffusers < 0.35: [text; image] as one tensor
    return {}


def _qwen(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    out = m(
        pack2x2(x),  # (N, T, 4C)
        encoder_hidden_states=ehs,
        encoder_hidden_states_mask=torch.ones(ehs.shape[:2], device=x.device, dtype=torch.long),
        timestep=sigma(t, x),
        img_shapes=[[(1, H // 2, W // 2)]] * N,
        guidance=full(N, 1.0, x) if m.config.guidance_embeds else None,
    ).sample  # (N, T, 4C)
    return unpack2x2(out, H, W)


ENTRIES = (
    ClassEntry(
        "SD3Transformer2DModel", (Stack("transformer_blocks", SECOND),), "flow1000", _sd3,
        cond=text_pooled(("joint_attention_dim",)), tokens=patch2d, text_tokens=77 + 256),
    ClassEntry(
        "FluxTransformer2DModel",
        (Stack("transformer_blocks", SECOND), Stack("single_transformer_blocks", SECOND)), "flow1000", _flux,
        cond=text_pooled(("joint_attention_dim",)), tokens=_packed_tokens, latent=_packed_latent,
        text_tokens=512, fixed=_flux_fixed, adapt=_flux_streams),
    ClassEntry(
        "QwenImageTransformer2DModel", (Stack("transformer_blocks", SECOND),), "flow1000", _qwen,
        cond=text("encoder_hidden_states", ("joint_attention_dim",)), tokens=_packed_tokens,
        latent=_packed_latent, text_tokens=512,
        fixed=lambda cfg, shape: "img_shapes (1, H/2, W/2), all-valid text mask"),
)
