"""WanAnimate2 (dardiag/adapters/classes/video_cache.py) follows its pipeline's first segment: the extract
pass over the driving video runs outside dardiag's hooks, and the profiled call, whose in-context attention
runs through SDPA with the model's block mask made dense, equals the pipeline's denoising call through the
model's own flex attention (forward only: flex has no backward on CPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from dardiag.adapters.diffusers import diffusers_model_subject  # noqa: E402
from dardiag.errors import DardiagError  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, TINY, build  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
CLS = "WanAnimate2Transformer3DModel"
N = 2


def _subject(**options):
    return diffusers_model_subject(build(CLS), raw_config={"sample_size": TINY[CLS].sample_size},
                                   text_tokens=TEXT_TOKENS, **{**TINY[CLS].options, **options})


def test_call_is_the_pipelines_first_segment_step():
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache
    from diffusers.modular_pipelines.wan_animate_2.encoders import get_i2v_mask

    s = _subject()
    m = s.model
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, *s.input_shape, generator=g)  # (N, C, F, H, W)
    cond = s.make_cond(N, torch.arange(N))
    t = torch.tensor([250.0, 900.0])
    calls = []
    hook = m.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            ours = s.call(m, x, t, torch.zeros(N, dtype=torch.long), cond)
    finally:
        hook.remove()
    assert len(calls) == 1  # the extract pass runs without the blocks' hooks
    # WanAnimate2RefExtractStep and WanAnimate2SegmentDenoiseInner, per sample, as the pipeline calls them
    _, C, F, H, W = x.shape
    frames = 4 * (F - 2) + 1  # segment_frame_length
    grid = torch.tensor([[F - 1, H // 2, W // 2]])
    drive = torch.zeros(C, F - 1, H, W)
    ref = torch.cat([get_i2v_mask(1, H, W, 1, "cpu"), torch.zeros(C, 1, H, W)])  # reference_image_latents
    prev = torch.cat([get_i2v_mask(F - 1, H, W, 0, "cpu"), torch.zeros(C, F - 1, H, W)])
    theirs = []
    with torch.no_grad():
        for i in range(N):
            cache = WanAnimate2KVCache(m.config.num_layers)
            ehs, image = [cond["encoder_hidden_states"][i]], cond["encoder_hidden_states_image"][i:i + 1]
            m([drive], timestep=t[i:i + 1], encoder_hidden_states=ehs, encoder_hidden_states_image=image,
              condition_latents=[torch.cat([get_i2v_mask(F - 1, H, W, frames, "cpu"), drive])], kv_cache=cache,
              kv_cache_mode="extract", seq_len=(F - 1) * H * W // 4, offset_grid_sizes=grid)
            theirs.append(m([x[i]], timestep=t[i:i + 1], encoder_hidden_states=ehs, encoder_hidden_states_image=image,
                            condition_latents=[torch.cat([ref, prev], 1)], kv_cache=cache, kv_cache_mode="cached",
                            seq_len=F * H * W // 4, reference_grid_sizes=grid, origin_len=frames,
                            origin_area=[8 * H, 8 * W]).sample[0])
    torch.testing.assert_close(ours, torch.stack(theirs), atol=2e-6, rtol=0)


def test_one_latent_frame_is_refused():
    s = _subject(frames=1)
    x = torch.randn(N, *s.input_shape)
    with pytest.raises(DardiagError, match="reference-image slot"):
        s.call(s.model, x, torch.full((N,), 500.0), torch.zeros(N, dtype=torch.long), s.make_cond(N, torch.arange(N)))
