"""Video transformers: latents (N, C, F, H, W), tokens = frames x patches.

The call of each follows its diffusers pipeline; flow classes take sigma x 1000 (``flow1000``).
Image-to-video and inpainting configs take more input channels than they predict (Wan I2V 36 = 16
latent + 4 mask + 16 image, CogVideoX I2V 32, HunyuanVideo 33, EasyAnimate inpaint 33, Cosmos 17): the
latent C is then the predicted channels and the condition channels are given as zeros, the pipelines'
"no frame known" (:func:`_condition`). Classes that take (N, F, C, H, W) or packed tokens are converted
from dardiag's (N, C, F, H, W) and back in their forward.
"""

from __future__ import annotations

import torch

from dardiag.adapters.classes.spec import (
    FIRST, ClassEntry, Limit, Stack, Stream, cfg_get, full, mask, patch3d, sigma, text, text_pooled,
)

HUNYUAN_GUIDANCE = 6.0  # HunyuanVideo(-Framepack) pipelines' default guidance scale (embedded x 1000)


#################################################################################
#                     Helpers the video entries share                           #
#################################################################################


def _channels(cfg) -> int:
    """Latent channels C: the predicted channels where the input also carries condition channels
    (in_channels > out_channels); else the input channels (learned-sigma classes predict 2C)."""
    c_in, c_out = cfg["in_channels"], cfg_get(cfg, "out_channels", default=cfg["in_channels"])
    return c_out if c_in > c_out else c_in


def _latent(cfg, *, frames: int, side: tuple[int, int], channels: str | None = None):
    """(C, F, H, W) of the pipeline's default video, or of a config's own ``sample_size``/``num_frames``;
    C from the config key ``channels`` when given."""
    own = cfg.get("sample_size")
    H, W = (own, own) if isinstance(own, int) else side
    return (cfg[channels] if channels else _channels(cfg), cfg.get("num_frames") or frames, H, W)


def _frames(pixel_frames: int, vae_t: int) -> int:
    """Latent frames of a causal video VAE: the first frame alone, then one per ``vae_t`` frames."""
    return (pixel_frames - 1) // vae_t + 1


