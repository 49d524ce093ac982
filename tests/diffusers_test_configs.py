"""The tiny model configurations that diffusers' own test suite builds its transformer classes with
(tests/models/transformers/test_models_*.py of huggingface/diffusers, the ``init_dict`` of each tester
class), transcribed as data: configurations nobody on this project chose, so that a trial over them
shows how dardiag meets models as users bring them (issue 32).

``CONFIGS[name] = Case(cls, config)``: ``name`` is the tester class it comes from (one class can have
several: text-to-video and image-to-video variants), ``config`` the constructor arguments as the test
file writes them. ``expect`` is what dardiag should do with the class: "profile" (a DiT-style class of
the table) or "refused" (not a DiT over image or video latents: audio, priors, UNet parts, packed
multi-modal sequences, refused by name). ``heavy``: a configuration too large for the fast suite (its
test file builds a part at full width); the trial runs it, the tests plan it on the meta device only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    cls: str
    config: dict
    expect: str = "profile"
    heavy: bool = False


_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
            text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
_HUNYUAN_VIDEO = dict(out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=1,
                      num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=16, pooled_projection_dim=8,
                      rope_axes_dim=(2, 4, 4))
_FLUX_LIKE = dict(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=32)
_SD3 = dict(sample_size=32, patch_size=1, in_channels=4, num_layers=4, attention_head_dim=8, num_attention_heads=4,
            caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
            pos_embed_max_size=96)
_COGVIDEOX = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
                  text_embed_dim=8, num_layers=2, sample_width=8, sample_height=8, sample_frames=8, patch_size=2,
                  temporal_compression_ratio=4, max_text_seq_length=8)
_COSMOS = dict(out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2, mlp_ratio=2,
               text_embed_dim=16, adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2),
               rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=True, extra_pos_embed_type="learnable")
_JOY = dict(patch_size=[1, 2, 2], in_channels=16, hidden_size=32, num_attention_heads=2, text_dim=16, num_layers=2,
            rope_dim_list=[4, 6, 6], theta=256)
_LTX2_AUDIO = dict(audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
                   audio_cross_attention_dim=8)

CONFIGS: dict[str, Case] = {
    # --- image ----------------------------------------------------------------------------------
    "DiTTransformer2DModelTests": Case("DiTTransformer2DModel", dict(
        in_channels=4, out_channels=8, activation_fn="gelu-approximate", num_attention_heads=2, attention_head_dim=4,
        attention_bias=True, num_layers=1, norm_type="ada_norm_zero", num_embeds_ada_norm=8, patch_size=2,
        sample_size=8)),
    "PixArtTransformer2DModelTests": Case("PixArtTransformer2DModel", dict(
        sample_size=8, num_layers=1, patch_size=2, attention_head_dim=2, num_attention_heads=2, in_channels=4,
        cross_attention_dim=8, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=8, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        use_additional_conditions=False, caption_channels=None)),
    "SanaTransformerTesterConfig": Case("SanaTransformer2DModel", dict(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=4, num_attention_heads=2,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
        sample_size=32)),
    "HunyuanDiTTests": Case("HunyuanDiT2DModel", dict(
        sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        cross_attention_dim=8, cross_attention_dim_t5=8, pooled_projection_dim=4, hidden_size=16, text_len=4,
        text_len_t5=4, activation_fn="gelu-approximate")),
    "Lumina2Transformer2DModelTransformerTests": Case("Lumina2Transformer2DModel", dict(
        sample_size=16, patch_size=2, in_channels=4, hidden_size=24, num_layers=2, num_refiner_layers=1,
        num_attention_heads=3, num_kv_heads=1, multiple_of=2, ffn_dim_multiplier=None, norm_eps=1e-5,
        scaling_factor=1.0, axes_dim_rope=(4, 2, 2), axes_lens=(128, 128, 128), cap_feat_dim=32)),
    "LuminaNextDiTTesterConfig": Case("LuminaNextDiT2DModel", dict(
        sample_size=16, patch_size=2, in_channels=4, hidden_size=24, num_layers=2, num_attention_heads=3,
        num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5, learn_sigma=False, qk_norm=True,
        cross_attention_dim=32, scaling_factor=1.0)),
    "PRXTransformerTesterConfig": Case("PRXTransformer2DModel", dict(
        in_channels=16, patch_size=2, context_in_dim=1792, hidden_size=1792, mlp_ratio=3.5, num_heads=28, depth=4,
        axes_dim=[32, 32], theta=10_000), heavy=True),
    "BriaFibo2TransformerTesterConfig": Case("BriaFibo2Transformer2DModel", dict(
        in_channels=4, patch_size=2, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=24,
        injection_layer_ids=(1,), perceiver_num_layers=1, min_num_gist_tokens=4, max_num_gist_tokens=8, gist_step=4,
        gist_min_text_len=4, gist_max_text_len=16, axes_dims=(4, 6, 6), axes_lens=(16, 16, 16))),
    "OmniGenTransformerTesterConfig": Case("OmniGenTransformer2DModel", dict(
        hidden_size=16, num_attention_heads=4, num_key_value_heads=4, intermediate_size=32, num_layers=20,
        pad_token_id=0, vocab_size=1000, in_channels=4, time_step_dim=4,
        rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]})),
    "ErnieImageTransformerTesterConfig": Case("ErnieImageTransformer2DModel", dict(
        hidden_size=16, num_attention_heads=1, num_layers=1, ffn_hidden_size=16, in_channels=16, out_channels=16,
        patch_size=1, text_in_dim=16, rope_theta=256, rope_axes_dim=(8, 4, 4), eps=1e-6, qk_layernorm=True)),
    "ZImageTransformerTesterConfig": Case("ZImageTransformer2DModel", dict(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=16, n_layers=1, n_refiner_layers=1, n_heads=1,
        n_kv_heads=2, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32])),
    # --- image, joint text-image ---------------------------------------------------------------
    "SD3TransformerTesterConfig": Case("SD3Transformer2DModel", dict(_SD3, dual_attention_layers=(), qk_norm=None)),
    "SD35TransformerTesterConfig": Case("SD3Transformer2DModel", dict(_SD3, dual_attention_layers=(0,),
                                                                      qk_norm="rms_norm")),
    "FluxTransformerTesterConfig": Case("FluxTransformer2DModel", dict(
        _FLUX_LIKE, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])),
    "Flux2TransformerTests": Case("Flux2Transformer2DModel", dict(
        _FLUX_LIKE, timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4])),
    "QwenImageTransformerTesterConfig": Case("QwenImageTransformer2DModel", dict(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=4,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4))),
    "QwenImage21TransformerTesterConfig": Case("QwenImage21Transformer2DModel", dict(
        patch_size=1, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        context_in_dim=8, mlp_ratio=2, axes_dims_rope=(4, 6, 6))),
    "AuraFlowTransformerTests": Case("AuraFlowTransformer2DModel", dict(
        sample_size=32, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, out_channels=4,
        pos_embed_max_size=256)),
    "BriaTransformerTesterConfig": Case("BriaTransformer2DModel", dict(
        _FLUX_LIKE, attention_head_dim=8, pooled_projection_dim=None, axes_dims_rope=[0, 4, 4])),
    "BriaFiboTransformerTests": Case("BriaFiboTransformer2DModel", dict(
        _FLUX_LIKE, in_channels=48, attention_head_dim=8, joint_attention_dim=64, text_encoder_dim=32,
        pooled_projection_dim=None, axes_dims_rope=[0, 4, 4])),
    # heavy: the test file leaves the approximator at its defaults (5 layers 5120 wide: 263 M parameters)
    "ChromaTransformerTests": Case("ChromaTransformer2DModel", dict(_FLUX_LIKE, axes_dims_rope=[4, 4, 8]), heavy=True),
    "LongCatImageTransformerTesterConfig": Case("LongCatImageTransformer2DModel", dict(
        _FLUX_LIKE, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])),
    "OvisImageTransformerTesterConfig": Case("OvisImageTransformer2DModel", dict(
        _FLUX_LIKE, out_channels=4, axes_dims_rope=(4, 4, 8))),
    "CogView3PlusTransformerTests": Case("CogView3PlusTransformer2DModel", dict(
        patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=2, out_channels=4,
        text_embed_dim=8, time_embed_dim=8, condition_dim=2, pos_embed_max_size=8, sample_size=8)),
    "CogView4TransformerTesterConfig": Case("CogView4Transformer2DModel", dict(
        patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=4, out_channels=4,
        text_embed_dim=8, time_embed_dim=8, condition_dim=4)),
    "GlmImageTransformerTesterConfig": Case("GlmImageTransformer2DModel", dict(
        patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        text_embed_dim=32, time_embed_dim=16, condition_dim=8, prior_vq_quantizer_codebook_size=64)),
    "HiDreamTransformerTests": Case("HiDreamImageTransformer2DModel", dict(
        patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_channels=[8, 4], text_emb_dim=8, num_routed_experts=2, num_activated_experts=2,
        axes_dims_rope=(4, 2, 2), max_resolution=(32, 32), llama_layers=(0, 1), force_inference_output=True)),
    "Krea2TransformerTesterConfig": Case("Krea2Transformer2DModel", dict(
        in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=32, timestep_embed_dim=8, text_hidden_dim=16, num_text_layers=3, text_num_attention_heads=2,
        text_num_key_value_heads=1, text_intermediate_size=16, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
        axes_dims_rope=(4, 2, 2), rope_theta=1000.0, norm_eps=1e-5)),
    "NucleusMoEImageTransformerTesterConfig": Case("NucleusMoEImageTransformer2DModel", dict(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=4,
        joint_attention_dim=16, axes_dims_rope=(8, 4, 4), moe_enabled=False, capacity_factors=[8.0, 8.0])),
    "Ideogram4TransformerTesterConfig": Case("Ideogram4Transformer2DModel", dict(
        in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=4, intermediate_size=32, adaln_dim=16,
        llm_features_dim=24, rope_theta=10_000, mrope_section=(2, 1, 1), norm_eps=1e-5)),
    # --- video ----------------------------------------------------------------------------------
    "WanTransformer3DTesterConfig": Case("WanTransformer3DModel", dict(_WAN)),
    "SkyReelsV2TransformerTesterConfig": Case("SkyReelsV2Transformer3DModel", dict(_WAN)),
    "WanVACETransformer3DTesterConfig": Case("WanVACETransformer3DModel", dict(
        _WAN, in_channels=16, out_channels=16, text_dim=32, num_layers=4, vace_layers=[0, 2], vace_in_channels=48)),
    "WanAnimateTransformer3DTesterConfig": Case("WanAnimateTransformer3DModel", dict(
        _WAN, in_channels=12, latent_channels=4, image_dim=16,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16, motion_style_dim=8,
        motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
        inject_face_latents_blocks=2)),
    "WanAnimate2TransformerTesterConfig": Case("WanAnimate2Transformer3DModel", dict(
        patch_size=(1, 2, 2), text_len=16, in_dim=36, dim=128, ffn_dim=256, freq_dim=64, text_dim=32, out_dim=16,
        num_heads=4, num_layers=2, cross_attn_norm=True, use_img_emb=True)),
    "ChronoEditTransformerTesterConfig": Case("ChronoEditTransformer3DModel", dict(
        _WAN, attention_head_dim=8, in_channels=16, out_channels=16, text_dim=32, freq_dim=16, eps=1e-6,
        image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=64, pos_embed_seq_len=None,
        rope_temporal_skip_len=8)),
    "AnyFlowTransformer3DTesterConfig": Case("AnyFlowTransformer3DModel", dict(
        {k: v for k, v in _WAN.items() if k != "qk_norm"}, gate_value=0.25, deltatime_type="r")),
    "AnyFlowFARTransformer3DTesterConfig": Case("AnyFlowFARTransformer3DModel", dict(
        {k: v for k, v in _WAN.items() if k != "qk_norm"}, compressed_patch_size=(1, 4, 4), full_chunk_limit=3,
        gate_value=0.25, deltatime_type="r")),
    "HeliosTransformer3DTesterConfig": Case("HeliosTransformer3DModel", dict(
        {k: v for k, v in _WAN.items() if k != "rope_max_seq_len"}, rope_dim=(4, 4, 4),
        has_multi_term_memory_patch=True, guidance_cross_attn=True, zero_history_timestep=True,
        is_amplify_history=False)),
    "AllegroTransformerTests": Case("AllegroTransformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=1,
        cross_attention_dim=16, sample_width=8, sample_height=8, sample_frames=8, caption_channels=8)),
    "CogVideoXTransformerTests": Case("CogVideoXTransformer3DModel", dict(_COGVIDEOX, patch_size_t=None)),
    "CogVideoX1_5TransformerTests": Case("CogVideoXTransformer3DModel", dict(
        _COGVIDEOX, patch_size_t=2, use_rotary_positional_embeddings=True)),
    "ConsisIDTransformerTests": Case("ConsisIDTransformer3DModel", dict(
        _COGVIDEOX, num_layers=1, cross_attn_interval=1, is_kps=False, is_train_face=True,
        cross_attn_dim_head=1, cross_attn_num_heads=1, LFE_id_dim=2, LFE_vit_dim=2, LFE_depth=5, LFE_dim_head=8,
        LFE_num_heads=2, LFE_num_id_token=1, LFE_num_querie=1, LFE_output_dim=10, LFE_ff_mult=1, LFE_num_scale=1)),
    "LTXTransformerTesterConfig": Case("LTXVideoTransformer3DModel", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        num_layers=1, qk_norm="rms_norm_across_heads", caption_channels=16)),
    "LTX2TransformerTesterConfig": Case("LTX2VideoTransformer3DModel", dict(
        _LTX2_AUDIO, in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=16, rope_double_precision=False)),
    "SanaWMLTX2RefinerTransformer3DTesterConfig": Case("SanaWMLTX2RefinerTransformer3DModel", dict(
        _LTX2_AUDIO, in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=16, rope_double_precision=False)),
    "MochiTransformerTesterConfig": Case("MochiTransformer3DModel", dict(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=4, out_channels=None, qk_norm="rms_norm", text_embed_dim=16, time_embed_dim=4,
        activation_fn="swiglu", max_sequence_length=16)),
    "HunyuanVideoTransformerTesterConfig": Case("HunyuanVideoTransformer3DModel", dict(
        _HUNYUAN_VIDEO, in_channels=4, guidance_embeds=True, image_condition_type=None)),
    "HunyuanSkyreelsImageToVideoTransformer3DTests": Case("HunyuanVideoTransformer3DModel", dict(
        _HUNYUAN_VIDEO, in_channels=8, guidance_embeds=True, image_condition_type=None)),
    "HunyuanVideoI2VTransformerTesterConfig": Case("HunyuanVideoTransformer3DModel", dict(
        _HUNYUAN_VIDEO, in_channels=2 * 4 + 1, guidance_embeds=False, image_condition_type="latent_concat")),
    "HunyuanVideoTokenReplaceTransformerTesterConfig": Case("HunyuanVideoTransformer3DModel", dict(
        _HUNYUAN_VIDEO, in_channels=2, guidance_embeds=True, image_condition_type="token_replace")),
    "HunyuanVideoFramepackTransformer3DTests": Case("HunyuanVideoFramepackTransformer3DModel", dict(
        _HUNYUAN_VIDEO, in_channels=4, patch_size=2, guidance_embeds=True, image_condition_type=None,
        has_image_proj=True, image_proj_dim=16, has_clean_x_embedder=True)),
    "HunyuanVideo15TransformerTesterConfig": Case("HunyuanVideo15Transformer3DModel", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_refiner_layers=1,
        mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=12,
        rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v")),
    "EasyAnimateTransformerTesterConfig": Case("EasyAnimateTransformer3DModel", dict(
        attention_head_dim=16, num_attention_heads=2, in_channels=4, mmdit_layers=2, num_layers=2, out_channels=4,
        patch_size=2, sample_height=60, sample_width=90, text_embed_dim=16, time_embed_dim=8,
        time_position_encoding_type="3d_rope", timestep_activation_fn="silu")),
    "CosmosTransformerTesterConfig": Case("CosmosTransformer3DModel", dict(_COSMOS, in_channels=4)),
    "CosmosTransformerVideoToWorldTesterConfig": Case("CosmosTransformer3DModel", dict(_COSMOS, in_channels=4 + 1)),
    "Kandinsky6TransformerTesterConfig": Case("Kandinsky6Transformer3DModel", dict(
        in_visual_dim=4, out_visual_dim=4, in_text_dim=8, in_text_dim2=8, time_dim=16, patch_size=(1, 2, 2),
        model_dim=48, ff_dim=64, num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 4, 4), visual_cond=True,
        in_audio_dim=4, out_audio_dim=4)),
    "Kandinsky6SRTransformerTesterConfig": Case("Kandinsky6SRTransformer3DModel", dict(
        in_visual_dim=4, out_visual_dim=8, time_dim=16, patch_size=(1, 2, 2), model_dim=24, ff_dim=32,
        num_visual_blocks=2, axes_dims=(4, 4, 4))),
    "MotifVideoTransformerTesterConfig": Case("MotifVideoTransformer3DModel", dict(
        in_channels=33, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=1,
        num_single_layers=1, num_decoder_layers=0, mlp_ratio=4.0, patch_size=1, patch_size_t=1, qk_norm="rms_norm",
        norm_type="layer_norm", text_embed_dim=32, image_embed_dim=4, rope_theta=256.0, rope_axes_dim=(4, 4, 4),
        enable_text_cross_attention_dual=False, enable_text_cross_attention_single=False)),
    "SanaVideoTransformer3DTesterConfig": Case("SanaVideoTransformer3DModel", dict(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=16,
        mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=8, patch_size=(1, 2, 2),
        norm_elementwise_affine=False, norm_eps=1e-6, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)),
    # the test file also sets model_max_length=16, an argument diffusers 0.42.1's constructor does not take
    "SanaWMTransformer3DTesterConfig": Case("SanaWMTransformer3DModel", dict(
        in_channels=4, num_layers=2, hidden_size=32, num_attention_heads=2, patch_size=(1, 1, 1), softmax_every_n=2,
        linear_head_dim=16, t_kernel_size=3, conv_kernel_size=4, caption_channels=8,
        mlp_ratio=2.0, chunk_plucker_channels=8, chunk_plucker_post_attn_blocks=2)),
    "JoyImageEditTransformerTesterConfig": Case("JoyImageEditTransformer3DModel", dict(_JOY)),
    "JoyImageEditPlusTransformerTesterConfig": Case("JoyImageEditPlusTransformer3DModel", dict(_JOY)),
    "LatteTransformerTests": Case("LatteTransformer3DModel", dict(
        sample_size=8, num_layers=2, patch_size=2, attention_head_dim=4, num_attention_heads=2, caption_channels=8,
        in_channels=4, cross_attention_dim=8, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)),
    # --- not a DiT over image or video latents: refused by name -----------------------------------
    "ContinuousTransformer2DModelTests": Case("Transformer2DModel", dict(
        activation_fn="geglu", attention_head_dim=2, cross_attention_dim=8, in_channels=4, norm_num_groups=1,
        norm_type="layer_norm", num_attention_heads=2, num_embeds_ada_norm=None, num_layers=1, out_channels=None),
        expect="refused"),
    "TemporalTransformerTesterConfig": Case("TransformerTemporalModel", dict(
        num_attention_heads=8, attention_head_dim=4, in_channels=4, num_layers=1, norm_num_groups=1), expect="refused"),
    "PriorTransformerTests": Case("PriorTransformer", dict(
        num_attention_heads=2, attention_head_dim=4, num_layers=2, embedding_dim=8, num_embeddings=7,
        additional_embeddings=4), expect="refused"),
    "AceStepTransformer1DModelTesterConfig": Case("AceStepTransformer1DModel", dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, in_channels=24, audio_acoustic_hidden_dim=8, patch_size=2, rope_theta=10000.0, rms_norm_eps=1e-6,
        sliding_window=16), expect="refused"),
    "StableAudio3DiTModelTinyConfig": Case("StableAudio3DiTModel", dict(
        io_channels=8, patch_size=1, embed_dim=32, depth=2, num_heads=4, cond_token_dim=16, global_cond_dim=12,
        local_add_cond_dim=5, timestep_features_dim=16, ff_mult=2, num_memory_tokens=3,
        use_differential_attention=False), expect="refused"),
    "MiniMaxMusic3Transformer1DTesterConfig": Case("MiniMaxMusic3Transformer1DModel", dict(
        in_channels=8, condition_dim=16, num_layers=2, num_attention_heads=2, attention_head_dim=8, ff_inner_dim=32,
        rotary_dim=4, fourier_embedding_dim=8), expect="refused"),
    "MiniMaxH3TransformerTesterConfig": Case("MiniMaxH3Transformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=2, num_refiner_layers=2, ffn_dim=32,
        in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2), text_dim=8, freq_dim=8, time_embed_hidden_dim=24,
        time_embed_dim=16, rope_freq_dim=2), expect="refused"),
    "LongCatAudioDiTTransformerTesterConfig": Case("LongCatAudioDiTTransformer", dict(
        dit_dim=64, dit_depth=2, dit_heads=4, dit_text_dim=32, latent_dim=8, text_conv=False), expect="refused"),
    "Cosmos3OmniTransformerTesterConfig": Case("Cosmos3OmniTransformer", dict(
        head_dim=6, hidden_act="relu2", hidden_size=12, intermediate_size=24, latent_channel=2, latent_patch_size=1,
        num_attention_heads=2, num_hidden_layers=2, num_key_value_heads=1, patch_latent_dim=2, qk_norm_for_text=False,
        rms_norm_eps=1e-5, rope_axes_dim=[1, 1, 1], rope_theta=1e8, vocab_size=32), expect="refused"),
}
