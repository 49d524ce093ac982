"""SANA-WM and its refiner (dardiag/adapters/classes/video_cache.py) follow their pipelines: the
flow1000-anchor family is what SanaWMPipeline's per-token Euler step and the refiner's x0 formula invert,
and each entry's call is the pipeline's denoiser call (SanaWMPipeline's stage 1; the refiner's first chunk,
its attention sink captured outside dardiag's hooks)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from dardiag.adapters.classes.video_cache import REFINER_FPS, SANA_WM_FOCAL, SANA_WM_VAE  # noqa: E402
from dardiag.adapters.diffusers import diffusers_model_subject  # noqa: E402
from dardiag.errors import DardiagError  # noqa: E402
from dardiag.families import get_family  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, TINY, build  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
N = 2


def _subject(cls: str):
    return diffusers_model_subject(build(cls), raw_config={"sample_size": TINY[cls].sample_size},
                                   text_tokens=TEXT_TOKENS, **TINY[cls].options)


def _inputs(s):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, *s.input_shape, generator=g)  # (N, C, F, H, W)
    return x, s.make_cond(N, torch.arange(N))


def test_anchor_family_is_what_the_pipelines_step_inverts():
    fam = get_family("flow1000-anchor")
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 2, 2, generator=g), torch.randn(2, 4, 3, 2, 2, generator=g)
    B, C, F, H, W = x0.shape
    sch = diffusers.FlowMatchEulerDiscreteScheduler()
    sch.set_timesteps(num_inference_steps=4)
    i = 1
    t = sch.timesteps[i]
    latents = fam.corrupt(x0, noise, torch.full((B,), float(t)))
    assert torch.equal(latents[:, :, 0], x0[:, :, 0])  # the anchor, clean
    noise_pred = fam.target(x0, noise, t)  # the perfect prediction
    # SanaWMPipeline.__call__'s step, line for line
    condition_mask = torch.zeros_like(latents)
    condition_mask[:, :, :1] = 1.0
    timestep = torch.min(t.expand(condition_mask.shape).float(), (1.0 - condition_mask) * 1000.0)
    sch._step_index = i
    denoised = sch.step(-noise_pred.reshape(B, C, -1).transpose(1, 2), t, latents.reshape(B, C, -1).transpose(1, 2),
                        per_token_timesteps=timestep.reshape(B, C, -1)[:, 0], return_dict=False)[0]
    denoised = denoised.transpose(1, 2).reshape(B, C, F, H, W)
    latents = torch.where(t / 1000.0 - 1e-6 < (1.0 - condition_mask), denoised, latents)
    want = fam.corrupt(x0, noise, torch.full((B,), float(sch.sigmas[i + 1]) * 1000.0))
    torch.testing.assert_close(latents, want, atol=1e-5, rtol=0)
    # SanaWMLTX2Refiner: x0 = x_t - sigma * prediction
    x_t = fam.corrupt(x0, noise, torch.full((B,), 400.0))
    torch.testing.assert_close((x_t - 0.4 * noise_pred)[:, :, 1:], x0[:, :, 1:], atol=1e-6, rtol=0)
    # the anchor's prediction is not part of the loss
    out = torch.randn(x0.shape, generator=g)
    changed = out.clone()
    changed[:, :, 0] += 5.0
    tt = torch.full((B,), 400.0)
    assert fam.loss(out, x0, noise, tt) == fam.loss(changed, x0, noise, tt)
    torch.testing.assert_close(fam.loss_per_image(out, x0, noise, tt).mean(), fam.loss(out, x0, noise, tt))
    with pytest.raises(DardiagError, match="more than 1 frame"):
        fam.corrupt(x0[:, :, 0], noise[:, :, 0], tt)


def test_sana_wm_call_is_the_pipelines_stage_one_call():
    from diffusers.pipelines.sana_wm.cam_utils import action_string_to_c2w

    s = _subject("SanaWMTransformer3DModel")
    m, (x, cond) = s.model, _inputs(s)
    _, C, F, H, W = x.shape
    t = 500.0
    with torch.no_grad():
        ours = s.call(m, x, torch.full((N,), t), torch.zeros(N, dtype=torch.long), cond)
        # SanaWMPipeline.__call__: the anchor's per-frame timestep 0, its camera kwargs for a static camera
        condition_mask = torch.zeros_like(x)
        condition_mask[:, :, :1] = 1.0
        timestep = torch.min(torch.tensor(t).expand(condition_mask.shape), (1.0 - condition_mask) * 1000.0)
        stride = m.config.chunk_plucker_channels // 6
        fake = SimpleNamespace(vae_temporal_compression_ratio=stride, vae_spatial_compression_ratio=SANA_WM_VAE)
        c2w = action_string_to_c2w(f"none-{(F - 1) * stride}")  # (frames, 4, 4), all identity
        Hp, Wp = H * SANA_WM_VAE, W * SANA_WM_VAE
        f = SANA_WM_FOCAL * Wp
        intrinsics = torch.tensor([f, f, Wp / 2, Hp / 2]).expand(len(c2w), 4).numpy()
        cam = diffusers.SanaWMPipeline._build_camera_kwargs(fake, c2w, intrinsics, (Hp, Wp), device="cpu",
                                                            dtype=torch.float32, do_cfg=False)
        cam = {k: v.expand(N, *v.shape[1:]) for k, v in cam.items()}
        ehs = cond["encoder_hidden_states"]
        theirs = m(x, timestep[:, :1, :, 0, 0], ehs[:, None], return_dict=False,
                   mask=torch.ones(N, ehs.shape[1], dtype=torch.long), **cam)[0]
    assert (ours[:, :, 0] == 0).all()  # the anchor's prediction, discarded by the pipeline
    torch.testing.assert_close(ours[:, :, 1:], theirs[:, :, 1:], atol=1e-6, rtol=0)


def test_refiner_call_is_the_pipelines_first_chunk():
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMRefinerKVCache
    from diffusers.pipelines.sana_wm import refiner

    s = _subject("SanaWMLTX2RefinerTransformer3DModel")
    m, (x, cond) = s.model, _inputs(s)
    _, C, F, H, W = x.shape
    sigma = 0.725  # the distilled schedule's second step
    calls = []
    hook = m.transformer_blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            ours = s.call(m, x, torch.full((N,), sigma * 1000.0), torch.zeros(N, dtype=torch.long), cond)
    finally:
        hook.remove()
    assert len(calls) == 1  # the sink pass runs without the blocks' hooks
    # SanaWMLTX2Refiner.__call__'s sink capture and first block's denoising call
    ehs, keep = cond["encoder_hidden_states"], torch.ones(N, cond["encoder_hidden_states"].shape[1])
    cache = SanaWMRefinerKVCache(len(m.transformer_blocks))
    p, pt = m.config.patch_size, m.config.patch_size_t
    with torch.no_grad():
        refiner.SanaWMLTX2Refiner._capture_block_kv(
            SimpleNamespace(transformer=m), clean_block=x[:, :, :1], frame_positions=[0], prompt_embeds=ehs,
            prompt_attention_mask=keep, fps=REFINER_FPS, kv_cache=cache, kv_cache_mode="capture_pre_rope",
            device="cpu")
        for layer in cache.layer_caches:
            layer.store_sink(*layer.get_captured_pre_rope())
        cache.sink_pe = m.build_rotary_emb_for_absolute_positions(N, [0], H, W, "cpu", float(REFINER_FPS))
        tokens = refiner._pack_latents(x[:, :, 1:], patch_size=p, patch_size_t=pt)
        timestep = torch.full(tokens.shape[:2], sigma * float(m.config.timestep_scale_multiplier))
        rope = m.build_rotary_emb_for_absolute_positions(N, list(range(1, F)), H, W, "cpu", float(REFINER_FPS))
        v = m(hidden_states=tokens, encoder_hidden_states=ehs, timestep=timestep, video_rotary_emb=rope,
              encoder_attention_mask=keep, kv_cache=cache, kv_cache_mode="inject", return_dict=False)[0]
        theirs = refiner._unpack_latents(v, F - 1, H, W, patch_size=p, patch_size_t=pt)
        other = x.clone()
        other[:, :, 0] = torch.randn_like(x[:, :, 0])
        moved = s.call(m, other, torch.full((N,), sigma * 1000.0), torch.zeros(N, dtype=torch.long), cond)
    assert (ours[:, :, 0] == 0).all()
    torch.testing.assert_close(ours[:, :, 1:], theirs, atol=1e-6, rtol=0)
    assert not torch.allclose(moved[:, :, 1:], ours[:, :, 1:])  # the chunk attends to the sink
