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
}

# video (classes/video.py)
VIDEO: dict[str, Tiny] = {
    "WanTransformer3DModel": Tiny(dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=12, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32), {"frames": 3}, sample_size=8),
}

# more video classes (classes/video_more.py)
WAN_TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                text_dim=12, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32)
VIDEO_MORE: dict[str, Tiny] = {
    "SkyReelsV2Transformer3DModel": Tiny(dict(WAN_TINY, inject_sample_info=True), {"frames": 3}, sample_size=8),
    "WanVACETransformer3DModel": Tiny(dict(WAN_TINY, vace_layers=[0], vace_in_channels=12), {"frames": 3},
                                      sample_size=8),
    # an image-to-video config: 4 + 4 + 4 input channels, CLIP image tokens through added K/V projections
    "ChronoEditTransformer3DModel": Tiny(dict(WAN_TINY, in_channels=12, image_dim=10, added_kv_proj_dim=16),
                                         {"frames": 3}, sample_size=8),
    "WanAnimateTransformer3DModel": Tiny(dict(
        WAN_TINY, in_channels=12, latent_channels=4, image_dim=10, added_kv_proj_dim=16, motion_encoder_size=8,
        motion_style_dim=16, motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
        inject_face_latents_blocks=1, motion_encoder_channel_sizes={"8": 8, "4": 8}), {"frames": 3}, sample_size=8),
    "AnyFlowTransformer3DModel": Tiny(dict(WAN_TINY), {"frames": 3}, sample_size=8),
    "AnyFlowFARTransformer3DModel": Tiny(dict(WAN_TINY, chunk_partition=(1, 2)), {"frames": 3}, sample_size=8),
    "Kandinsky5Transformer3DModel": Tiny(dict(
        in_visual_dim=4, in_text_dim=12, in_text_dim2=10, time_dim=16, out_visual_dim=4, model_dim=16, ff_dim=32,
        num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 2, 2), visual_cond=True), {"frames": 3}, sample_size=8),
    "Kandinsky6Transformer3DModel": Tiny(dict(
        in_visual_dim=4, out_visual_dim=4, in_text_dim=12, in_text_dim2=10, time_dim=16, model_dim=16, ff_dim=32,
        num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 2, 2), in_audio_dim=6, out_audio_dim=6,
        text_token_padding=True, ca_rope=True, cross_gates=True, fix_modulation=True), {"frames": 3}, sample_size=8),
    "Kandinsky6SRTransformer3DModel": Tiny(dict(
        in_visual_dim=4, out_visual_dim=4, time_dim=16, model_dim=16, ff_dim=32, num_visual_blocks=2,
        axes_dims=(4, 2, 2), nabla_window=(3, 3, 3)), {"frames": 3}, sample_size=8),
    "MotifVideoTransformer3DModel": Tiny(dict(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1, num_single_layers=2,
        num_decoder_layers=1, patch_size=2, text_embed_dim=12, rope_axes_dim=(2, 2, 4),
        enable_text_cross_attention_dual=True, enable_text_cross_attention_single=True), {"frames": 3}, sample_size=8),
    "SanaVideoTransformer3DModel": Tiny(dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=12,
        rope_max_seq_len=32), {"frames": 3, "input_size": 8}),
    "HeliosTransformer3DModel": Tiny(dict(
        {k: v for k, v in WAN_TINY.items() if k != "rope_max_seq_len"}, rope_dim=(4, 2, 2)), {"frames": 3}, sample_size=8),
    "JoyImageEditTransformer3DModel": Tiny(dict(
        patch_size=[1, 2, 2], in_channels=4, hidden_size=16, num_attention_heads=2, text_dim=12, num_layers=2,
        rope_dim_list=[2, 2, 4]), sample_size=8),
    "JoyImageEditPlusTransformer3DModel": Tiny(dict(
        patch_size=[1, 2, 2], in_channels=4, hidden_size=16, num_attention_heads=2, text_dim=12, num_layers=2,
        rope_dim_list=[2, 2, 4]), sample_size=8),
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
