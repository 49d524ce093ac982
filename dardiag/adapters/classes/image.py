"""Image transformers with one token stream: text enters by cross-attention or not at all.

DiT/PixArt follow DDPM (epsilon, learned sigma); the flow models take sigma x 1000 (``flow1000``).
Entries: shared/design/checkpoints.md, "diffusers transformers"; the call of each follows its
diffusers pipeline.
"""

from __future__ import annotations

import torch

from dardiag.adapters.classes.spec import ClassEntry, Stack, cfg_get, patch2d, text

VAE_FACTOR = 8  # pixels per latent side in the SD / PixArt / Sana-free VAEs


def _dit(m, x, t, y, cond):
    return m(x, timestep=t, class_labels=y).sample  # (N, C_out, H, W)


def _pixart_fixed(cfg, shape):
    if not cfg.get("use_additional_conditions", cfg.get("sample_size", 0) == 128):
        return "added_cond_kwargs resolution/aspect_ratio None (unused by this config)"
    C, H, W = shape
    return f"resolution {H * VAE_FACTOR}x{W * VAE_FACTOR} px, aspect ratio {H / W:g}"


def _pixart(m, x, t, y, cond):
    N, _, H, W = x.shape
    added = {"resolution": None, "aspect_ratio": None}
    if m.use_additional_conditions:
        added = {
            "resolution": torch.tensor([[H * VAE_FACTOR, W * VAE_FACTOR]], dtype=x.dtype,
                                       device=x.device).expand(N, 2),  # (N, 2) pixels
            "aspect_ratio": torch.full((N, 1), H / W, dtype=x.dtype, device=x.device),
        }
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"], timestep=t,
             added_cond_kwargs=added).sample  # (N, C_out, H, W)


def _sana(m, x, t, y, cond):
    guidance = None
    if m.config.guidance_embeds:  # Sana-Sprint: guidance scale 4.5 as its pipeline's default
        guidance = torch.full((x.shape[0],), 4.5, device=x.device, dtype=x.dtype)
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"], timestep=t, guidance=guidance).sample


ENTRIES = (
    ClassEntry(
        "DiTTransformer2DModel", (Stack("transformer_blocks"),), "dit", _dit,
        tokens=patch2d, classes=lambda cfg: int(cfg["num_embeds_ada_norm"])),
    ClassEntry(
        "PixArtTransformer2DModel", (Stack("transformer_blocks"),), "dit", _pixart,
        cond=text("encoder_hidden_states", ("caption_channels", "cross_attention_dim")),
        tokens=patch2d, text_tokens=120, fixed=_pixart_fixed),
    ClassEntry(
        "SanaTransformer2DModel", (Stack("transformer_blocks"),), "flow1000", _sana,
        cond=text("encoder_hidden_states", ("caption_channels",)), tokens=patch2d, text_tokens=300,
        fixed=lambda cfg, shape: "guidance 4.5" if cfg_get(cfg, "guidance_embeds") else ""),
)
