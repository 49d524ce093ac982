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
    # layers the class initialises to zero (gates, output projection), re-drawn with their default init:
    # zero gates make every block the identity and a zero output layer sends no gradient back
    redraw: tuple[str, ...] = ()


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
    # 16 image tokens, padded to 32 by the model (the pad tokens are part of the recorded image stream)
    # sequence-first blocks; zero-initialised modulation and output layers re-drawn
    "ErnieImageTransformer2DModel": Tiny(dict(
        hidden_size=32, num_attention_heads=2, num_layers=2, ffn_hidden_size=64, in_channels=4, out_channels=4,
        patch_size=1, text_in_dim=12, rope_axes_dim=(4, 6, 6)), sample_size=8,
        redraw=("adaLN_modulation.1", "final_linear")),
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

# video (classes/video.py); image-to-video/inpaint variants where the class has them (condition channels)
VIDEO: dict[str, Tiny] = {
    "WanTransformer3DModel": Tiny(dict(  # Wan 2.1 I2V: 4 + 8 condition channels, CLIP image tokens
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=12, out_channels=4,
        text_dim=12, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32, image_dim=10,
        added_kv_proj_dim=16), {"frames": 3}, sample_size=8),
    "AllegroTransformer3DModel": Tiny(dict(
        patch_size=2, patch_size_t=1, num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        num_layers=2, cross_attention_dim=24, caption_channels=12, sample_height=8, sample_width=8,
        sample_frames=3)),
    "CogVideoXTransformer3DModel": Tiny(dict(  # CogVideoX1.5 I2V: temporal patch 2, ofs, rotary
        num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=16,
        ofs_embed_dim=16, text_embed_dim=12, num_layers=2, sample_width=8, sample_height=8, sample_frames=9,
        patch_size=2, patch_size_t=2, max_text_seq_length=7, use_rotary_positional_embeddings=True),
        {"frames": 3}),
    "ConsisIDTransformer3DModel": Tiny(dict(  # face cross-attention keys: 2/3 of the width (48) = LFE_output_dim
        num_attention_heads=3, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=16,
        text_embed_dim=12, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        max_text_seq_length=7, use_rotary_positional_embeddings=True, is_train_face=True, cross_attn_interval=1,
        cross_attn_dim_head=8, cross_attn_num_heads=2, LFE_id_dim=16, LFE_vit_dim=16, LFE_depth=5,
        LFE_dim_head=8, LFE_num_heads=2, LFE_num_id_token=2, LFE_num_querie=4, LFE_output_dim=32,
        LFE_ff_mult=1, LFE_num_scale=5), {"frames": 3}),
    "LTXVideoTransformer3DModel": Tiny(dict(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        num_layers=2, caption_channels=12), {"frames": 3}, sample_size=8),
    "LTX2VideoTransformer3DModel": Tiny(dict(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=2, caption_channels=12), {"frames": 3}, sample_size=8),
    "MochiTransformer3DModel": Tiny(dict(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=16, time_embed_dim=16), {"frames": 3}, sample_size=8),
    "HunyuanVideoTransformer3DModel": Tiny(dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, guidance_embeds=True, text_embed_dim=12,
        pooled_projection_dim=10, rope_axes_dim=(4, 6, 6)), {"frames": 3}, sample_size=8),
    "HunyuanVideo15Transformer3DModel": Tiny(dict(  # text-to-video: 4 + 4 + 1 condition channels zeros
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_refiner_layers=1, text_embed_dim=12, text_embed_2_dim=10, image_embed_dim=14,
        rope_axes_dim=(4, 6, 6)), {"frames": 3}, sample_size=8),
    "HunyuanVideoFramepackTransformer3DModel": Tiny(dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, guidance_embeds=True, text_embed_dim=12,
        pooled_projection_dim=10, rope_axes_dim=(4, 6, 6), has_image_proj=True, image_proj_dim=14,
        has_clean_x_embedder=True), {"frames": 3}, sample_size=8),
    "EasyAnimateTransformer3DModel": Tiny(dict(  # inpaint: 1 mask + 4 masked-video channels
        num_attention_heads=2, attention_head_dim=16, in_channels=9, out_channels=4, patch_size=2,
        sample_width=8, sample_height=8, num_layers=2, mmdit_layers=2, time_embed_dim=16, text_embed_dim=12),
        {"frames": 3}, sample_size=8),
    "CosmosTransformer3DModel": Tiny(dict(  # video2world: 4 + 1 condition-mask channels
        in_channels=5, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2, mlp_ratio=2.0,
        text_embed_dim=12, adaln_lora_dim=8, max_size=(8, 16, 16), patch_size=(1, 2, 2),
        extra_pos_embed_type=None, concat_padding_mask=False), {"frames": 3}, sample_size=8),
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
    # 4 + 4 + 4 input channels (latents, mask, reference latents); CLIP tokens through MLPProj (width 1280)
    "WanAnimate2Transformer3DModel": Tiny(dict(
        patch_size=(1, 2, 2), text_len=8, in_dim=12, dim=16, ffn_dim=32, freq_dim=16, text_dim=12, out_dim=4,
        num_heads=2, num_layers=2), {"frames": 3}, sample_size=8),
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
    # spatial and temporal blocks alternate; video_length = the frames (the temporal embedding has that many rows)
    "LatteTransformer3DModel": Tiny(dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=16, sample_size=8, patch_size=2, caption_channels=12, video_length=3,
        norm_type="ada_norm_single", num_embeds_ada_norm=1000, norm_elementwise_affine=False, norm_eps=1e-6,
        activation_fn="gelu-approximate", attention_bias=True)),
    # block 2 is a softmax block (softmax_every_n); the anchor frame + 2 noisy frames
    "SanaWMTransformer3DModel": Tiny(dict(
        in_channels=4, num_layers=2, hidden_size=32, num_attention_heads=2, linear_head_dim=16, softmax_every_n=2,
        caption_channels=12, mlp_ratio=2.0, chunk_plucker_post_attn_blocks=2), {"frames": 3}, sample_size=8),
    # the sink frame + a chunk of 2 frames
    "SanaWMLTX2RefinerTransformer3DModel": Tiny(dict(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=2, caption_channels=12), {"frames": 3}, sample_size=8),
}

TINY: dict[str, Tiny] = {**IMAGE, **JOINT, **VIDEO, **VIDEO_MORE}


def build(cls: str, **overrides) -> torch.nn.Module:
    import diffusers

    torch.manual_seed(0)
    model = getattr(diffusers, cls)(**{**TINY[cls].config, **overrides}).eval()
    for name in TINY[cls].redraw:
        model.get_submodule(name).reset_parameters()
    return model


def save(model, path, **kw):
    """``save_pretrained``, plus the sample size the tiny tests use where the config has none."""
    model.save_pretrained(path, **kw)
    side = TINY[type(model).__name__].sample_size
    if side is not None:
        cfg = json.loads((path / "config.json").read_text())
        cfg["sample_size"] = side
        (path / "config.json").write_text(json.dumps(cfg))
    return path
