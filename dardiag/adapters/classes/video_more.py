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
from dardiag.adapters.classes.video import _latent
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
    # the pipeline's first chunk holding all frames: its KV-cache inference path, whose self-attention runs with no
    # block mask over the tokens zero-padded to a multiple of 128 (the zero keys take part in the softmax). The
    # same attention through SDPA replaces the flex one for the call (flex attention has no backward on CPU)
    from diffusers.models.transformers import transformer_anyflow_far as far

    class OneChunk:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            dtype = hidden_states.dtype
            q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)  # (N, S, D)
            q = attn.norm_q(q).to(dtype) if attn.norm_q is not None else q
            k = attn.norm_k(k).to(dtype) if attn.norm_k is not None else k
            q, k, v = (u.unflatten(2, (attn.heads, -1)).transpose(1, 2) for u in (q, k, v))  # (N, heads, S, d)
            if rotary_emb is not None:
                q, k = far.apply_rotary_emb(q, rotary_emb["query"]), far.apply_rotary_emb(k, rotary_emb["key"])
            pad = -k.shape[2] % 128
            k, v = (torch.cat([u, u.new_zeros(*u.shape[:2], pad, u.shape[3])], dim=2) for u in (k, v))  # (N, h, S+pad, d)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # (N, heads, S, d)
            return attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2, 3).type_as(q)))

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
               left_out=(("face_adapter", "face cross-attention added after every inject_face_latents_blocks-th "
                          "block: z_k is the block output before it"),),
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