def _condition(m, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """x with zero condition channels appended along ``dim`` up to the model's in_channels."""
    extra = m.config.in_channels - x.shape[dim]
    if extra <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _condition_words(cfg, shape) -> str:
    extra = cfg["in_channels"] - shape[0]
    return f"{extra} condition channels zeros (no frame known)" if extra > 0 else ""


def _words(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


def _pack(x: torch.Tensor, p: int, pt: int) -> torch.Tensor:
    """(N, C, F, H, W) -> (N, F/pt * H/p * W/p, C pt p p): LTX pipelines' token packing."""
    N, C, F, H, W = x.shape
    x = x.reshape(N, C, F // pt, pt, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def _unpack(x: torch.Tensor, F: int, H: int, W: int, p: int, pt: int) -> torch.Tensor:
    """The inverse of :func:`_pack`: (N, T, C pt p p) -> (N, C, F, H, W)."""
    N = x.shape[0]
    x = x.reshape(N, F // pt, H // p, W // p, -1, pt, p, p)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)


def _pad_frames(x: torch.Tensor, pt: int) -> tuple[torch.Tensor, int]:
    """Frames padded at the front to a multiple of the temporal patch, as CogVideoX1.5's pipeline does
    (there with noise frames it drops after; here with copies of the first frame): (x, frames added)."""
    extra = -x.shape[2] % pt
    if extra:
        x = torch.cat([x[:, :, :1].expand(-1, -1, extra, -1, -1), x], dim=2)
    return x, extra


#################################################################################
#                                  Entries                                      #
#################################################################################


def _wan(m, x, t, y, cond):
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    image = None
    if m.condition_embedder.image_embedder is not None:  # Wan 2.1 I2V: CLIP image tokens, here zeros
        # its attention takes the last 512 context tokens as text: pad as WanPipeline pads prompts
        ehs = torch.cat([ehs, ehs.new_zeros(ehs.shape[0], max(0, 512 - ehs.shape[1]), ehs.shape[2])], dim=1)
        image = x.new_zeros(x.shape[0], WAN_IMAGE_TOKENS, m.config.image_dim)  # (N, 257, D_clip)
    out = m(_condition(m, x), timestep=t, encoder_hidden_states=ehs, encoder_hidden_states_image=image)
    return out.sample  # (N, C, F, H, W)


WAN_IMAGE_TOKENS = 257  # CLIP ViT-H/14 at 224 px: 16 x 16 patches + the class token


def _wan_fixed(cfg, shape):
    image = "CLIP image tokens zeros (257), text padded to 512" if cfg.get("image_dim") else ""
    return _words(_condition_words(cfg, shape), image)


def _allegro_rope(m, F, H, W, device):
    """AllegroPipeline's 3-D rotary embedding: frequencies per axis and the (t, h, w) id of each token."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    c, p = m.config, m.config.patch_size
    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=c.attention_head_dim, crops_coords=((0, 0), (H // p, W // p)), grid_size=(H // p, W // p),
        temporal_size=F, interpolation_scale=(c.interpolation_scale_t, c.interpolation_scale_h,
                                              c.interpolation_scale_w), device=device)
    pos = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long())  # (T, 3)
    grid_t, grid_h, grid_w = pos.reshape(-1, 3).transpose(0, 1).reshape(3, 1, -1).contiguous()
    return (freqs_t, freqs_h, freqs_w), (grid_t, grid_h, grid_w)


def _allegro(m, x, t, y, cond):
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    return m(x, encoder_hidden_states=ehs, timestep=t, encoder_attention_mask=mask(cond, dtype=x.dtype),
             image_rotary_emb=_allegro_rope(m, *x.shape[2:], x.device)).sample  # (N, C, F, H, W)


def _crop_region(src, tgt_width, tgt_height):
    """CogVideoXPipeline's get_resize_crop_region_for_grid: the grid's place in the base grid."""
    h, w = src
    if h / w > tgt_height / tgt_width:
        rh, rw = tgt_height, int(round(tgt_height / h * w))
    else:
        rh, rw = int(round(tgt_width / w * h)), tgt_width
    top, left = int(round((tgt_height - rh) / 2.0)), int(round((tgt_width - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def _cog_rope(m, F, H, W, device):
    """CogVideoX(1.5)Pipeline's rotary embedding (None for the sin-cos/learned position variants)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    c = m.config
    if not c.use_rotary_positional_embeddings:
        return None
    p, pt = c.patch_size, getattr(c, "patch_size_t", None)
    grid, base = (H // p, W // p), (c.sample_height // p, c.sample_width // p)
    if pt is None:  # CogVideoX 1.0
        return get_3d_rotary_pos_embed(c.attention_head_dim, _crop_region(grid, base[1], base[0]), grid, F,
                                       device=device)
    return get_3d_rotary_pos_embed(c.attention_head_dim, None, grid, -(-F // pt), grid_type="slice",
                                   max_size=base, device=device)  # CogVideoX 1.5


def _cog(m, x, t, y, cond, **extra):
    """CogVideoX-style call: (N, F, C, H, W) in and out; I2V condition channels zeros."""
    x, added = _pad_frames(x, getattr(m.config, "patch_size_t", None) or 1)
    N, C, F, H, W = x.shape
    kw = {"ofs": full(N, 2.0, x)} if getattr(m, "ofs_embedding", None) is not None else {}  # CogVideoX1.5 I2V
    out = m(_condition(m, x.transpose(1, 2), dim=2), encoder_hidden_states=cond["encoder_hidden_states"],
            timestep=t, image_rotary_emb=_cog_rope(m, F, H, W, x.device), **kw, **extra).sample  # (N, F, C, H, W)
    return out.transpose(1, 2)[:, :, added:]  # (N, C, F, H, W)


def _cog_latent(cfg):
    # the config's sample_frames (the pipelines' 49 frames as released: 13 latent frames)
    F = _frames(cfg.get("sample_frames") or 49, cfg.get("temporal_compression_ratio") or 4)
    pt = cfg.get("patch_size_t") or 1
    return (_channels(cfg), -(-F // pt) * pt, cfg["sample_height"], cfg["sample_width"])


def _cog_fixed(cfg, shape):
    return _words(
        _condition_words(cfg, shape), "ofs 2.0" if cfg.get("ofs_embed_dim") else "",
        "rotary ids as in the pipeline" if cfg.get("use_rotary_positional_embeddings") else "",
        "frames padded at the front to a multiple of patch_size_t" if cfg.get("patch_size_t") else "")


def _cog_fit(cfg):
    """The sin-cos and learned position embeddings cover exactly max_text_seq_length text tokens."""
    if cfg.get("use_rotary_positional_embeddings") and not cfg.get("use_learned_positional_embeddings"):
        return {}
    L = cfg.get("max_text_seq_length") or 226
    return {"text": Limit(L, f"max_text_seq_length {L}: the position embedding's text rows")}


COG_NOTE = ("family cogvideox (SNR shift 1: CogVideoX-5B, 1.5, ConsisID); CogVideoX-2B was trained with SNR "
            "shift 3: pass --family cogvideox-2b. The sin-cos/learned position variants (2B, 5B-I2V) need "
            "exactly max_text_seq_length (226) text tokens.")

CONSISID_VIT_TOKENS = 577  # EVA02-CLIP-L/14 at 336 px: 24 x 24 patches + the class token


def _consisid(m, x, t, y, cond):
    c, N = m.config, x.shape[0]
    face = {}
    if c.is_train_face:  # no reference face: identity embedding and ViT features zeros
        face = {"id_cond": x.new_zeros(N, c.LFE_id_dim),
                "id_vit_hidden": [x.new_zeros(N, CONSISID_VIT_TOKENS, c.LFE_vit_dim)] * c.LFE_num_scale}
    return _cog(m, x, t, y, cond, **face)


def _ltx(m, x, t, y, cond):
    N, C, F, H, W = x.shape
    p, pt = m.config.patch_size, m.config.patch_size_t
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    out = m(_pack(x, p, pt), encoder_hidden_states=ehs, timestep=t, encoder_attention_mask=mask(cond, dtype=torch.long),
            num_frames=F // pt, height=H // p, width=W // p,
            rope_interpolation_scale=(LTX_VAE[0] / LTX_FPS, LTX_VAE[1], LTX_VAE[2])).sample  # (N, T, C pt p p)
    return _unpack(out, F, H, W, p, pt)  # (N, C, F, H, W)


LTX_VAE = (8, 32, 32)  # LTX video VAE: frames, height, width per latent
LTX_FPS = 25  # LTXPipeline's default frame rate


LTX2_FPS = 24.0  # LTX2Pipeline's default frame rate
LTX2_AUDIO_PER_S = 16000 / 160 / 4  # audio latents per second: sampling rate / hop / audio VAE stride


def _ltx2_audio_frames(cfg) -> int:
    vae_t = cfg_get(cfg, "vae_scale_factors", default=(8, 32, 32))[0]
    pixel_frames = (_ltx2_latent(cfg)[1] - 1) * vae_t + 1
    return round(pixel_frames / LTX2_FPS * LTX2_AUDIO_PER_S)


def _ltx2_cond(cfg, L):
    D = int(cfg["caption_channels"])
    return {"encoder_hidden_states": (L, D), "audio_encoder_hidden_states": (L, D),
            "audio_noise": (_ltx2_audio_frames(cfg), int(cfg["audio_in_channels"]))}


def _ltx2(m, x, t, y, cond):
    N, C, F, H, W = x.shape
    p, pt = m.config.patch_size, m.config.patch_size_t
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    audio = cond["audio_noise"] * sigma(t, x).view(-1, 1, 1)  # (N, L_a, C_a): x0 = 0 at the video's sigma
    out, _ = m(_pack(x, p, pt), audio_hidden_states=audio, encoder_hidden_states=ehs,
               audio_encoder_hidden_states=cond["audio_encoder_hidden_states"], timestep=t, sigma=t,
               encoder_attention_mask=mask(cond, dtype=torch.long),
               audio_encoder_attention_mask=mask(cond, "audio_encoder_hidden_states", torch.long),
               num_frames=F // pt, height=H // p, width=W // p, fps=LTX2_FPS, audio_num_frames=audio.shape[1],
               use_cross_timestep=True, return_dict=False)  # (N, T, C pt p p)
    return _unpack(out, F, H, W, p, pt)


def _ltx2_latent(cfg):
    own = cfg.get("sample_size")
    H, W = (own, own) if isinstance(own, int) else (512 // 32, 768 // 32)
    return (_channels(cfg), cfg.get("num_frames") or _frames(121, 8), H, W)  # 121 frames at 512 x 768


def _mochi(m, x, t, y, cond):
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    # MochiPipeline (inverted sigmas) passes (1 - sigma) x 1000 and steps with x0 - noise: flow-rev x 1000
    return m(x, encoder_hidden_states=ehs, timestep=t.to(x.dtype) * 1000.0,
             encoder_attention_mask=mask(cond)).sample  # (N, C, F, H, W)


def _hunyuan(m, x, t, y, cond):
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    guidance = full(x.shape[0], HUNYUAN_GUIDANCE * 1000.0, x) if m.config.guidance_embeds else None
    return m(_condition(m, x), timestep=t, encoder_hidden_states=ehs,
             encoder_attention_mask=mask(cond, dtype=torch.long),
             pooled_projections=cond["pooled_projections"], guidance=guidance).sample  # (N, C, F, H, W)


def _hunyuan_fixed(cfg, shape):
    replace = ("first latent frame modulated as clean (token_replace)"
               if cfg.get("image_condition_type") == "token_replace" else "")
    return _words(_condition_words(cfg, shape), "supplied or all-valid text mask",
                  f"guidance {HUNYUAN_GUIDANCE:g} (x1000)" if cfg.get("guidance_embeds") else "", replace)


HUNYUAN_REFINER = (("context_embedder.token_refiner", "refines the text embeddings only, before the main stacks"),)

HV15_IMAGE_TOKENS = 729  # SigLIP image tokens of HunyuanVideo-1.5 (27 x 27); zeros for text-to-video
HV15_GLYPH_TOKENS = 256  # ByT5 glyph tokens (quoted text in the prompt); none here


def _hunyuan15(m, x, t, y, cond):
    N, c = x.shape[0], m.config
    ehs = cond["encoder_hidden_states"]  # (N, L, D_mllm)
    glyph = x.new_zeros(N, HV15_GLYPH_TOKENS, c.text_embed_2_dim)  # (N, 256, D_byt5), all masked out
    return m(_condition(m, x), timestep=t, encoder_hidden_states=ehs,
             encoder_attention_mask=mask(cond, dtype=torch.long),
             encoder_hidden_states_2=glyph, encoder_attention_mask_2=glyph.new_zeros(glyph.shape[:2], dtype=torch.long),
             image_embeds=x.new_zeros(N, HV15_IMAGE_TOKENS, c.image_embed_dim)).sample  # (N, C, F, H, W)


def _hunyuan15_latent(cfg):
    # HunyuanVideo15Pipeline: 121 frames at the 16:9 bucket of target_size (640: 480 x 848 px; VAE 16 x 4)
    H, W = {480: (352, 624), 640: (480, 848)}.get(cfg.get("target_size") or 640, (480, 848))
    own = cfg.get("sample_size")
    H, W = (own, own) if isinstance(own, int) else (H // 16, W // 16)
    return (_channels(cfg), cfg.get("num_frames") or _frames(121, 4), H, W)


FRAMEPACK_HISTORY = (1, 2, 16)  # clean 1x, 2x and 4x history frames (inverted anti-drifting sampling)
FRAMEPACK_IMAGE_TOKENS = 729  # SigLIP image tokens


def _framepack(m, x, t, y, cond):
    """The first section of a new video with no start image: start-frame latent and history zeros, the
    pipeline's frame indices [start, window, 1x, 2x, 4x]; the blocks see [history; window] tokens."""
    N, C, F, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    h1, h2, h4 = FRAMEPACK_HISTORY
    index = torch.arange(1 + F + h1 + h2 + h4, device=x.device)
    start, window, i1, i2, i4 = index.split([1, F, h1, h2, h4])

    def zeros(frames):
        return x.new_zeros(N, C, frames, H, W)  # (N, C, frames, H, W)
    guidance = full(N, HUNYUAN_GUIDANCE * 1000.0, x) if m.config.guidance_embeds else None
    return m(x, timestep=t, encoder_hidden_states=ehs, encoder_attention_mask=mask(cond, dtype=torch.long),
             pooled_projections=cond["pooled_projections"],
             image_embeds=x.new_zeros(N, FRAMEPACK_IMAGE_TOKENS, m.config.image_proj_dim),
             indices_latents=window, guidance=guidance, latents_clean=zeros(1 + h1),
             indices_latents_clean=torch.cat([start, i1]), latents_history_2x=zeros(h2),
             indices_latents_history_2x=i2, latents_history_4x=zeros(h4), indices_latents_history_4x=i4).sample


def _easyanimate(m, x, t, y, cond):
    extra = m.config.in_channels - x.shape[1]  # inpaint/control models: mask and video latents zeros (t2v)
    inpaint = x.new_zeros(x.shape[0], extra, *x.shape[2:]) if extra > 0 else None
    return m(x, t, encoder_hidden_states=cond["encoder_hidden_states"], inpaint_latents=inpaint).sample


def _cosmos_cond(cfg, L):
    dim = cfg["crossattn_proj_in_channels"] if cfg.get("use_crossattn_projection") else cfg["text_embed_dim"]
    return {"encoder_hidden_states": (L, int(dim))}


def _cosmos(m, x, t, y, cond):
    c, (N, C, F, H, W) = m.config, x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    if c.img_context_dim_in:  # Cosmos-Transfer: image context zeros, as its pipeline without one
        ehs = (ehs, x.new_zeros(N, c.img_context_num_tokens, c.img_context_dim_in))
    extra = c.in_channels - C  # the condition mask of video2world configs: no conditioning frame
    return m(x, timestep=t.to(x.dtype), encoder_hidden_states=ehs, padding_mask=x.new_zeros(1, 1, H, W),
             condition_mask=x.new_zeros(N, extra, F, H, W) if extra > 0 else None).sample  # (N, C, F, H, W)


def _cosmos_fit(cfg):
    """The learned and rotary position tables span max_size (frames, rows, columns) of the latent."""
    T, H, W = cfg.get("max_size") or (128, 240, 240)
    why = f"max_size {[T, H, W]}: the position tables"
    return {"frames": Limit(T, why), "height": Limit(H, why), "width": Limit(W, why)}


def _cosmos_fixed(cfg, shape):
    extra = cfg["in_channels"] - shape[0]
    return _words("padding mask zeros", "condition mask zeros (no conditioning frame)" if extra > 0 else "",
                  "image context zeros" if cfg.get("img_context_dim_in") else "", "fps None")


ENTRIES = (
    ClassEntry(
        "WanTransformer3DModel", (Stack("blocks"),), "flow1000", _wan,
        cond=text("encoder_hidden_states", ("text_dim",)), tokens=patch3d, video=True, text_tokens=512,
        latent=lambda cfg: _latent(cfg, frames=21, side=(60, 104)),  # 81 frames at 480x832
        fixed=_wan_fixed),
    ClassEntry(
        "AllegroTransformer3DModel", (Stack("transformer_blocks"),), "dit", _allegro,
        cond=text("encoder_hidden_states", ("caption_channels",)), tokens=patch3d, video=True, text_tokens=512,
        latent=lambda cfg: (_channels(cfg), cfg["sample_frames"], cfg["sample_height"], cfg["sample_width"]),
        fixed=lambda cfg, shape: "rotary ids as in AllegroPipeline, supplied or all-valid text mask",
        note="DDPM epsilon (EulerAncestralDiscreteScheduler, linear betas 1e-4..0.02) as released"),
    ClassEntry(
        "CogVideoXTransformer3DModel", (Stack("transformer_blocks", FIRST),), "cogvideox", _cog,
        cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch3d, video=True, text_tokens=226,
        latent=_cog_latent, fixed=_cog_fixed, note=COG_NOTE, fit=_cog_fit),
    ClassEntry(
        "ConsisIDTransformer3DModel", (Stack("transformer_blocks", FIRST),), "cogvideox", _consisid,
        cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch3d, video=True, text_tokens=226,
        latent=_cog_latent, fit=_cog_fit,
        fixed=lambda cfg, shape: _words(_cog_fixed(cfg, shape), "face id embedding and ViT features zeros"
                                        if cfg.get("is_train_face") else ""),
        left_out=(("perceiver_cross_attention", "face cross-attention added between blocks: z_k is the block "
                   "output before block k's face residual"),
                  ("local_facial_extractor.layers", "reads the reference face's ViT features only"))),
    ClassEntry(
        "LTXVideoTransformer3DModel", (Stack("transformer_blocks"),), "flow1000", _ltx,
        cond=text("encoder_hidden_states", ("caption_channels",)), tokens=patch3d, video=True, text_tokens=128,
        latent=lambda cfg: _latent(cfg, frames=_frames(161, 8), side=(512 // 32, 704 // 32)),
        fixed=lambda cfg, shape: f"rope interpolation scale (8/{LTX_FPS}, 32, 32), supplied or all-valid text mask"),
    ClassEntry(
        "LTX2VideoTransformer3DModel", (Stack("transformer_blocks", FIRST),), "flow1000", _ltx2,
        cond=_ltx2_cond, tokens=patch3d, video=True, text_tokens=1024, latent=_ltx2_latent,
        fixed=lambda cfg, shape: f"fps {LTX2_FPS:g}, supplied or all-valid text masks, cross timestep on, "
                                 "audio latents x0 = 0 noised to the video's sigma with audio_noise",
        note="audio+video model: the video stream is profiled; the audio stream is a zero latent at the "
             "video's noise level (its noise drawn per sample), its text embeddings synthetic"),
    ClassEntry(
        "MochiTransformer3DModel", (Stack("transformer_blocks", FIRST),), "flow-rev", _mochi,
        cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch3d, video=True, text_tokens=256,
        latent=lambda cfg: _latent(cfg, frames=_frames(19, 6), side=(480 // 8, 848 // 8)),
        fixed=lambda cfg, shape: "timestep (1 - sigma) x 1000, supplied or all-valid text mask"),
    ClassEntry(
        "HunyuanVideoTransformer3DModel",
        (Stack("transformer_blocks", FIRST), Stack("single_transformer_blocks", FIRST)), "flow1000", _hunyuan,
        cond=text_pooled(("text_embed_dim",)), tokens=patch3d, video=True, text_tokens=256,
        latent=lambda cfg: _latent(cfg, frames=_frames(129, 4), side=(720 // 8, 1280 // 8)),
        fixed=_hunyuan_fixed, left_out=HUNYUAN_REFINER),
    ClassEntry(
        "HunyuanVideo15Transformer3DModel", (Stack("transformer_blocks", FIRST),), "flow1000", _hunyuan15,
        cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch3d, video=True, text_tokens=1000,
        latent=_hunyuan15_latent, left_out=HUNYUAN_REFINER,
        fixed=lambda cfg, shape: _words(_condition_words(cfg, shape), "SigLIP image tokens zeros (text-to-video)",
                                        "no ByT5 glyph tokens (masked out)", "supplied or all-valid text mask")),
    ClassEntry(
        "HunyuanVideoFramepackTransformer3DModel",
        (Stack("transformer_blocks", Stream(index=0, part="tail")),
         Stack("single_transformer_blocks", Stream(index=0, part="tail"))), "flow1000", _framepack,
        cond=text_pooled(("text_embed_dim",)), tokens=patch3d, video=True, text_tokens=256,
        latent=lambda cfg: _latent(cfg, frames=9, side=(720 // 8, 1280 // 8)),  # one 9-frame window
        fixed=lambda cfg, shape: _words("first section: start frame and 1x/2x/4x history latents zeros",
                                        "SigLIP image tokens zeros", "supplied or all-valid text mask",
                                        f"guidance {HUNYUAN_GUIDANCE:g} (x1000)" if cfg.get("guidance_embeds") else ""),
        left_out=HUNYUAN_REFINER,
        note="the blocks see [history; window] tokens: the window (the latents) is profiled"),
    ClassEntry(
        "EasyAnimateTransformer3DModel", (Stack("transformer_blocks", FIRST),), "flow1000", _easyanimate,
        cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch3d, video=True, text_tokens=256,
        latent=lambda cfg: _latent(cfg, frames=_frames(49, 4), side=(512 // 8, 512 // 8)),
        fixed=lambda cfg, shape: _words(_condition_words(cfg, shape).replace("condition", "inpaint"))),
    ClassEntry(
        "CosmosTransformer3DModel", (Stack("transformer_blocks"),), "flow", _cosmos,
        cond=_cosmos_cond, tokens=patch3d, video=True, text_tokens=512,
        latent=lambda cfg: _latent(cfg, frames=_frames(93, 4), side=(704 // 8, 1280 // 8)),
        fixed=_cosmos_fixed, fit=_cosmos_fit,
        note="Cosmos-Predict2/2.5 process (rectified flow, t = sigma in [0, 1], velocity); Cosmos-1.0 "
             "checkpoints (EDM preconditioning) follow another process that dardiag has no family for"),
)
