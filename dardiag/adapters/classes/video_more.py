"""More video transformers: latents (N, C, F, H, W); variants with extra conditioning streams
(editing, animation, control, world models) are driven with that conditioning neutral or synthetic,
as each entry says. The call of each follows its diffusers pipeline.

Wan-derived image-to-video configs take more input channels than they predict (the noisy latents, then
a frame mask and the reference-image latents, concatenated on channels): the extra channels are zeros
here (nothing known, no reference), and the latents have the predicted channel count.
"""

from __future__ import annotations

import torch

from dardiag.adapters.classes.spec import (
    FIRST, TAIL, ClassEntry, Stack, Stream, mask, patch3d, text, text_pooled,
)
from dardiag.adapters.classes.video import _latent, _pack, _unpack
from dardiag.errors import DardiagError

CLIP_TOKENS = 257  # CLIP ViT-H/14 image tokens of the Wan I2V pipelines (encoder_hidden_states_image)
WAN_TEXT = 512  # the Wan pipelines' max_sequence_length (prompts are zero-padded to it)
WAN_SIDE = (60, 104)  # 480x832 px, the Wan pipelines' default, at the VAE's 8x


#################################################################################
#                 Helpers shared by the Wan-derived entries                     #
#################################################################################


def _wan_cond(cfg, L):
    """T5 text (L, text_dim), and the CLIP image tokens an I2V config (``image_dim``) cross-attends to."""
    shapes = {"encoder_hidden_states": (L, int(cfg["text_dim"]))}
    if cfg.get("image_dim"):
        shapes["encoder_hidden_states_image"] = (int(cfg.get("pos_embed_seq_len") or CLIP_TOKENS), int(cfg["image_dim"]))
    return shapes


def _wan_latent(cfg, *, frames: int = 21, side=WAN_SIDE):
    # the predicted channels: an I2V config's in_channels also count the mask and reference latents
    return _latent({**cfg, "in_channels": cfg.get("out_channels") or cfg["in_channels"]}, frames=frames, side=side)


def _pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, F, H, W) -> (N, channels, F, H, W): zero condition channels (mask, reference latents) after x."""
    extra = channels - x.shape[1]
    if extra <= 0:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], dim=1)


def _wan_fixed(cfg, shape):
    extra = int(cfg["in_channels"]) - shape[0]
    return f"{extra} image-to-video condition channels zeros (no reference frame)" if extra > 0 else ""


def _image(cond):
    return cond.get("encoder_hidden_states_image")


def _text(m, cond) -> torch.Tensor:
    """The text embeddings (N, L, D_text); with image tokens in a config with added K/V projections the
    attention splits the text off as the last 512 tokens, so they are zero-padded to 512 as the
    pipelines pad every prompt."""
    ehs = cond["encoder_hidden_states"]
    if _image(cond) is None or not getattr(m.config, "added_kv_proj_dim", None):
        return ehs
    if ehs.shape[1] > WAN_TEXT:
        raise DardiagError(f"{type(m).__name__} takes at most {WAN_TEXT} text tokens with image conditioning; "
                           f"got {ehs.shape[1]}")
    return torch.cat([ehs, ehs.new_zeros(ehs.shape[0], WAN_TEXT - ehs.shape[1], ehs.shape[2])], dim=1)


def _wan_i2v(m, x, t, y, cond):
    """The Wan call (text cross-attention, sigma x 1000), with an I2V config's condition channels zero."""
    return m(_pad_channels(x, m.config.in_channels), timestep=t, encoder_hidden_states=_text(m, cond),
             encoder_hidden_states_image=_image(cond)).sample  # (N, C, F, H, W)


#################################################################################
#                                  Calls                                        #
#################################################################################


SKYREELS_FPS = 24  # SkyReelsV2DiffusionForcingPipeline's default fps: embedded as class 1 (0 is 16 fps)


def _skyreels(m, x, t, y, cond):
    fps = [0 if SKYREELS_FPS == 16 else 1] * x.shape[0] if m.config.inject_sample_info else None
    return m(_pad_channels(x, m.config.in_channels), timestep=t, encoder_hidden_states=_text(m, cond),
             encoder_hidden_states_image=_image(cond), fps=fps).sample  # (N, C, F, H, W)


def _skyreels_fixed(cfg, shape):
    words = [w for w in [_wan_fixed(cfg, shape)] if w]
    if cfg.get("inject_sample_info"):
        words.append(f"fps {SKYREELS_FPS}")
    return ", ".join(words)


def _vace(m, x, t, y, cond):
    # WanVACEPipeline without video, mask or reference images: a zero video (its two latents, inactive and
    # reactive, here zeros) and an all-ones mask (generate everything), conditioning scale 1
    N, C, F, H, W = x.shape
    latents = x.new_zeros(N, 2 * C, F, H, W)
    mask = x.new_ones(N, m.config.vace_in_channels - 2 * C, F, H, W)
    return m(x, timestep=t, encoder_hidden_states=_text(m, cond),
             encoder_hidden_states_image=_image(cond),
             control_hidden_states=torch.cat([latents, mask], dim=1)).sample  # (N, C, F, H, W)


def _animate_face_frames(F: int) -> int:
    """Face video frames whose motion tokens match F latent frames: the face encoder halves time twice,
    causally, and a zero token is prepended for the reference frame (77 frames -> 20 + 1 latent frames)."""
    return 4 * (F - 2) + 1


