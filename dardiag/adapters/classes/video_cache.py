"""Video transformers driven by more than one call per denoising step: a clean first frame held at
timestep 0 or fed as an attention sink (SANA-WM and its refiner), a reference pass that fills a K/V
cache (Wan-Animate-2). The extra pass runs outside the taps; the profiled call is the denoising one.
Latents (N, C, F, H, W).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from dardiag.adapters.classes.spec import TAIL, ClassEntry, Limit, Stack, mask, patch3d, text
from dardiag.adapters.classes.video import _latent, _pack, _unpack
from dardiag.adapters.classes.video_more import CLIP_TOKENS, WAN_SIDE, WAN_TEXT, _image
from dardiag.errors import DardiagError


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
    channels = m.config.chunk_plucker_channels
    if channels % 6:
        raise DardiagError(f"SanaWMTransformer3DModel: chunk_plucker_channels {channels} is not 6 (Plücker "
                           "coordinates) x the VAE's frames per latent frame, so SanaWMPipeline's camera "
                           "conditioning cannot be built for this config")
    stride = channels // 6  # Plücker (6 channels) of each pixel frame of a latent frame
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


@contextmanager
def _outside_taps(m, attr: str):
    """Inside, the blocks of ``m.<attr>`` run through their ``forward``: no hook (taps, edits) fires, for a
    model's extra pass (a K/V cache filled before the profiled call)."""
    blocks = getattr(m, attr)
    setattr(m, attr, torch.nn.ModuleList(_Bare(b) for b in blocks))
    try:
        yield
    finally:
        setattr(m, attr, blocks)


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
    with _outside_taps(m, "transformer_blocks"), torch.no_grad():
        m(hidden_states=sink, encoder_hidden_states=ehs, timestep=clean, video_rotary_emb=rope([0]),
          encoder_attention_mask=keep, kv_cache=cache, kv_cache_mode="capture_pre_rope")
    for layer in cache.layer_caches:
        layer.store_sink(*layer.get_captured_pre_rope())
    cache.sink_pe = rope([0])  # the first chunk: the sink sits just before it
    active = _pack(x[:, :, 1:], p, pt)  # (N, T, C pt p p)
    ts = (t.float() * m.config.timestep_scale_multiplier / 1000.0)[:, None].expand(N, active.shape[1])  # (N, T)
    out = m(hidden_states=active, encoder_hidden_states=ehs, timestep=ts, video_rotary_emb=rope(list(range(1, F))),
            encoder_attention_mask=keep, kv_cache=cache, kv_cache_mode="inject").sample  # (N, T, C pt p p)
    out = _unpack(out, F - 1, H, W, p, pt)  # (N, C, F - 1, H, W)
    return torch.cat([torch.zeros_like(out[:, :, :1]), out], dim=2)  # (N, C, F, H, W), the anchor's zeros


ENTRIES = (
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
    attns = [b.self_attn for b in m.blocks]
    saved, dense = [a.processor for a in attns], _dense_in_context()
    try:
        for a in attns:
            a.processor = dense
        with _outside_taps(m, "blocks"), torch.no_grad():  # timestep ignored: extract is modulated at timestep 1
            m(list(drive), timestep=t, encoder_hidden_states=ehs, condition_latents=list(drive_cond),
              kv_cache=cache, kv_cache_mode="extract", seq_len=(F - 1) * (H // ph) * (W // pw),
              encoder_hidden_states_image=image, offset_grid_sizes=grid)
        out = m(list(x), timestep=t, encoder_hidden_states=ehs, condition_latents=list(gen_cond),
                kv_cache=cache, kv_cache_mode="cached", seq_len=F * (H // ph) * (W // pw),
                encoder_hidden_states_image=image, reference_grid_sizes=grid, origin_len=pixel_frames,
                origin_area=[H * 8, W * 8]).sample  # N x (C, F, H, W), float32
    finally:
        for a, p in zip(attns, saved):
            a.processor = p
    return torch.stack(out).to(x.dtype)  # (N, C, F, H, W)


ENTRIES += (
    ClassEntry("WanAnimate2Transformer3DModel", (Stack("blocks"),), "flow1000", _animate2,
               cond=_animate2_cond, tokens=patch3d, video=True, text_tokens=WAN_TEXT,
               fit=lambda cfg: {"text": Limit(cfg.get("text_len") or WAN_TEXT,
                                              f"text_len {cfg.get('text_len')}: prompts are padded to it")},
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
