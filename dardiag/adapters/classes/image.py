"""Image transformers with one image token stream: text enters by cross-attention, or the image and
text tokens share one sequence (``HEAD``/``TAIL``, sequence-first in Ernie-Image), or not at all; refiner
stacks that run on the image tokens alone before the main stack are profiled as their own stack
(text-only refiners are left out).

DiT/PixArt follow DDPM (epsilon, learned sigma), HunyuanDiT DDPM with v prediction (``ddpm-v``); the
flow models take sigma x 1000 (``flow1000``), sigma (``flow``) or, as the Lumina/Z-Image/OmniGen
pipelines do, 1 - sigma and predict x0 - noise (``flow-rev``).
Entries: shared/design/checkpoints.md, "diffusers transformers"; the call of each follows its
diffusers pipeline.
"""

from __future__ import annotations

import torch

from dardiag.adapters.classes.spec import (
    HEAD, TAIL, ClassEntry, Limit, Stack, Stream, cfg_get, mask, patch2d, sides, square_latent, text,
)
from dardiag.errors import DardiagError

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
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"], timestep=t, added_cond_kwargs=added,
             encoder_attention_mask=mask(cond, dtype=torch.long)).sample  # (N, C_out, H, W)


def _sana(m, x, t, y, cond):
    c, guidance = m.config, None
    if c.guidance_embeds:  # Sana-Sprint: guidance 4.5 (its pipeline's default) x guidance_embeds_scale, as it passes it
        guidance = torch.full((x.shape[0],), 4.5 * c.guidance_embeds_scale, device=x.device, dtype=x.dtype)
    else:  # SanaPipeline scales its timestep by the config's timestep_scale
        t = t * c.timestep_scale
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"], timestep=t, guidance=guidance,
             encoder_attention_mask=mask(cond, dtype=torch.long)).sample  # (N, C_out, H, W)


def _grid_crop(rows: int, cols: int, base: int):
    """The grid's crop region inside a base x base grid, as HunyuanDiTPipeline's
    get_resize_crop_region_for_grid computes it (the rotary embedding is laid over it)."""
    if rows > cols:
        h, w = base, int(round(base / rows * cols))
    else:
        h, w = int(round(base / cols * rows)), base
    top, left = int(round((base - h) / 2.0)), int(round((base - w) / 2.0))
    return (top, left), (top + h, left + w)


def _hunyuan(m, x, t, y, cond):
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    N, _, H, W = x.shape
    p = m.config.patch_size
    rows, cols = H // p, W // p
    rope = get_2d_rotary_pos_embed(m.inner_dim // m.num_heads, _grid_crop(rows, cols, 512 // VAE_FACTOR // p),
                                   (rows, cols), device=x.device, output_type="pt")  # 512 px base grid
    # image_meta_size: original size 1024x1024 px, target size = this latent's, crop (0, 0); style 0
    meta = torch.tensor([[1024, 1024, H * VAE_FACTOR, W * VAE_FACTOR, 0, 0]], dtype=x.dtype,
                        device=x.device).repeat(N, 1)  # (N, 6); the model views it flat
    clip, t5 = cond["encoder_hidden_states"], cond["encoder_hidden_states_t5"]  # (N, 77, D), (N, 256, D_t5)
    out = m(x, t.to(x.dtype), encoder_hidden_states=clip,
            text_embedding_mask=mask(cond, "encoder_hidden_states", torch.long), encoder_hidden_states_t5=t5,
            text_embedding_mask_t5=mask(cond, "encoder_hidden_states_t5", torch.long), image_meta_size=meta,
            style=torch.zeros(N, dtype=torch.long, device=x.device), image_rotary_emb=rope)
    return out.sample  # (N, 2C, H, W): eps, then the learned variance


def _hunyuan_cond(cfg, L):
    # the text lengths are the config's: the model swaps masked positions for learned padding embeddings
    # of exactly text_len + text_len_t5 tokens
    return {"encoder_hidden_states": (int(cfg["text_len"]), int(cfg["cross_attention_dim"])),
            "encoder_hidden_states_t5": (int(cfg["text_len_t5"]), int(cfg["cross_attention_dim_t5"]))}


def _lumina2(m, x, t, y, cond):
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    return m(x, timestep=t.to(x.dtype), encoder_hidden_states=ehs, encoder_attention_mask=mask(cond)).sample