def _animate(m, x, t, y, cond):
    N, C, F, H, W = x.shape
    size = m.config.motion_encoder_size
    # the pipeline's blank face (its unconditional branch sets every pixel to -1), zero pose latents
    face = x.new_full((N, 3, _animate_face_frames(F), size, size), -1.0)
    return m(_pad_channels(x, m.config.in_channels), timestep=t, encoder_hidden_states=_text(m, cond),
             encoder_hidden_states_image=_image(cond), pose_hidden_states=x.new_zeros(N, C, F - 1, H, W),
             face_pixel_values=face).sample  # (N, C, F, H, W)


def _per_frame(t, x):
    return t.to(x.dtype)[:, None].expand(x.shape[0], x.shape[2])  # (N, F): one timestep per latent frame


def _anyflow(m, x, t, y, cond):
    # (N, F, C, H, W) in and out; r = t: the instantaneous velocity (the pipeline with use_mean_velocity=False)
    tf = _per_frame(t, x)
    out = m(x.transpose(1, 2), timestep=tf, r_timestep=tf, encoder_hidden_states=_text(m, cond),
            encoder_hidden_states_image=_image(cond)).sample  # (N, F, C, H, W)
    return out.transpose(1, 2)  # (N, C, F, H, W)


def _anyflow_far(m, x, t, y, cond):
    # the causal rollout path (no KV cache) over one chunk of all frames: every frame is denoised at once.
    # In one chunk the FAR block mask only hides the padding to 128 tokens, so the dense processor computes
    # the same attention; it replaces the flex one for the call (flex attention has no backward on CPU)
    from diffusers.models.transformers.transformer_anyflow_far import AnyFlowAttnProcessor

    class OneChunk(AnyFlowAttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            return super().__call__(attn, hidden_states, encoder_hidden_states, None, rotary_emb)

    attns = [block.attn1 for block in m.blocks]
    saved = [a.processor for a in attns]
    tf = _per_frame(t, x)
    try:
        for a in attns:
            a.processor = OneChunk()
        out = m(x.transpose(1, 2), timestep=tf, r_timestep=tf, encoder_hidden_states=_text(m, cond),
                chunk_partition=[x.shape[2]], encoder_hidden_states_image=_image(cond)).sample  # (N, F, C, H, W)
    finally:
        for a, p in zip(attns, saved):
            a.processor = p
    return out.transpose(1, 2)  # (N, C, F, H, W)


KANDINSKY_VAE = 8  # pixels per latent side of the HunyuanVideo VAE the Kandinsky 5/6 pipelines use
HELIOS_HISTORY = (16, 2, 1)  # HeliosPipeline's history_sizes (long, mid, short); keep_first_frame adds a prefix


def _helios(m, x, t, y, cond):
    # HeliosPipeline's first chunk: all history latents zeros (nothing generated yet, no image), frame
    # indices [prefix, long, mid, short, chunk] in that order; the history tokens come first in the blocks
    N, C, F, H, W = x.shape
    history = {}
    if m.config.has_multi_term_memory_patch:
        long, mid, short = HELIOS_HISTORY
        prefix, i_long, i_mid, i_short, i_x = torch.arange(1 + long + mid + short + F, device=x.device).split(
            [1, long, mid, short, F])
        history = dict(
            indices_hidden_states=i_x[None], indices_latents_history_short=torch.cat([prefix, i_short])[None],
            indices_latents_history_mid=i_mid[None], indices_latents_history_long=i_long[None],
            latents_history_short=x.new_zeros(N, C, 1 + short, H, W), latents_history_mid=x.new_zeros(N, C, mid, H, W),
            latents_history_long=x.new_zeros(N, C, long, H, W))
    return m(x, timestep=t, encoder_hidden_states=cond["encoder_hidden_states"], **history).sample  # (N, C, F, H, W)


def _joyimage(m, x, t, y, cond):
    # one item (no reference image): the target latents (N, C, 1, H, W) as a 5-D video of one frame
    return m(x, timestep=t, encoder_hidden_states=cond["encoder_hidden_states"]).sample  # (N, C, F, H, W)


def _joyimage_plus(m, x, t, y, cond):
    # the pipeline's patch sequence without references: the target's patches in (t, h, w) order
    N, C, F, H, W = x.shape
    pt, ph, pw = m.config.patch_size
    grid = (F // pt, H // ph, W // pw)
    patches = x.reshape(N, C, grid[0], pt, grid[1], ph, grid[2], pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
    patches = patches.reshape(N, -1, C, pt, ph, pw)  # (N, T, C, pt, ph, pw)
    ehs = cond["encoder_hidden_states"]
    out = m(patches, timestep=t, encoder_hidden_states=ehs, encoder_hidden_states_mask=mask(cond, dtype=torch.long),
            shape_list=[[grid]] * N).sample  # (N, T, C_out, pt, ph, pw)
    out = out.reshape(N, *grid, -1, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)  # (N, C_out, F/pt, pt, H/ph, ...)
    return out.reshape(N, -1, F, H, W)  # (N, C_out, F, H, W)


def _last(x):
    return x.permute(0, 2, 3, 4, 1)  # (N, C, F, H, W) -> (N, F, H, W, C): the Kandinsky layout


def _first(x):
    return x.permute(0, 4, 1, 2, 3)  # (N, F, H, W, C) -> (N, C, F, H, W)


def _visual_cond(x, visual_cond: bool):
    """[latents | condition latents | mask] on the last axis, the condition zeros and the mask 0 as the
    Kandinsky text-to-video pipelines pass them (no image)."""
    if not visual_cond:
        return x
    return torch.cat([x, torch.zeros_like(x), x.new_zeros(*x.shape[:-1], 1)], dim=-1)  # (N, F, H, W, 2C + 1)


def _kandinsky5_scale(H: int, W: int) -> tuple:
    """Kandinsky5T2VPipeline._get_scale_factor for a latent of H x W: RoPE scale by the pixel size."""
    def between_480p(n):
        return 480 <= n * KANDINSKY_VAE <= 854
    return (1, 2, 2) if between_480p(H) and between_480p(W) else (1, 3.16, 3.16)


def _kandinsky5_sparse(cfg, grid, device):
    """Kandinsky5T2VPipeline.get_sparse_params: NABLA parameters of a ``nabla`` config, else None."""
    if cfg.attention_type != "nabla":
        return None
    T, H, W = grid[0], grid[1] // 8, grid[2] // 8  # 8x8 token blocks

    def near(n, w):  # (n, n): positions within the window's half-width
        r = torch.arange(n, device=device)
        return (r[:, None] - r[None, :]).abs() <= w // 2
    sta_hw = near(H, cfg.attention_wH)[:, :, None, None] * near(W, cfg.attention_wW)[None, None]  # (H, H, W, W)
    sta_hw = sta_hw.transpose(1, 2).reshape(H * W, H * W)
    sta = (near(T, cfg.attention_wT)[:, :, None, None] * sta_hw[None, None]).transpose(1, 2)  # (T, HW, T, HW)
    return {"sta_mask": sta.reshape(T * H * W, T * H * W)[None, None], "attention_type": "nabla", "to_fractal": True,
            "P": cfg.attention_P, "wT": cfg.attention_wT, "wW": cfg.attention_wW, "wH": cfg.attention_wH,
            "add_sta": cfg.attention_add_sta, "visual_shape": grid, "method": cfg.attention_method}


def _kandinsky5(m, x, t, y, cond):
    N, C, F, H, W = x.shape
    pt, ph, pw = m.config.patch_size
    grid = (F // pt, H // ph, W // pw)
    ehs = cond["encoder_hidden_states"]
    out = m(_visual_cond(_last(x), m.config.visual_cond), encoder_hidden_states=ehs, timestep=t,
            pooled_projections=cond["pooled_projections"],
            visual_rope_pos=[torch.arange(n, device=x.device) for n in grid],
            text_rope_pos=torch.arange(ehs.shape[1], device=x.device), scale_factor=_kandinsky5_scale(H, W),
            sparse_params=_kandinsky5_sparse(m.config, grid, x.device)).sample  # (N, F, H, W, C)
    return _first(out)


def _kandinsky6(m, x, t, y, cond):
    # video alone: no audio latents (the fused blocks then run their video path only)
    out = m(_visual_cond(_last(x), m.config.visual_cond), encoder_hidden_states=cond["encoder_hidden_states"],
            pooled_projections=cond["pooled_projections"], timestep=t).sample  # (N, F, H, W, C)
    return _first(out)


def _kandinsky6_sr(m, x, t, y, cond):
    # the released checkpoints are anchor-free: the SR pipeline passes zero anchor latents and a zero mask.
    # NABLA attention runs on flex only (no CPU backward): the same block mask, made dense, through SDPA
    from diffusers.models.transformers import transformer_kandinsky6_sr as k6

    class DenseNabla(k6.Kandinsky6SRAttnProcessor):
        def __call__(self, attn, hidden_states, rotary_emb, sparse_params):
            q, k, v = (getattr(attn, f"to_{n}")(hidden_states).unflatten(-1, (attn.num_heads, -1))
                       for n in ("query", "key", "value"))  # (N, S, heads, d)
            q = k6.apply_rotary(attn.query_norm(q.float()).type_as(q), rotary_emb)
            k = k6.apply_rotary(attn.key_norm(k.float()).type_as(k), rotary_emb)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (N, heads, S, d)
            blocks = k6.nabla_block_mask(q, k, sparse_params["sta_mask"], thr=sparse_params["threshold"])
            size = blocks.BLOCK_SIZE[0]
            dense = blocks.to_dense().bool().repeat_interleave(size, -2).repeat_interleave(size, -1)  # (N, h, S, S)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense)  # (N, heads, S, d)
            return attn.out_layer(out.transpose(1, 2).flatten(2, 3))

    attns = [block.self_attention for block in m.visual_transformer_blocks]
    saved = [a.processor for a in attns]
    try:
        for a in attns:
            a.processor = DenseNabla()
        out = m(_visual_cond(_last(x), True), timestep=t).sample  # (N, F, H, W, C_out)
    finally:
        for a, p in zip(attns, saved):
            a.processor = p
    return _first(out)


def _motif(m, x, t, y, cond):
    # MotifVideoPipeline's text-to-video call: [latents | condition latents zeros | mask zeros] on channels
    ehs = cond["encoder_hidden_states"]
    return m(_pad_channels(x, m.config.in_channels), timestep=t, encoder_hidden_states=ehs,
             encoder_attention_mask=mask(cond, dtype=torch.long)).sample  # (N, C, F, H, W)


def _sana_video(m, x, t, y, cond):
    ehs = cond["encoder_hidden_states"]
    return m(x, encoder_hidden_states=ehs, encoder_attention_mask=mask(cond, dtype=torch.long),
             timestep=t).sample  # (N, C, F, H, W)


WAN = dict(cond=_wan_cond, tokens=patch3d, video=True, text_tokens=WAN_TEXT, fixed=_wan_fixed)

def _latte(m, x, t, y, cond):
    F, frames = x.shape[2], m.config.video_length
    if F > 1 and F != frames:  # the temporal position embedding is added as is: exactly video_length rows
        raise DardiagError(f"LatteTransformer3DModel: {F} latent frames; its temporal position embedding is "
                           f"for video_length = {frames} frames (pass --frames {frames}, or 1 for an image)")
    # no text mask: with mask_feature LattePipeline cuts the embeddings to the prompt's own tokens
    return m(x, timestep=t, encoder_hidden_states=cond["encoder_hidden_states"],
             enable_temporal_attentions=True).sample  # (N, 2C, F, H, W): eps, then the learned variance


LATTE_NOTE = ("spatial and temporal blocks alternate (spatial 0, temporal 0, spatial 1, ...), each output read "
              "as (N, F H W, D) in one token order; the temporal position embedding is added after the first "
              "spatial block (z_1 is the stream before it); DDPM epsilon with learned sigma (linear betas "
              "1e-4..0.02) as released; prompts are cut to their own length: 120 tokens (the T5 maximum) here")

ENTRIES = (
    ClassEntry("SkyReelsV2Transformer3DModel", (Stack("blocks"),), "flow1000", _skyreels,
               **{**WAN, "fixed": _skyreels_fixed},
               latent=lambda cfg: _wan_latent(cfg, frames=25, side=(68, 120)),  # 97 frames at 544x960
               note="diffusion-forcing configs are driven with one timestep for all frames"),
    ClassEntry("WanVACETransformer3DModel", (Stack("blocks"),), "flow1000", _vace,
               **{**WAN, "fixed": lambda cfg, shape: "VACE control: zero video latents, all-ones mask, scale 1"},
               latent=_wan_latent,
               left_out=(("vace_blocks", "the control branch: it runs on the control latents before the main blocks"),),
               note="z_k is the block output before the VACE hint is added (after blocks in vace_layers)"),
    ClassEntry("ChronoEditTransformer3DModel", (Stack("blocks"),), "flow1000", _wan_i2v, **WAN,
               latent=lambda cfg: _wan_latent(cfg, frames=2)),  # 5 frames (no temporal reasoning)
    ClassEntry("WanAnimateTransformer3DModel", (Stack("blocks"),), "flow1000", _animate,
               **{**WAN, "fixed": lambda cfg, shape: _wan_fixed(cfg, shape) + ", zero pose latents, blank face "
                  f"video (all pixels -1, {_animate_face_frames(shape[1])} frames)"},
               latent=lambda cfg: _wan_latent(cfg, side=(90, 160)),  # 77-frame segment + reference at 720x1280
               note="z_k is the block output before the face adapter's output is added"),
    ClassEntry("AnyFlowTransformer3DModel", (Stack("blocks"),), "flow1000", _anyflow,
               **{**WAN, "fixed": lambda cfg, shape: "r_timestep = timestep (instantaneous velocity)"},
               latent=_wan_latent),
    ClassEntry("AnyFlowFARTransformer3DModel", (Stack("blocks"),), "flow1000", _anyflow_far,
               **{**WAN, "fixed": lambda cfg, shape: "r_timestep = timestep, chunk_partition [F] (one chunk)"},
               latent=_wan_latent,
               note="profiled as one causal chunk over all frames; the pipeline generates chunk by chunk "
                    "from a KV cache of the clean earlier chunks"),
    ClassEntry("HeliosTransformer3DModel", (Stack("blocks", TAIL),), "flow1000", _helios,
               cond=text("encoder_hidden_states", ("text_dim",)), tokens=patch3d, video=True, text_tokens=512,
               latent=lambda cfg: _latent(cfg, frames=9, side=(48, 80)),  # a 33-frame chunk at 384x640
               fixed=lambda cfg, shape: "history latents zeros (the pipeline's first chunk), frame indices after "
                     f"{sum(HELIOS_HISTORY) + 1} history frames" if cfg.get("has_multi_term_memory_patch") else "",
               note="one chunk of the chunk-wise pipeline; the history tokens precede the image tokens in the blocks"),
    ClassEntry("JoyImageEditTransformer3DModel", (Stack("double_blocks", FIRST),), "flow1000", _joyimage,
               cond=text("encoder_hidden_states", ("text_dim",)), tokens=patch3d, video=True, text_tokens=512,
               latent=lambda cfg: _latent(cfg, frames=1, side=(128, 128)),  # one 1024x1024 image
               fixed=lambda cfg, shape: "no reference image (one item)",
               note="an image model with video latents of one frame; prompts are not padded (512 tokens here)"),
    ClassEntry("JoyImageEditPlusTransformer3DModel", (Stack("double_blocks", FIRST),), "flow1000", _joyimage_plus,
               cond=text("encoder_hidden_states", ("text_dim",)), tokens=patch3d, video=True, text_tokens=512,
               latent=lambda cfg: _latent(cfg, frames=1, side=(128, 128)),  # one 1024x1024 image
               fixed=lambda cfg, shape: "no reference images (the target's patches only), "
                                        "supplied or all-valid text mask",
               note="an image model with video latents of one frame; prompts are not padded (512 tokens here)"),
    ClassEntry("Kandinsky5Transformer3DModel", (Stack("visual_transformer_blocks"),), "flow1000", _kandinsky5,
               cond=text_pooled(("in_text_dim",), ("in_text_dim2",)), tokens=patch3d, video=True, text_tokens=512,
               latent=lambda cfg: _latent(cfg, frames=31, side=(64, 96), channels="out_visual_dim"),  # 121 at 512x768
               left_out=(("text_transformer_blocks", "text-only encoder blocks before the visual blocks"),),
               fixed=lambda cfg, shape: "RoPE positions and scale as in the pipeline"
                     + (", visual condition zeros, mask 0 (no image)" if cfg.get("visual_cond") else "")),
    ClassEntry("Kandinsky6Transformer3DModel", (Stack("visual_transformer_blocks", FIRST),), "flow1000", _kandinsky6,
               cond=text_pooled(("in_text_dim",), ("in_text_dim2",)), tokens=patch3d, video=True, text_tokens=1024,
               latent=lambda cfg: _latent(cfg, frames=31, side=(64, 96), channels="out_visual_dim"),  # 121 at 512x768
               left_out=(("video_text_transformer_blocks", "text-only encoder blocks of the video branch"),
                         ("audio_text_transformer_blocks", "text-only encoder blocks of the audio branch")),
               fixed=lambda cfg, shape: "no audio latents (video alone)"
                     + (", visual condition zeros, mask 0 (no image)" if cfg.get("visual_cond") else ""),
               note="an audio-video model profiled on its video stream, without audio"),
    ClassEntry("Kandinsky6SRTransformer3DModel", (Stack("visual_transformer_blocks"),), "flow1000", _kandinsky6_sr,
               tokens=patch3d, video=True,
               latent=lambda cfg: _latent(cfg, frames=31, side=(32, 32), channels="in_visual_dim"),  # a 512x512 tile
               fixed=lambda cfg, shape: "anchor latents zeros, anchor mask 0 (as the SR pipeline)",
               note="text-free super-resolution of tiles; NABLA attention through SDPA with the same block mask; "
                    "piflow-distilled configs (out_visual_dim > in_visual_dim) do not predict a velocity"),
    ClassEntry("MotifVideoTransformer3DModel",
               (Stack("transformer_blocks", FIRST), Stack("single_transformer_blocks", FIRST)), "flow1000", _motif,
               cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch3d,
               video=True, text_tokens=512,
               fixed=lambda cfg, shape: ", ".join(
                   w for w in (_wan_fixed(cfg, shape), "supplied or all-valid text mask") if w),
               latent=lambda cfg: _wan_latent(cfg, frames=31, side=(92, 160)),  # 121 frames at 736x1280
               note="decoder single blocks (num_decoder_layers) restart from the patch embedding, with the encoder "
                    "output as their context; no image embeddings (text-to-video)"),
    ClassEntry("SanaVideoTransformer3DModel", (Stack("transformer_blocks"),), "flow1000", _sana_video,
               cond=text("encoder_hidden_states", ("caption_channels",)), tokens=patch3d, video=True, text_tokens=300,
               # 81 frames at 480x832; the config's sample_size is not the pipeline's latent size
               latent=lambda cfg: (cfg["in_channels"], 21, *WAN_SIDE),
               fixed=lambda cfg, shape: "supplied or all-valid text mask"),
    ClassEntry("LatteTransformer3DModel",
               (Stack("transformer_blocks", Stream(layout="frames")),
                Stack("temporal_transformer_blocks", Stream(layout="patches"))), "dit", _latte,
               cond=text("encoder_hidden_states", ("caption_channels",)), tokens=patch3d, video=True,
               text_tokens=120, interleaved=True,
               latent=lambda cfg: (cfg["in_channels"], cfg["video_length"], cfg["sample_size"], cfg["sample_size"]),
               fixed=lambda cfg, shape: "temporal attentions on, no text mask", note=LATTE_NOTE),
)


#################################################################################
#            SANA-WM: a world model with a clean first frame, and its refiner    #
#################################################################################
# Both pipelines start from an image: the first latent frame is its clean latent (the anchor), held at
# timestep 0 (SanaWMPipeline's condition mask) or fed as the attention sink (the refiner). The family
# flow1000-anchor keeps that frame clean in x_t and out of the loss; the entries measure the tokens of
# the later frames (the anchor sits at timestep 0 at every noise level, and its prediction is discarded),
# and return zeros as the anchor's prediction.

SANA_WM_VAE = 32  # LTX-2 VAE: pixels per latent side (its time stride is chunk_plucker_channels / 6)
SANA_WM_FOCAL = 800 / 1690  # fx = fy over the image width: SanaWMPipeline's example, (800, 800, 845, 464) px
SANA_WM_TEXT = 300  # SanaWMPipeline's max_sequence_length
REFINER_FPS = 16  # SanaWMPipeline's default fps, which the refiner's temporal RoPE takes too
REFINER_TEXT = 1024  # SanaWMLTX2Refiner's text_max_sequence_length
REFINER_BLOCK = 3  # SanaWMLTX2Refiner's block_size: latent frames denoised per chunk


def _after_anchor(cfg, shape):
    """Tokens of the frames after the anchor: the measured stream. A one-frame shape (the adapter's
    patch-side probe) counts its frame."""
    C, F, H, W = shape[-4:]
    return patch3d(cfg, (C, max(F - 1, 1), H, W))


def _anchor_zeros(out: torch.Tensor) -> torch.Tensor:
    """(N, C, F, H, W) with the anchor frame's prediction (discarded by the pipelines) set to zeros."""
    return torch.cat([torch.zeros_like(out[:, :, :1]), out[:, :, 1:]], dim=2)


def _static_camera(m, x):
    """SanaWMPipeline's camera tensors, by its own ``prepare_camera``, for a camera that does not move:
    identity poses at every pixel frame, the example's focal length, principal point at the centre.
    -> raymap (N, F, 20), chunk_plucker (N, 6 x time stride, F, H, W)."""
    import numpy as np
    from diffusers.pipelines.sana_wm.cam_utils import prepare_camera

    N, C, F, H, W = x.shape
    stride = m.config.chunk_plucker_channels // 6  # Plücker (6 channels) of each pixel frame of a latent frame
    frames, Hp, Wp = (F - 1) * stride + 1, H * SANA_WM_VAE, W * SANA_WM_VAE  # the pixel video
    poses = np.tile(np.eye(4, dtype=np.float32), (frames, 1, 1))  # (frames, 4, 4) camera-to-world
    f = SANA_WM_FOCAL * Wp
    intrinsics = np.tile(np.array([f, f, Wp / 2, Hp / 2], dtype=np.float32), (frames, 1))  # (frames, 4)
    cam = prepare_camera(poses, intrinsics, target_size=(Hp, Wp), vae_stride=(stride, SANA_WM_VAE, SANA_WM_VAE))
    raymap = cam["raymap"].to(x)[None].expand(N, -1, -1)  # (N, F, 20)
    plucker = cam["chunk_plucker"].to(x)[None].expand(N, -1, -1, -1, -1)  # (N, 6 stride, F, H, W)
    return raymap, plucker


def _sana_wm(m, x, t, y, cond):
    # SanaWMPipeline's stage-1 call: per-frame timesteps (N, 1, F), 0 on the anchor; float32 (the model
    # floors them to integers, as for the pipeline's); text (N, 1, L, D_text) with its mask
    N, F = x.shape[0], x.shape[2]
    noisy = t.float()[:, None].expand(N, F - 1)  # (N, F - 1)
    tf = torch.cat([torch.zeros(N, 1, device=t.device), noisy], dim=1)[:, None]  # (N, 1, F)
    ehs = cond["encoder_hidden_states"]
    raymap, plucker = _static_camera(m, x)
    out = m(x, tf, ehs[:, None], mask=mask(cond, dtype=torch.long), camera_conditions=raymap,
            chunk_plucker=plucker).sample  # (N, C, F, H, W)
    return _anchor_zeros(out)


class _Bare(torch.nn.Module):
    """A block called through its ``forward``: its hooks (dardiag's taps and edits) do not run."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        return self.block.forward(*args, **kwargs)


def _refiner(m, x, t, y, cond):
    """SanaWMLTX2Refiner's first chunk: the anchor frame's pre-RoPE K/V captured at sigma 0 as the attention
    sink (a pass outside the taps: not the profiled call), then one denoising call of the frames after it,
    which attend to [sink; themselves] (no history yet)."""
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMRefinerKVCache

    N, C, F, H, W = x.shape
    p, pt = m.config.patch_size, m.config.patch_size_t
    ehs = cond["encoder_hidden_states"]
    keep = mask(cond, dtype=torch.long)

    def rope(frames):  # RoPE of absolute latent frames
        return m.build_rotary_emb_for_absolute_positions(N, frames, H, W, x.device, REFINER_FPS)

    cache = SanaWMRefinerKVCache(len(m.transformer_blocks))
    sink = _pack(x[:, :, :1], p, pt)  # (N, S, C pt p p): the anchor's tokens
    clean = torch.zeros(sink.shape[:2], device=x.device)  # (N, S): sigma 0
    blocks = m.transformer_blocks
    try:
        m.transformer_blocks = torch.nn.ModuleList(_Bare(b) for b in blocks)
        with torch.no_grad():
            m(hidden_states=sink, encoder_hidden_states=ehs, timestep=clean, video_rotary_emb=rope([0]),
              encoder_attention_mask=keep, kv_cache=cache, kv_cache_mode="capture_pre_rope")
    finally:
        m.transformer_blocks = blocks
    for layer in cache.layer_caches:
        layer.store_sink(*layer.get_captured_pre_rope())
    cache.sink_pe = rope([0])  # the first chunk: the sink sits just before it
    active = _pack(x[:, :, 1:], p, pt)  # (N, T, C pt p p)
    ts = (t.float() * m.config.timestep_scale_multiplier / 1000.0)[:, None].expand(N, active.shape[1])  # (N, T)
    out = m(hidden_states=active, encoder_hidden_states=ehs, timestep=ts, video_rotary_emb=rope(list(range(1, F))),
            encoder_attention_mask=keep, kv_cache=cache, kv_cache_mode="inject").sample  # (N, T, C pt p p)
    out = _unpack(out, F - 1, H, W, p, pt)  # (N, C, F - 1, H, W)
    return torch.cat([torch.zeros_like(out[:, :, :1]), out], dim=2)  # (N, C, F, H, W), the anchor's zeros


ENTRIES += (  # appended here: this section stands alone
    ClassEntry("SanaWMTransformer3DModel", (Stack("blocks", TAIL),), "flow1000-anchor", _sana_wm,
               cond=text("encoder_hidden_states", ("caption_channels",)), tokens=_after_anchor, video=True,
               text_tokens=SANA_WM_TEXT,
               latent=lambda cfg: _latent(cfg, frames=21, side=(22, 40)),  # 161 frames at 704x1280
               fixed=lambda cfg, shape: "first latent frame the clean anchor (timestep 0, out of the loss and of the "
                     "measured tokens), static camera (identity poses, the pipeline example's focal length), "
                     "supplied or all-valid text mask",
               note="SanaWMPipeline's stage-1 call; z_k are the tokens of the frames after the anchor (the tail of "
                    "each block's output); the model floors timesteps to integers, as in the pipeline"),
    ClassEntry("SanaWMLTX2RefinerTransformer3DModel", (Stack("transformer_blocks"),), "flow1000-anchor", _refiner,
               cond=text("encoder_hidden_states", ("caption_channels",)), tokens=_after_anchor, video=True,
               text_tokens=REFINER_TEXT,
               latent=lambda cfg: _latent(cfg, frames=1 + REFINER_BLOCK, side=(22, 40)),  # the anchor + one chunk
               fixed=lambda cfg, shape: f"first latent frame the clean attention sink (K/V captured at sigma 0), "
                     f"frames 1..{shape[1] - 1} one chunk, fps {REFINER_FPS}, supplied or all-valid text mask",
               note="the first chunk of SanaWMLTX2Refiner's chunk-causal refinement (sink and chunk, no refined "
                    "history: later chunks also attend to the K/V of earlier refined chunks); the sink pass runs "
                    "without the taps and edits"),
)


#################################################################################
#        Wan-Animate-2: a reference pass fills a K/V cache, then the denoiser     #
#################################################################################
# Each segment of WanAnimate2's pipeline runs the transformer twice: kv_cache_mode="extract" over the
# driving video (its pre-RoPE K/V stored per layer, at a fixed timestep), then every denoising step
# (kv_cache_mode="cached") over the noisy latents: [reference-image slot; the segment's frames], which
# attend to all of themselves and, frame j + 1, to the driving video's frame j. The extract pass runs
# outside the taps (as the SANA-WM refiner's sink pass); the profiled call is one denoising step of the
# first segment, all its latent frames measured (the pipeline noises and steps the reference slot too,
# then decodes the frames after it).

ANIMATE2_FRAMES = 81  # WanAnimate2's segment_frame_length: pixel frames of a segment (21 latent frames)


def _animate2_cond(cfg, L):
    """T5 text (L, text_dim) and, with ``use_img_emb``, CLIP ViT-H/14 tokens (257, 1280) (MLPProj's fixed width)."""
    shapes = {"encoder_hidden_states": (L, int(cfg["text_dim"]))}
    if cfg.get("use_img_emb", True):
        shapes["encoder_hidden_states_image"] = (CLIP_TOKENS, 1280)
    return shapes


def _in_context(block_mask, T: int, R: int, device) -> torch.Tensor:
    """The model's own mask (its BlockMask's mask_mod) over [generation; reference] tokens, dense: (T, T + R) bool.
    The mask is written over a buffer padded to 128-token blocks, where the reference tokens start at the padded
    generation length; with the segment at the mask's own geometry every generation token keeps its index."""
    q = torch.arange(T, device=device)
    kv = torch.cat([q, -(-T // 128) * 128 + torch.arange(R, device=device)])  # buffer indices of the keys
    zero = torch.zeros((), dtype=torch.long, device=device)
    return block_mask.mask_mod(zero, zero, q[:, None], kv[None, :])


def _dense_in_context():
    """WanAnimate2's self-attention with the cached pass through SDPA and the same mask made dense: its own
    path runs on the flex backend only, which has no backward on CPU."""
    from diffusers.models.transformers import transformer_wan_animate_2 as wa2

    class DenseInContext(wa2.WanAnimate2AttnProcessor):
        def __call__(self, attn, hidden_states, rotary_emb, grid_sizes, kv_cache, kv_cache_mode, rope_stride=1,
                     reference_rotary_emb=None, reference_grid_sizes=None, reference_rope_stride=1,
                     attention_mask=None, origin_latent_frames=None, origin_latent_hw=None):
            if kv_cache_mode != "cached":
                return super().__call__(attn, hidden_states, rotary_emb, grid_sizes, kv_cache, kv_cache_mode,
                                        rope_stride)
            frames, h, w = grid_sizes[0].tolist()
            if (frames, h * w) != (origin_latent_frames + 1, origin_latent_hw):
                raise DardiagError(f"WanAnimate2: a {frames}-frame {h}x{w} segment is not at its block mask's "
                                   f"geometry ({origin_latent_frames + 1} frames of {origin_latent_hw} tokens)")
            q, k, v = wa2._get_qkv_projections(attn, hidden_states, None)  # (N, T, D) each
            q, k = attn.norm_q(q), attn.norm_k(k)
            q, k, v = (u.unflatten(2, (attn.heads, -1)) for u in (q, k, v))  # (N, T, heads, d)
            q = wa2.rope_apply(q, grid_sizes, rotary_emb, rope_stride).type_as(v)
            k = wa2.rope_apply(k, grid_sizes, rotary_emb, rope_stride).type_as(v)
            k_ref, v_ref = kv_cache.get()  # (N, R, heads, d), pre-RoPE
            k_ref = wa2.rope_apply(k_ref, reference_grid_sizes, reference_rotary_emb,
                                   reference_rope_stride).type_as(v)
            T, R = q.shape[1], k_ref.shape[1]
            allowed = _in_context(attention_mask, T, R, q.device)  # (T, T + R)
            keys = torch.cat([k, k_ref], 1).transpose(1, 2)  # (N, heads, T + R, d)
            values = torch.cat([v, v_ref], 1).transpose(1, 2)  # (N, heads, T + R, d)
            out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), keys, values,
                                                                   attn_mask=allowed)  # (N, heads, T, d)
            out = out.transpose(1, 2).flatten(2, 3).type_as(q)  # (N, T, D)
            return attn.to_out[1](attn.to_out[0](out))

    return DenseInContext()


def _i2v_mask(frames: int, H: int, W: int, known: int, x: torch.Tensor) -> torch.Tensor:
    """The pipeline's mask channels (4, frames, H, W) of a latent video whose first ``known`` pixel frames are given."""
    from diffusers.modular_pipelines.wan_animate_2.encoders import get_i2v_mask

    return get_i2v_mask(frames, H, W, known, device=x.device).to(x.dtype)


def _animate2(m, x, t, y, cond):
    """WanAnimate2's first segment: the extract pass over a driving video of zero latents (outside the taps), then
    one cached denoising call of x: (N, C, F, H, W), frame 0 the reference-image slot, frames 1.. the segment."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    N, C, F, H, W = x.shape
    if F < 2:
        raise DardiagError("WanAnimate2Transformer3DModel: the latents hold the reference-image slot and at "
                           "least one segment frame (pass --frames 2 or more)")
    pt, ph, pw = m.config.patch_size
    grid = torch.tensor([[F - 1, H // ph, W // pw]] * N)  # (N, 3): the driving segment's patch grid
    pixel_frames = 4 * (F - 2) + 1  # segment_frame_length: origin_len // 4 + 1 = F - 1 latent frames
    ehs, image = list(cond["encoder_hidden_states"]), _image(cond)  # N x (L, D_text); (N, 257, 1280) or None
    cache = WanAnimate2KVCache(len(m.blocks))
    drive = x.new_zeros(N, C, F - 1, H, W)  # (N, C, F - 1, H, W)
    drive_cond = torch.cat([_i2v_mask(F - 1, H, W, pixel_frames, x).expand(N, -1, -1, -1, -1), drive], 1)
    # the first segment: the reference image's slot known, no previous frames; reference latents zeros
    gen_mask = torch.cat([_i2v_mask(1, H, W, 1, x), _i2v_mask(F - 1, H, W, 0, x)], 1)  # (4, F, H, W)
    gen_cond = torch.cat([gen_mask.expand(N, -1, -1, -1, -1), x.new_zeros(N, m.config.in_dim - C - 4, F, H, W)], 1)
    blocks, attns = m.blocks, [b.self_attn for b in m.blocks]
    saved = [a.processor for a in attns]
    try:
        for a in attns:
            a.processor = _dense_in_context()
        m.blocks = torch.nn.ModuleList(_Bare(b) for b in blocks)
        with torch.no_grad():  # timestep ignored: the extract pass is modulated at timestep 1
            m(list(drive), timestep=t, encoder_hidden_states=ehs, condition_latents=list(drive_cond),
              kv_cache=cache, kv_cache_mode="extract", seq_len=(F - 1) * (H // ph) * (W // pw),
              encoder_hidden_states_image=image, offset_grid_sizes=grid)
        m.blocks = blocks
        out = m(list(x), timestep=t, encoder_hidden_states=ehs, condition_latents=list(gen_cond),
                kv_cache=cache, kv_cache_mode="cached", seq_len=F * (H // ph) * (W // pw),
                encoder_hidden_states_image=image, reference_grid_sizes=grid, origin_len=pixel_frames,
                origin_area=[H * 8, W * 8]).sample  # N x (C, F, H, W), float32
    finally:
        m.blocks = blocks
        for a, p in zip(attns, saved):
            a.processor = p
    return torch.stack(out).to(x.dtype)  # (N, C, F, H, W)


ENTRIES += (  # appended here: this section stands alone
    ClassEntry("WanAnimate2Transformer3DModel", (Stack("blocks"),), "flow1000", _animate2,
               cond=_animate2_cond, tokens=patch3d, video=True, text_tokens=WAN_TEXT,
               latent=lambda cfg: _latent(cfg, frames=1 + (ANIMATE2_FRAMES - 1) // 4 + 1, side=WAN_SIDE,
                                          channels="out_dim"),  # reference slot + an 81-frame segment at 480x832
               fixed=lambda cfg, shape: "first segment: reference-image slot known (mask 1), no previous frames, "
                     "reference-image and segment condition latents zeros; driving video zero latents (mask 1), its "
                     "extract pass with the same text and CLIP tokens (the pipeline: a fixed reference prompt and "
                     "the driving video's first frame)",
               note="one denoising step of WanAnimate2's first segment (conditional branch), after its extract pass "
                    "over the driving video, which runs without the taps and edits; z_k holds every latent frame, "
                    "the reference-image slot first; the in-context attention runs through SDPA with the model's "
                    "block mask made dense (flex attention has no backward on CPU)"),
)
