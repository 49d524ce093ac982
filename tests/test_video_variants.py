"""Video classes beyond their one tiny config (tests/diffusers_tiny.py): the other variants of a class
(text-to-video where the tiny config is image-to-video, sin-cos positions, latent-concat conditioning)
profile end to end; condition channels are the zeros the entries say; CogVideoX's family is its scheduler.
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from dardiag.adapters.classes import TABLE  # noqa: E402
from dardiag.adapters.diffusers import diffusers_model_subject  # noqa: E402
from dardiag.api import profile  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from dardiag.families import get_family  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, TINY  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = {
    "wan-t2v": ("WanTransformer3DModel", dict(in_channels=4, image_dim=None, added_kv_proj_dim=None)),
    "cogvideox-1.0-sincos": ("CogVideoXTransformer3DModel", dict(
        in_channels=4, ofs_embed_dim=None, patch_size_t=None, use_rotary_positional_embeddings=False)),
    "hunyuanvideo-i2v-latent-concat": ("HunyuanVideoTransformer3DModel", dict(
        in_channels=9, image_condition_type="latent_concat", guidance_embeds=False)),
    "hunyuanvideo-i2v-token-replace": ("HunyuanVideoTransformer3DModel", dict(image_condition_type="token_replace")),
    "easyanimate-t2v": ("EasyAnimateTransformer3DModel", dict(in_channels=4)),
    "cosmos-t2w": ("CosmosTransformer3DModel", dict(in_channels=4)),
}


def _subject(cls: str, **overrides):
    tiny = TINY[cls]
    torch.manual_seed(0)
    model = getattr(diffusers, cls)(**{**tiny.config, **overrides}).eval()
    raw = {"sample_size": tiny.sample_size} if tiny.sample_size else {}
    return diffusers_model_subject(model, raw_config=raw, text_tokens=TEXT_TOKENS, **tiny.options)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_profiles_end_to_end(variant):
    cls, overrides = VARIANTS[variant]
    s = _subject(cls, **overrides)
    D = s.spec.depth
    df = profile(s, samples=4, batch_size=4, noise_levels=[0.3, 0.8], analyses=Analyses(probe=False, outliers=False))
    for metric in ("act_rms", "grad_rms"):
        rows = df[df.metric == metric]
        assert set(rows.block.astype(int)) == set(range(D + 1)), metric
        assert (rows.value > 0).all() and torch.isfinite(torch.tensor(rows.value.to_numpy())).all(), metric


def test_image_to_video_latents_are_the_predicted_channels():
    """Wan 2.1/2.2 I2V (36 in = 16 latent + 20 condition, 16 out): the default latent has 16 channels."""
    cfg = {"in_channels": 36, "out_channels": 16}
    assert TABLE["WanTransformer3DModel"].latent(cfg) == (16, 21, 60, 104)
    assert TABLE["WanTransformer3DModel"].latent({"in_channels": 16, "out_channels": 16})[0] == 16


def test_wan_i2v_condition_is_zeros_and_text_is_padded_to_512():
    s = _subject("WanTransformer3DModel")
    C, c = s.input_shape[0], s.model.config
    assert C == c.out_channels < c.in_channels
    x, t = torch.randn(2, *s.input_shape), torch.full((2,), 400.0)
    cond = s.make_cond(2, torch.arange(2))
    ehs = cond["encoder_hidden_states"]
    with torch.no_grad():
        got = s.call(s.model, x, t, None, cond)
        want = s.model(torch.cat([x, torch.zeros(2, c.in_channels - C, *x.shape[2:])], dim=1), timestep=t,
                       encoder_hidden_states=torch.cat([ehs, torch.zeros(2, 512 - ehs.shape[1], ehs.shape[2])], 1),
                       encoder_hidden_states_image=torch.zeros(2, 257, c.image_dim)).sample
    torch.testing.assert_close(got, want)


def test_cogvideox_padded_frames_are_dropped_from_the_prediction():
    """CogVideoX1.5 (temporal patch 2) with 3 latent frames: one frame is prepended, then dropped."""
    s = _subject("CogVideoXTransformer3DModel")
    assert s.input_shape[1] % s.model.config.patch_size_t != 0
    x = torch.randn(2, *s.input_shape)
    with torch.no_grad():
        out = s.call(s.model, x, torch.full((2,), 500), None, s.make_cond(2, torch.arange(2)))
    assert out.shape == x.shape


@pytest.mark.parametrize("name, shift", [("cogvideox", 1.0), ("cogvideox-2b", 3.0)])
def test_cogvideox_family_is_its_scheduler(name, shift):
    sched = diffusers.CogVideoXDDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction",
                                             rescale_betas_zero_snr=True, snr_shift_scale=shift)
    fam = get_family(name)
    torch.testing.assert_close(fam.alphas_cumprod(), sched.alphas_cumprod.double(), atol=1e-6, rtol=0)
    x0, noise, t = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 4, 2, 4, 4), torch.tensor([0, 500, 999])
    x_t = fam.corrupt(x0, noise, t)
    torch.testing.assert_close(x_t, sched.add_noise(x0, noise, t).to(x_t.dtype), atol=1e-5, rtol=0)
    torch.testing.assert_close(fam.target(x0, noise, t), sched.get_velocity(x0, noise, t).to(x_t.dtype),
                               atol=1e-5, rtol=0)
