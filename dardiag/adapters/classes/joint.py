"""Image transformers with a joint text-image stream (MMDiT): double-stream blocks, then, in some
classes, single-stream blocks over the concatenated sequence. ``z_k`` is the image stream after
every block of every stack, in call order (diagnostics.md §2).

Flow classes take sigma x 1000 (``flow1000``), or sigma in [0, 1] which the forward below passes as
``t / 1000``; the call of each follows its diffusers pipeline.
"""

from __future__ import annotations

import inspect
import math

import torch

from dardiag.adapters.classes.spec import (
    FIRST, HEAD, SECOND, TAIL, ClassEntry, Stack, cfg_get, full, grid_ids, mask, pack2x2, patch2d, sides, sigma,
    text, text_pooled, unpack2x2, pack_patches, square_latent, unpack_patches,
)

FLUX_GUIDANCE = 3.5  # FluxPipeline's default guidance scale for guidance-distilled (dev) configs
FLUX2_GUIDANCE = 4.0  # Flux2Pipeline's default
FLUX3_ROPE_SCALE = 0.5  # FLUX.3's modular pipeline scales the image rotary rows/columns by this (as trained)
HUNYUAN_GUIDANCE = 3.25  # HunyuanImagePipeline's default distilled guidance (x 1000 into the model)
HUNYUAN_GLYPH_TOKENS = 128  # HunyuanImagePipeline's ByT5 length; a prompt without quoted text gives zeros
LONGCAT_TEXT_MAX = 512  # LongCatImagePipeline's tokenizer maximum: image rotary positions start after it


#################################################################################
#             Helpers of the entries below (this group's only)                  #
#################################################################################


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H * W, C): one token per latent pixel (classes that take their latents unpatched)."""
    return x.flatten(2).transpose(1, 2)


def _untokens(out: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(N, H * W, C) -> (N, C, H, W)."""
    return out.transpose(1, 2).unflatten(2, (H, W))


def _ids4(rows: int, cols: int, *, device, scale: float = 1.0) -> torch.Tensor:
    """FLUX.2-style 4-axis rotary ids of an image grid (T, 4): (0, row, column, 0), rows/columns x ``scale``."""
    ids = torch.zeros(rows, cols, 4, device=device)
    ids[..., 1] = torch.arange(rows, device=device)[:, None] * scale
    ids[..., 2] = torch.arange(cols, device=device)[None, :] * scale
    return ids.reshape(-1, 4)


def _text_ids4(L: int, *, device) -> torch.Tensor:
    """FLUX.2-style text ids (L, 4): (0, 0, 0, position)."""
    ids = torch.zeros(L, 4, device=device)
    ids[:, 3] = torch.arange(L, device=device)
    return ids


def _diagonal_ids(L: int, *, device, first: float = 0.0) -> torch.Tensor:
    """Text ids (L, 3) of Ovis/LongCat pipelines: (first, i, i)."""
    ids = torch.arange(L, device=device, dtype=torch.float32)[:, None].repeat(1, 3)
    ids[:, 0] = first
    return ids


def _unshifted(t: torch.Tensor, x: torch.Tensor, tokens: int) -> torch.Tensor:
    """CogView4/GLM-Image pipelines pass the *unshifted* timestep s x 1000 while the latents sit at sigma =
    mu s / (mu s + 1 - s) (the scheduler's linear dynamic shift, mu = 0.75 sqrt(T / 256) + 0.25 from the image
    tokens T, the pipelines' defaults): invert the shift of the native sigma x 1000."""
    mu = 0.75 * (tokens / 256) ** 0.5 + 0.25
    s = sigma(t, x)
    return 1000.0 * s / (mu * (1 - s) + s)


