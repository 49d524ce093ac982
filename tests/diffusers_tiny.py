"""Tiny random configs of every diffusers class in dardiag's table: 1-2 blocks per stack, width 16-32,
8x8 latents (video: 3 frames), so that each builds, saves and profiles in about a second.

``TINY[class] = Tiny(config, options)``: ``config`` goes to the class constructor, ``options`` to
``diffusers_subject`` (e.g. a ``frames`` count); ``sample_size`` is written into config.json for
classes whose config has none (the pipelines' default would make the latents large).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

TEXT_TOKENS = 7  # short synthetic captions (never equal to an image token count below)


@dataclass(frozen=True)
class Tiny:
    config: dict
    options: dict = field(default_factory=dict)
    sample_size: int | None = None  # written into config.json when the class's config has none


# image, one token stream (dardiag/adapters/classes/image.py)
IMAGE: dict[str, Tiny] = {
    "DiTTransformer2DModel": Tiny(dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, num_embeds_ada_norm=10)),
    "PixArtTransformer2DModel": Tiny(dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=16, sample_size=8, caption_channels=12)),
    "SanaTransformer2DModel": Tiny(dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=12,
        sample_size=8, patch_size=1)),
}

# image, joint text-image stream (classes/joint.py)
JOINT: dict[str, Tiny] = {
    "SD3Transformer2DModel": Tiny(dict(
        sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=12, caption_projection_dim=16, pooled_projection_dim=10, out_channels=4,
        pos_embed_max_size=8)),
    "FluxTransformer2DModel": Tiny(dict(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=12, pooled_projection_dim=10, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6)), sample_size=8),
    "QwenImageTransformer2DModel": Tiny(dict(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=12, axes_dims_rope=(4, 6, 6)), sample_size=8),
    "AuraFlowTransformer2DModel": Tiny(dict(
        sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=12, caption_projection_dim=16, out_channels=4,
        pos_embed_max_size=16)),
    "BriaTransformer2DModel": Tiny(dict(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=12, axes_dims_rope=(4, 6, 6)), sample_size=8),
    "BriaFiboTransformer2DModel": Tiny(dict(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=12, axes_dims_rope=(4, 6, 6), text_encoder_dim=10), sample_size=8),
    "ChromaTransformer2DModel": Tiny(dict(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=12, axes_dims_rope=(4, 6, 6), approximator_num_channels=8, approximator_hidden_dim=16,
        approximator_layers=1), sample_size=8),
    "CogView3PlusTransformer2DModel": Tiny(dict(
        patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2, out_channels=4,
        text_embed_dim=12, time_embed_dim=8, condition_dim=4, pos_embed_max_size=8, sample_size=8)),
    "CogView4Transformer2DModel": Tiny(dict(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        text_embed_dim=12, time_embed_dim=8, condition_dim=4, pos_embed_max_size=8, sample_size=8,
        rope_axes_dim=(4, 4))),
    "Flux2Transformer2DModel": Tiny(dict(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=12, timestep_guidance_channels=16, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=True),
        sample_size=8),
    "Flux3Transformer2DModel": Tiny(dict(
        in_channels=4, cond_in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=12, timestep_channels=16, axes_dims_rope=(4, 4, 4, 4)),
        sample_size=8),
    "GlmImageTransformer2DModel": Tiny(dict(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        text_embed_dim=12, time_embed_dim=8, condition_dim=4, prior_vq_quantizer_codebook_size=16), sample_size=8),
    "HiDreamImageTransformer2DModel": Tiny(dict(
        patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, caption_channels=[12, 10], text_emb_dim=14, num_routed_experts=2,
        num_activated_experts=1, axes_dims_rope=(8, 4, 4), max_resolution=(8, 8), llama_layers=[0, 1]), sample_size=8),
    "HunyuanImageTransformer2DModel": Tiny(dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=(1, 1), text_embed_dim=12, text_embed_2_dim=10, rope_axes_dim=(4, 4)),
        sample_size=8),
    "Krea2Transformer2DModel": Tiny(dict(
        in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=32, timestep_embed_dim=16, text_hidden_dim=12, num_text_layers=3, text_num_attention_heads=2,
        text_num_key_value_heads=2, text_intermediate_size=16, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
        axes_dims_rope=(4, 6, 6)), sample_size=8),
    "LongCatImageTransformer2DModel": Tiny(dict(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=12, pooled_projection_dim=12, axes_dims_rope=(4, 6, 6)), sample_size=8),
    # dense blocks only: the expert weights are torch.empty (uninitialised) until weights are loaded;
    # mlp_ratio 6: the dense MLP width is rounded down to a multiple of 128
    "NucleusMoEImageTransformer2DModel": Tiny(dict(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        mlp_ratio=6.0, joint_attention_dim=12, axes_dims_rope=(4, 6, 6), dense_moe_strategy="all_dense"),
        sample_size=8),
    "OvisImageTransformer2DModel": Tiny(dict(
        patch_size=1, in_channels=16, out_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=12, axes_dims_rope=(4, 6, 6)), sample_size=8),
    "QwenImage21Transformer2DModel": Tiny(dict(
        patch_size=1, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        context_in_dim=12, axes_dims_rope=(4, 6, 6)), sample_size=8),
    "Ideogram4Transformer2DModel": Tiny(dict(
        in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2, intermediate_size=32, adaln_dim=16,
        llm_features_dim=12, mrope_section=(4, 2, 2)), sample_size=8),
}

# video (classes/video.py)
VIDEO: dict[str, Tiny] = {
    "WanTransformer3DModel": Tiny(dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=12, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32), {"frames": 3}, sample_size=8),
}

# more video classes (classes/video_more.py)
VIDEO_MORE: dict[str, Tiny] = {
}

TINY: dict[str, Tiny] = {**IMAGE, **JOINT, **VIDEO, **VIDEO_MORE}


def build(cls: str, **overrides) -> torch.nn.Module:
    import diffusers

    torch.manual_seed(0)
    return getattr(diffusers, cls)(**{**TINY[cls].config, **overrides}).eval()


def save(model, path, **kw):
    """``save_pretrained``, plus the sample size the tiny tests use where the config has none."""
    model.save_pretrained(path, **kw)
    side = TINY[type(model).__name__].sample_size
    if side is not None:
        cfg = json.loads((path / "config.json").read_text())
        cfg["sample_size"] = side
        (path / "config.json").write_text(json.dumps(cfg))
    return path