def _lumina_next(m, x, t, y, cond):
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    N, _, H, W = x.shape
    side = m.config.sample_size  # LuminaPipeline's default latent side
    # LuminaPipeline's time-aware rotary scaling (scaling_watershed 1.0): linear below t = 1, NTK at it
    scale = (H * W / side**2) ** 0.5
    linear, ntk = (scale, 1.0) if float(t[0]) < 1.0 else (1.0, scale)
    rope = get_2d_rotary_pos_embed_lumina(m.head_dim, 384, 384, linear_factor=linear, ntk_factor=ntk)
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    return m(x, timestep=t.to(x.dtype), encoder_hidden_states=ehs, encoder_mask=mask(cond, dtype=torch.long),
             image_rotary_emb=rope,
             cross_attention_kwargs={"base_sequence_length": (side * VAE_FACTOR // 16) ** 2}).sample  # (N, 2C, H, W)


def _prx_latent(cfg):
    if cfg.get("in_channels") == 3 or cfg.get("resolution_embeds"):
        raise DardiagError(
            "PRXPixel configs (RGB pixels, resolution embeds) predict x0 from randn x 2 noise; no dardiag family "
            "describes that process yet: only latent-space PRX is profiled")
    # PRXPipeline's default 512 px: Flux VAE (16 channels, 8x) or DC-AE (32 channels, 32x)
    return square_latent(512 // (32 if cfg["in_channels"] == 32 else VAE_FACTOR))(cfg)


def _prx(m, x, t, y, cond):
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    return m(x, timestep=t.to(x.dtype), encoder_hidden_states=ehs, attention_mask=mask(cond)).sample


def _fibo2_cond(cfg, L):
    # one bundle for the Perceiver, then one per injection block: (1 + K, L, D_text) per sample
    return {"encoder_hidden_states": (1 + len(cfg["injection_layer_ids"]), L, int(cfg["cap_feat_dim"]))}


def _fibo2(m, x, t, y, cond):
    # no encoder_attention_mask: nothing is padded (the pipeline drops an all-valid mask too)
    return m(x, timestep=t.to(x.dtype), encoder_hidden_states=cond["encoder_hidden_states"]).sample


def _fibo2_fixed(cfg, shape):
    return "no context_latents (text to image), no text mask; gist tokens counted from L as the model does"


def _token_ids(z: torch.Tensor, first: int, end: int) -> torch.Tensor:
    """Token ids (N, L) from the conditioning tensor: supplied ids (non-negative integers) as they are;
    synthetic N(0, 1) draws become ids uniform over the ordinary ids first..end-1 through the normal CDF."""
    if torch.equal(z, z.round()) and z.min() >= 0:
        return z.long()
    return first + (torch.special.ndtr(z.float()) * (end - first)).long().clamp_(0, end - first - 1)


def _omnigen(m, x, t, y, cond):
    N, _, H, W = x.shape
    p, pad = m.config.patch_size, m.config.pad_token_id
    # ordinary ids: below pad_token_id (special tokens follow it), or after it when it is the first id
    first, end = (1, m.config.vocab_size) if pad == 0 else (0, min(pad, m.config.vocab_size))
    ids = _token_ids(cond["input_ids"], first, end)  # (N, L)
    L, T = ids.shape[1], (H // p) * (W // p)
    S = L + 1 + T  # [text; time token; image]
    # OmniGenCollator.create_mask: causal over text and time token, image tokens attend to everything
    attn = torch.zeros(S, S, dtype=x.dtype, device=x.device)
    attn[: L + 1, : L + 1] = torch.tril(torch.ones(L + 1, L + 1, dtype=x.dtype, device=x.device))
    attn[L + 1:] = 1
    positions = torch.arange(S, device=x.device).expand(N, S)  # (N, S)
    return m(x, timestep=t.to(x.dtype), input_ids=ids, input_img_latents=[], input_image_sizes={},
             attention_mask=attn.expand(N, S, S), position_ids=positions).sample


def _zimage_tokens(cfg, shape):
    # image tokens are padded to a multiple of 32 (SEQ_MULTI_OF) with a learned pad token, which the
    # blocks see as image tokens
    p = cfg["all_patch_size"][0]
    T = (shape[-2] // p) * (shape[-1] // p)
    return -(-T // 32) * 32


def _zimage(m, x, t, y, cond):
    frames = list(x.unsqueeze(2).unbind(0))  # N x (C, 1, H, W): one-frame images, as ZImagePipeline passes
    caps = list(cond["cap_feats"].unbind(0))  # N x (L, D_text)
    out = m(frames, t.to(x.dtype), caps, patch_size=m.config.all_patch_size[0],
            f_patch_size=m.config.all_f_patch_size[0], return_dict=False)[0]
    return torch.stack(out).squeeze(2)  # (N, C, H, W)


def _ernie(m, x, t, y, cond):
    text_bth = cond["text_bth"]  # (N, L, D_text)
    lens = torch.full((x.shape[0],), text_bth.shape[1], dtype=torch.long, device=x.device)  # nothing padded
    return m(x, timestep=t.to(x.dtype), text_bth=text_bth, text_lens=lens).sample  # (N, C, H, W)


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
        fixed=lambda cfg, shape: f"guidance 4.5 x {cfg_get(cfg, 'guidance_embeds_scale', default=0.1):g}"
        if cfg_get(cfg, "guidance_embeds") else "",
        note="Sana-Sprint configs (guidance_embeds) are driven as flow1000 here; SanaSprintPipeline samples them in "
        "its SCM parameterization (timestep sin/(cos + sin), a transformed output), which is not checked"),
    ClassEntry(
        "HunyuanDiT2DModel", (Stack("blocks"),), "ddpm-v", _hunyuan, cond=_hunyuan_cond, tokens=patch2d,
        text_tokens=77,
        fixed=lambda cfg, shape: "supplied or all-valid text masks, image_meta_size (1024, 1024, target px, 0, 0), "
        "style 0, 2-D rotary over the 512 px base grid",
        note="DDPM v prediction on scaled-linear betas 0.00085..0.03 (HunyuanDiT's DDPMScheduler); text lengths "
        "are the config's text_len and text_len_t5 (--text-tokens does not apply); the second half of the blocks "
        "takes long skips from the first"),
    ClassEntry(
        "Lumina2Transformer2DModel", (Stack("noise_refiner"), Stack("layers", TAIL)), "flow-rev", _lumina2,
        cond=text("encoder_hidden_states", ("cap_feat_dim",)), tokens=patch2d, text_tokens=256,
        left_out=(("context_refiner", "text tokens only"),),
        fixed=lambda cfg, shape: "supplied or all-valid text mask",
        fit=lambda cfg: {"text": Limit(cfg["axes_lens"][0] - 1, f"axes_lens[0] {cfg['axes_lens'][0]}: caption "
                                       "positions, then the image's")}),
    ClassEntry(
        "LuminaNextDiT2DModel", (Stack("layers"),), "flow-rev", _lumina_next,
        cond=text("encoder_hidden_states", ("cross_attention_dim",)), tokens=patch2d, text_tokens=256,
        fixed=lambda cfg, shape: "supplied or all-valid text mask, LuminaPipeline's time-aware 2-D rotary (384 x 384), "
        "proportional attention"),
    ClassEntry(
        "PRXTransformer2DModel", (Stack("blocks"),), "flow", _prx,
        cond=text("encoder_hidden_states", ("context_in_dim",)), tokens=patch2d, latent=_prx_latent,
        text_tokens=256, fixed=lambda cfg, shape: "supplied or all-valid text mask",
        note="timestep = sigma in [0, 1] as PRXPipeline passes it; 256 text tokens assumed for the tokenizer's "
        "max length (set --text-tokens); PRXPixel configs are refused"),
    ClassEntry(
        "BriaFibo2Transformer2DModel", (Stack("noise_refiner"), Stack("layers", TAIL)), "flow", _fibo2,
        cond=_fibo2_cond, tokens=patch2d, latent=square_latent(1024 // VAE_FACTOR), text_tokens=4096,
        left_out=(("perceiver.layers", "gist tokens read from the text only"),), fixed=_fibo2_fixed,
        note="the main layers run on [gist; image] tokens; prompts are padded to the longest, not to 4096 "
        "tokens: pass --text-tokens for a typical caption length (the gist count follows from it)"),
    ClassEntry(
        "OmniGenTransformer2DModel", (Stack("layers", TAIL),), "flow-rev", _omnigen,
        cond=lambda cfg, L: {"input_ids": (L,)}, tokens=patch2d, latent=square_latent(1024 // VAE_FACTOR), text_tokens=128,
        fit=lambda cfg: sides(cfg.get("pos_embed_max_size") or 192, cfg.get("patch_size"),
                              f"pos_embed_max_size {cfg.get('pos_embed_max_size') or 192} patches a side"),
        fixed=lambda cfg, shape: "synthetic input_ids: L token ids uniform over the vocabulary; no input "
        "images; OmniGen's causal text mask and positions 0..L+T",
        note="text enters as token ids of the model's own vocabulary (supply real ones as input_ids, shape "
        "[N, --text-tokens]); prompts are not padded: 128 tokens by default"),
    ClassEntry(
        "ZImageTransformer2DModel", (Stack("noise_refiner"), Stack("layers", HEAD)), "flow-rev", _zimage,
        cond=text("cap_feats", ("cap_feat_dim",)), tokens=_zimage_tokens, latent=square_latent(1024 // VAE_FACTOR), text_tokens=512,
        left_out=(("context_refiner", "text tokens only"), ("siglip_refiner", "omni mode only: image inputs")),
        fixed=lambda cfg, shape: "basic (text to image) mode, one frame",
        fit=lambda cfg: {"text": Limit((cfg["axes_lens"][0] - 2) // 32 * 32, f"axes_lens[0] {cfg['axes_lens'][0]}: "
                                       "caption positions from 1, padded to a multiple of 32, then the image's")},
        note="image and caption tokens are each padded to a multiple of 32: image token counts include the "
        "learned pad tokens when (H/p)(W/p) is not a multiple of 32"),
    ClassEntry(
        "ErnieImageTransformer2DModel", (Stack("layers", Stream(part="head", layout="seq")),), "flow1000", _ernie,
        cond=text("text_bth", ("text_in_dim",)), tokens=patch2d, latent=square_latent(1024 // 16), text_tokens=256,
        fixed=lambda cfg, shape: "all text tokens valid (text_lens = L)",
        note="the blocks run sequence-first on [image; text]: the image part is read as (N, T, D); latents are "
        "the pipeline's 2x2-patchified VAE latents (128 channels at 1/16); prompts are not padded (and the "
        "prompt enhancer rewrites them): 256 tokens by default, set --text-tokens"),
)