def _sizes(x: torch.Tensor, factor: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(original/target size in pixels (N, 2), crop top-left (N, 2) = 0) of SDXL-style micro-conditioning."""
    N, _, H, W = x.shape
    size = torch.tensor([[H * factor, W * factor]], dtype=x.dtype, device=x.device).expand(N, 2)
    return size, torch.zeros(N, 2, dtype=x.dtype, device=x.device)


def _sizes_fixed(cfg, shape):
    C, H, W = shape
    return f"original and target size {H * 8}x{W * 8} px, crop (0, 0)"


def _packed_tokens(cfg, shape):
    return (shape[-2] // 2) * (shape[-1] // 2)


def _packed_latent(cfg):
    # Flux-style configs count packed channels and carry no sample size: 128 (1024 px) is the default
    side = cfg_get(cfg, "sample_size", default=128)
    return (cfg["in_channels"] // 4, side, side)


def _sd3(m, x, t, y, cond):
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"],
             pooled_projections=cond["pooled_projections"], timestep=t).sample  # (N, C, H, W)


def _flux(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    guidance = full(N, FLUX_GUIDANCE, x) if m.config.guidance_embeds else None
    out = m(
        pack2x2(x),  # (N, T, 4C)
        encoder_hidden_states=ehs,
        pooled_projections=cond["pooled_projections"],
        timestep=sigma(t, x),  # Flux scales sigma by 1000 inside
        img_ids=grid_ids(H // 2, W // 2, device=x.device),  # (T, 3)
        txt_ids=torch.zeros(ehs.shape[1], 3, device=x.device),  # (L, 3)
        guidance=guidance,
    ).sample  # (N, T, 4C)
    return unpack2x2(out, H, W)  # (N, C, H, W)


def _flux_fixed(cfg, shape):
    words = "txt_ids zeros, img_ids (0, row, column) as in FluxPipeline"
    return words + (f", guidance {FLUX_GUIDANCE:g}" if cfg.get("guidance_embeds") else "")


def _flux_streams(model):
    singles = model.single_transformer_blocks
    if len(singles) and "encoder_hidden_states" not in inspect.signature(type(singles[0]).forward).parameters:
        return {"single_transformer_blocks": TAIL}  # diffusers < 0.35: [text; image] as one tensor
    return {}


def _qwen(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    out = m(
        pack2x2(x),  # (N, T, 4C)
        encoder_hidden_states=ehs,
        encoder_hidden_states_mask=mask(cond, dtype=torch.long),
        timestep=sigma(t, x),
        img_shapes=[[(1, H // 2, W // 2)]] * N,
        guidance=full(N, 1.0, x) if m.config.guidance_embeds else None,
    ).sample  # (N, T, 4C)
    return unpack2x2(out, H, W)


def _auraflow(m, x, t, y, cond):
    # the pipeline passes t / 1000; the timestep projection scales by 1000 inside
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"], timestep=sigma(t, x)).sample  # (N, C, H, W)


def _bria(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    out = m(pack2x2(x), encoder_hidden_states=ehs, timestep=t,  # BriaPipeline passes sigma x 1000 as is
            img_ids=grid_ids(H // 2, W // 2, device=x.device), txt_ids=torch.zeros(ehs.shape[1], 3, device=x.device),
            ).sample  # (N, T, 4C)
    return unpack2x2(out, H, W)


def _fibo(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    # BriaFiboPipeline's key-padding mask over [text; image] when a prompt is padded (it passes none otherwise)
    keep = torch.cat([mask(cond), torch.ones(N, H * W, dtype=torch.bool, device=x.device)], dim=1)  # (N, L + T)
    padded = {} if keep.all() else {"joint_attention_kwargs": {"attention_mask": keep[:, None, None, :]}}
    out = m(_tokens(x), encoder_hidden_states=ehs,  # the pipeline's default: no 2x2 patching
            text_encoder_layers=list(cond["text_encoder_layers"].unbind(1)),  # K x (N, L, D_layer)
            timestep=t, img_ids=grid_ids(H, W, device=x.device),
            txt_ids=torch.zeros(ehs.shape[1], 3, device=x.device), **padded).sample  # (N, T, C)
    return _untokens(out, H, W)


def _fibo_cond(cfg, L):
    K = int(cfg["num_layers"]) + int(cfg["num_single_layers"])  # one text-encoder layer per block
    return {"encoder_hidden_states": (L, int(cfg["joint_attention_dim"])),
            "text_encoder_layers": (K, L, int(cfg["text_encoder_dim"]))}


def _chroma(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    # ChromaPipeline's mask: the text mask in the embeddings' float dtype, then ones over the image tokens (the
    # model makes a float, i.e. additive, pairwise mask of it: an all-valid one changes nothing)
    keep = torch.cat([mask(cond, dtype=x.dtype), x.new_ones(N, (H // 2) * (W // 2))], dim=1)  # (N, L + T)
    out = m(pack2x2(x), encoder_hidden_states=ehs, timestep=sigma(t, x),  # scaled by 1000 inside
            img_ids=grid_ids(H // 2, W // 2, device=x.device), txt_ids=torch.zeros(ehs.shape[1], 3, device=x.device),
            attention_mask=keep).sample  # (N, T, 4C)
    return unpack2x2(out, H, W)


def _cogview3plus(m, x, t, y, cond):
    size, crop = _sizes(x)
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"], timestep=t, original_size=size,
             target_size=size, crop_coords=crop).sample  # (N, C, H, W)


def _cogview4(m, x, t, y, cond):
    size, crop = _sizes(x)
    T = patch2d(dict(m.config), x.shape[1:])
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"], timestep=_unshifted(t, x, T),
             original_size=size, target_size=size, crop_coords=crop).sample  # (N, C, H, W)


def _flux2(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    guidance = full(N, FLUX2_GUIDANCE, x) if m.config.guidance_embeds else None
    out = m(_tokens(x), encoder_hidden_states=ehs, timestep=sigma(t, x), guidance=guidance,
            img_ids=_ids4(H, W, device=x.device), txt_ids=_text_ids4(ehs.shape[1], device=x.device)).sample
    return _untokens(out, H, W)  # (N, C, H, W)


def _flux3(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    s = sigma(t, x)
    out = m(_tokens(x), encoder_hidden_states=ehs, timestep=s,
            img_ids=_ids4(H, W, device=x.device, scale=FLUX3_ROPE_SCALE),
            txt_ids=_text_ids4(ehs.shape[1], device=x.device),
            target_timestep=s if m.config.flow_map else None).sample  # (N, T, C)
    return _untokens(out, H, W)


def _glm(m, x, t, y, cond):
    N, C, H, W = x.shape
    size, crop = _sizes(x)
    T = patch2d(dict(m.config), x.shape[1:])
    return m(x, encoder_hidden_states=cond["encoder_hidden_states"],
             prior_token_id=torch.zeros(N, T, dtype=torch.long, device=x.device),  # dropped below
             prior_token_drop=torch.ones(N, T, dtype=torch.bool, device=x.device),
             timestep=_unshifted(t, x, T) - 1,  # the pipeline passes its timestep minus 1
             target_size=size, crop_coords=crop).sample  # (N, C, H, W)


def _hidream(m, x, t, y, cond):
    out = m(x, timesteps=t, encoder_hidden_states_t5=cond["encoder_hidden_states_t5"],
            encoder_hidden_states_llama3=cond["encoder_hidden_states_llama3"].transpose(0, 1),  # (K, N, L, D)
            pooled_embeds=cond["pooled_embeds"]).sample  # (N, C, H, W)
    return -out  # HiDreamImagePipeline negates the output: the model predicts x0 - noise


def _hidream_cond(cfg, L):
    t5, llama = cfg["caption_channels"]
    K = max(cfg["llama_layers"]) + 1  # hidden states of the Llama layers the blocks read
    return {"encoder_hidden_states_t5": (L, int(t5)), "encoder_hidden_states_llama3": (K, L, int(llama)),
            "pooled_embeds": (int(cfg["text_emb_dim"]),)}


def _hunyuan_image(m, x, t, y, cond):
    N = x.shape[0]
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    extra = {}
    if m.config.text_embed_2_dim:  # no quoted glyph text: the pipeline's zero ByT5 embedding, all masked
        extra = dict(encoder_hidden_states_2=x.new_zeros(N, HUNYUAN_GLYPH_TOKENS, m.config.text_embed_2_dim),
                     encoder_attention_mask_2=torch.zeros(N, HUNYUAN_GLYPH_TOKENS, dtype=torch.long, device=x.device))
    return m(x, timestep=t, encoder_hidden_states=ehs,
             encoder_attention_mask=mask(cond, dtype=torch.long),
             timestep_r=t if m.config.use_meanflow else None,
             guidance=full(N, HUNYUAN_GUIDANCE * 1000, x) if m.config.guidance_embeds else None,
             **extra).sample  # (N, C, H, W)


def _hunyuan_fixed(cfg, shape):
    words = ["supplied or all-valid text mask"]
    if cfg.get("text_embed_2_dim"):
        words.append(f"no glyph text ({HUNYUAN_GLYPH_TOKENS} zero ByT5 tokens, masked)")
    if cfg.get("guidance_embeds"):
        words.append(f"distilled guidance {HUNYUAN_GUIDANCE:g}")
    if cfg.get("use_meanflow"):
        words.append("meanflow timestep_r = timestep (the instantaneous velocity)")
    return ", ".join(words)


def _krea2(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, K, D_text): the tapped text-encoder layers
    ids = torch.cat([torch.zeros(ehs.shape[1], 3, device=x.device), grid_ids(H // 2, W // 2, device=x.device)])
    out = m(pack2x2(x), encoder_hidden_states=ehs, timestep=sigma(t, x), position_ids=ids,
            encoder_attention_mask=mask(cond)).sample  # (N, T, 4C)
    return unpack2x2(out, H, W)


def _longcat(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    img_ids = grid_ids(H // 2, W // 2, device=x.device, first=1.0)
    img_ids[:, 1:] += LONGCAT_TEXT_MAX  # the pipeline offsets image positions by its text maximum
    out = m(pack2x2(x), encoder_hidden_states=ehs, timestep=sigma(t, x), img_ids=img_ids,
            txt_ids=_diagonal_ids(ehs.shape[1], device=x.device)).sample  # (N, T, 4C)
    return unpack2x2(out, H, W)


def _nucleus(m, x, t, y, cond):
    N, C, H, W = x.shape
    p = m.config.patch_size
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    out = m(pack_patches(x, p), encoder_hidden_states=ehs, timestep=sigma(t, x), img_shapes=[(1, H // p, W // p)] * N,
            encoder_hidden_states_mask=mask(cond, dtype=torch.long)).sample
    return -unpack_patches(out, H, W, p)  # the pipeline negates the output: the model predicts x0 - noise


def _nucleus_latent(cfg):
    p = cfg_get(cfg, "patch_size", default=2)
    n = cfg_get(cfg, "sample_size", default=128)
    return (cfg["in_channels"] // (p * p), n, n)


def _ovis(m, x, t, y, cond):
    N, C, H, W = x.shape
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    out = m(pack2x2(x), encoder_hidden_states=ehs, timestep=sigma(t, x),
            img_ids=grid_ids(H // 2, W // 2, device=x.device), txt_ids=_diagonal_ids(ehs.shape[1], device=x.device),
            ).sample  # (N, T, 4C)
    return unpack2x2(out, H, W)


def _qwen21(m, x, t, y, cond):
    N, C, H, W = x.shape
    for block in m.transformer_blocks:  # TAIL wraps each block; the model reads block.attn.processor
        if not hasattr(block, "attn"):
            object.__setattr__(block, "attn", block.block.attn)  # a plain attribute: no second registration
    ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
    L, T = ehs.shape[1], H * W
    # text-to-image layout: the prompt, then one vision-language slot per 2x2 target tokens
    slots = torch.cat([torch.zeros(N, L, dtype=torch.bool, device=x.device),
                       torch.ones(N, T // 4, dtype=torch.bool, device=x.device)], dim=1)
    out = m(_tokens(x), encoder_hidden_states=ehs, timestep=sigma(t, x), img_shapes=[[(1, H, W)]] * N,
            img_mask=slots, encoder_hidden_states_mask=mask(cond, dtype=torch.long),
            ).sample  # (N, L + T, C): the joint sequence, the target image last
    return _untokens(out[:, -T:], H, W)


def _ideogram4(m, x, t, y, cond):
    from diffusers.models.transformers.transformer_ideogram4 import (
        IMAGE_POSITION_OFFSET, LLM_TOKEN_INDICATOR, OUTPUT_IMAGE_INDICATOR)

    N, C, H, W = x.shape
    text_features = cond["encoder_hidden_states"]  # (N, L, D_llm)
    L, T = text_features.shape[1], H * W
    pos = torch.zeros(L + T, 3, dtype=torch.long, device=x.device)  # [text (i, i, i); image (0, h, w) + offset]
    pos[:L] = torch.arange(L, device=x.device)[:, None]
    pos[L:] = grid_ids(H, W, device=x.device).long() + IMAGE_POSITION_OFFSET
    indicator = torch.full((N, L + T), OUTPUT_IMAGE_INDICATOR, dtype=torch.long, device=x.device)
    indicator[:, :L] = LLM_TOKEN_INDICATOR  # the prompt fills the text region: no left padding
    out = m(torch.cat([x.new_zeros(N, L, C), _tokens(x)], dim=1),  # (N, L + T, C), text region zero
            timestep=t,  # flow-rev: the pipeline's model time 1 - sigma
            encoder_hidden_states=torch.cat([text_features, text_features.new_zeros(N, T, text_features.shape[2])], 1),
            position_ids=pos.expand(N, -1, -1), segment_ids=torch.ones(N, L + T, dtype=torch.long, device=x.device),
            indicator=indicator).sample  # (N, L + T, C)
    return _untokens(out[:, L:], H, W)  # x0 - noise, as the pipeline steps with its negation


# Flux-style classes: one text sequence of joint_attention_dim, 2x2-packed latents (128 x 128 at 1024 px)
_FLUX_PACKED = dict(cond=text("encoder_hidden_states", ("joint_attention_dim",)), tokens=_packed_tokens,
                    latent=square_latent(128, 4))

ENTRIES = (
    ClassEntry(
        "SD3Transformer2DModel", (Stack("transformer_blocks", SECOND),), "flow1000", _sd3,
        cond=text_pooled(("joint_attention_dim",)), tokens=patch2d, text_tokens=77 + 256,
        fit=lambda cfg: sides(cfg.get("pos_embed_max_size"), cfg.get("patch_size"),
                              f"pos_embed_max_size {cfg.get('pos_embed_max_size')} patches a side")),
    ClassEntry(
        "FluxTransformer2DModel",
        (Stack("transformer_blocks", SECOND), Stack("single_transformer_blocks", SECOND)), "flow1000", _flux,
        cond=text_pooled(("joint_attention_dim",)), tokens=_packed_tokens, latent=_packed_latent,
        text_tokens=512, fixed=_flux_fixed, adapt=_flux_streams),
    ClassEntry(
        "QwenImageTransformer2DModel", (Stack("transformer_blocks", SECOND),), "flow1000", _qwen,
        cond=text("encoder_hidden_states", ("joint_attention_dim",)), tokens=_packed_tokens,
        latent=_packed_latent, text_tokens=512,
        fixed=lambda cfg, shape: "img_shapes (1, H/2, W/2), supplied or all-valid text mask"),
    ClassEntry(
        "AuraFlowTransformer2DModel",
        (Stack("joint_transformer_blocks", SECOND), Stack("single_transformer_blocks", TAIL)), "flow1000", _auraflow,
        cond=text("encoder_hidden_states", ("joint_attention_dim",)), tokens=patch2d, text_tokens=256,
        fit=lambda cfg: sides(math.isqrt(cfg.get("pos_embed_max_size") or 1024), cfg.get("patch_size"),
                              f"pos_embed_max_size {cfg.get('pos_embed_max_size')} patches in a square"),
        note="8 learned register tokens are prepended to the text stream (not part of the image stream)"),
    ClassEntry(
        "BriaTransformer2DModel",
        (Stack("transformer_blocks", SECOND), Stack("single_transformer_blocks", SECOND)), "flow1000", _bria,
        **_FLUX_PACKED, text_tokens=128,
        fixed=lambda cfg, shape: "txt_ids zeros, img_ids (0, row, column), no guidance, as in BriaPipeline"),
    ClassEntry(
        "BriaFiboTransformer2DModel",
        (Stack("transformer_blocks", SECOND), Stack("single_transformer_blocks", TAIL)), "flow1000", _fibo,
        cond=_fibo_cond, tokens=patch2d, latent=square_latent(64), text_tokens=3000,
        fixed=lambda cfg, shape: "txt_ids zeros, img_ids (0, row, column), latents unpatched (the pipeline's default), "
        "supplied or all-valid text mask",
        note="text_encoder_layers (one text-encoder layer per block) are synthesised like the text embedding; "
             "the pipeline pads prompts to the longest one (at most 3000 tokens): set --text-tokens to a caption's "
             "length"),
    ClassEntry(
        "ChromaTransformer2DModel",
        (Stack("transformer_blocks", SECOND), Stack("single_transformer_blocks", TAIL)), "flow1000", _chroma,
        **_FLUX_PACKED, text_tokens=512,
        fixed=lambda cfg, shape: "txt_ids zeros, img_ids (0, row, column), supplied or all-valid text mask (float, "
        "image tokens valid, as ChromaPipeline passes it)"),
    ClassEntry(
        "CogView3PlusTransformer2DModel", (Stack("transformer_blocks", FIRST),), "ddpm-v-zsnr4", _cogview3plus,
        cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch2d, text_tokens=224,
        fixed=_sizes_fixed,
        fit=lambda cfg: sides(cfg.get("pos_embed_max_size") or 128, cfg.get("patch_size"),
                              f"pos_embed_max_size {cfg.get('pos_embed_max_size') or 128} patches a side")),
    ClassEntry(
        "CogView4Transformer2DModel", (Stack("transformer_blocks", FIRST),), "flow1000", _cogview4,
        cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch2d, text_tokens=1024,
        fixed=_sizes_fixed,
        note="the model takes the unshifted timestep of the pipeline's linear dynamic shift (mu from the image "
             "tokens, base_shift 0.25, max_shift 0.75): noise levels are sigma; prompts are padded to the longest "
             "(at most 1024 tokens)"),
    ClassEntry(
        "Flux2Transformer2DModel",
        (Stack("transformer_blocks", SECOND), Stack("single_transformer_blocks", TAIL)), "flow1000", _flux2,
        cond=text("encoder_hidden_states", ("joint_attention_dim",)), tokens=patch2d, latent=square_latent(64),
        text_tokens=512,
        fixed=lambda cfg, shape: "txt_ids (0, 0, 0, i), img_ids (0, row, column, 0)"
        + (f", guidance {FLUX2_GUIDANCE:g}" if cfg.get("guidance_embeds") else ""),
        note="latents are the pipeline's: the VAE latent 2x2-patchified to in_channels and batch-normalised "
             "(the VAE's bn statistics), 1024 px -> 64 x 64"),
    ClassEntry(
        "Flux3Transformer2DModel",
        (Stack("mode_blocks.image"), Stack("single_transformer_blocks", SECOND)), "flow1000", _flux3,
        cond=text("encoder_hidden_states", ("joint_attention_dim",)), tokens=patch2d, latent=square_latent(64),
        text_tokens=8192,
        left_out=(("txt_mode_blocks", "text-only blocks (they run before the image blocks and see no image token)"),
                  ("mode_blocks.image_cond", "reference-image blocks: they run on reference images only (none here)")),
        fixed=lambda cfg, shape: f"txt_ids (0, 0, 0, i), img_ids (0, {FLUX3_ROPE_SCALE:g} row, "
        f"{FLUX3_ROPE_SCALE:g} column, 0), no reference image"
        + (", flow-map target_timestep = timestep (the instantaneous velocity)" if cfg.get("flow_map") else ""),
        note="latents are the pipeline's packed ones (in_channels at 1/16 of the pixels); prompts are padded to a "
             "multiple of 80 tokens (at most 8192): set --text-tokens to a caption's length"),
    ClassEntry(
        "GlmImageTransformer2DModel", (Stack("transformer_blocks", FIRST),), "flow1000", _glm,
        cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch2d, latent=square_latent(128),
        text_tokens=2048,
        fixed=lambda cfg, shape: "prior tokens dropped (the pipeline's unconditional prior), target size "
        f"{shape[-2] * 8}x{shape[-1] * 8} px, crop (0, 0)",
        note="the text is the glyph (ByT5) embedding of quoted text, at most 2048 tokens; the image prior from the "
             "autoregressive model is dropped; timesteps are unshifted as in CogView4 (assumes its scheduler's "
             "linear dynamic shift)"),
    ClassEntry(
        "HiDreamImageTransformer2DModel",
        (Stack("double_stream_blocks", FIRST), Stack("single_stream_blocks", HEAD)), "flow1000", _hidream,
        cond=_hidream_cond, tokens=patch2d, latent=square_latent(128), text_tokens=128,
        note="output negated as in HiDreamImagePipeline (the model predicts x0 - noise); square latents only "
             "(others are padded to max_resolution tokens)"),
    ClassEntry(
        "HunyuanImageTransformer2DModel",
        (Stack("transformer_blocks", FIRST), Stack("single_transformer_blocks", FIRST)), "flow1000",
        _hunyuan_image, cond=text("encoder_hidden_states", ("text_embed_dim",)), tokens=patch2d,
        latent=square_latent(64), text_tokens=1000, fixed=_hunyuan_fixed,
        left_out=(("context_embedder", "the text token refiner: text only"),)),
    ClassEntry(
        "Krea2Transformer2DModel", (Stack("transformer_blocks", TAIL),), "flow1000", _krea2,
        cond=lambda cfg, L: {"encoder_hidden_states": (L, int(cfg["num_text_layers"]), int(cfg["text_hidden_dim"]))},
        tokens=_packed_tokens, latent=square_latent(128, 4), text_tokens=512,
        left_out=(("text_fusion", "text-only blocks fusing the text-encoder layers"),),
        fixed=lambda cfg, shape: "position ids: text zeros, image (0, row, column); supplied or all-valid text mask"),
    ClassEntry(
        "LongCatImageTransformer2DModel",
        (Stack("transformer_blocks", SECOND), Stack("single_transformer_blocks", SECOND)), "flow1000", _longcat,
        **_FLUX_PACKED, text_tokens=512,
        fixed=lambda cfg, shape: f"txt_ids (0, i, i), img_ids (1, {LONGCAT_TEXT_MAX} + row, {LONGCAT_TEXT_MAX} + "
        "column), no guidance"),
    ClassEntry(
        "NucleusMoEImageTransformer2DModel", (Stack("transformer_blocks"),), "flow1000", _nucleus,
        cond=text("encoder_hidden_states", ("joint_attention_dim",)), tokens=patch2d, latent=_nucleus_latent,
        text_tokens=1024, fixed=lambda cfg, shape: "img_shapes (1, H/p, W/p), supplied or all-valid text mask",
        note="text enters as keys/values of every block (the blocks return the image stream only); output negated "
             "as in its pipeline (the model predicts x0 - noise)"),
    ClassEntry(
        "OvisImageTransformer2DModel",
        (Stack("transformer_blocks", SECOND), Stack("single_transformer_blocks", SECOND)), "flow1000", _ovis,
        **_FLUX_PACKED, text_tokens=256,
        fixed=lambda cfg, shape: "txt_ids (0, i, i), img_ids (0, row, column)"),
    ClassEntry(
        "QwenImage21Transformer2DModel", (Stack("transformer_blocks", TAIL),), "flow1000", _qwen21,
        cond=text("encoder_hidden_states", ("context_in_dim",)), tokens=patch2d, latent=square_latent(64),
        text_tokens=512,
        fixed=lambda cfg, shape: "text-to-image layout (prompt, then one slot per 2x2 target tokens), "
        "img_shapes (1, H, W), supplied or all-valid text mask, no condition image",
        note="the pipeline has no text maximum (prompts are padded to the longest): 512 as QwenImage's; "
             "latents are unpatched at 1/16 of the pixels"),
    ClassEntry(
        "Ideogram4Transformer2DModel", (Stack("layers", TAIL),), "flow-rev", _ideogram4,
        cond=text("encoder_hidden_states", ("llm_features_dim",)), tokens=patch2d, latent=square_latent(128),
        text_tokens=2048,
        fixed=lambda cfg, shape: "one segment [text; image], text positions (i, i, i), image (0, row, column) + "
        "65536, text region of the latents zero",
        note="the conditional transformer of the pipeline (its unconditional_transformer is a second model); "
             "latents are the pipeline's packed, batch-normalised ones (2048 px -> 128 x 128)"),
)
