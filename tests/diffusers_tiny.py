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
    # 4 blocks: the second half takes the long skips (block 3 reads block 0's output)
    "HunyuanDiT2DModel": Tiny(dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2, sample_size=8, hidden_size=16,
        num_layers=4, cross_attention_dim=16, cross_attention_dim_t5=16, pooled_projection_dim=8, text_len=7,
        text_len_t5=9)),
    "Lumina2Transformer2DModel": Tiny(dict(
        sample_size=8, patch_size=2, in_channels=4, hidden_size=32, num_layers=2, num_refiner_layers=1,
        num_attention_heads=2, num_kv_heads=2, multiple_of=16, axes_dim_rope=(4, 6, 6), axes_lens=(32, 16, 16),
        cap_feat_dim=12)),
    "LuminaNextDiT2DModel": Tiny(dict(
        sample_size=8, patch_size=2, in_channels=4, hidden_size=32, num_layers=2, num_attention_heads=2,
        num_kv_heads=2, multiple_of=16, cross_attention_dim=12)),
    "PRXTransformer2DModel": Tiny(dict(
        in_channels=4, patch_size=2, context_in_dim=12, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=2,
        axes_dim=[8, 8]), sample_size=8),
    # 7 text tokens -> 8 gist tokens; the injection block (layer 1) reads the second bundle
    "BriaFibo2Transformer2DModel": Tiny(dict(
        in_channels=4, patch_size=2, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=12,
        injection_layer_ids=(1,), perceiver_num_layers=1, min_num_gist_tokens=4, max_num_gist_tokens=8,
        gist_step=4, gist_min_text_len=4, gist_max_text_len=16, axes_dims=(4, 6, 6), axes_lens=(16, 16, 16)),
        sample_size=8),
    "OmniGenTransformer2DModel": Tiny(dict(
        in_channels=4, patch_size=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, num_layers=2, pad_token_id=90, vocab_size=100, pos_embed_max_size=16,
        time_step_dim=32, rope_scaling={"short_factor": [1.0] * 8, "long_factor": [1.0] * 8, "type": "su"}),
        sample_size=8),
    # 16 image tokens, padded to 32 by the model (the pad tokens are part of the probed image stream)
    "ZImageTransformer2DModel": Tiny(dict(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, cap_feat_dim=12, axes_dims=[4, 6, 6], axes_lens=[64, 16, 16]), sample_size=8),
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
