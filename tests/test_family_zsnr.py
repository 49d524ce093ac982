"""The ddpm-v-zsnr4 family (CogView3-Plus) is the process of the pipeline's CogVideoXDDIMScheduler."""

from __future__ import annotations

import pytest
import torch

from dardiag.families import get_family

diffusers = pytest.importorskip("diffusers")


def test_zero_snr_v_family_corrupts_and_targets_as_the_cogview3plus_scheduler():
    # the scheduler config of CogView3-Plus-3B (diffusers' conversion script)
    s = diffusers.CogVideoXDDIMScheduler(
        snr_shift_scale=4.0, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
        timestep_spacing="trailing")
    fam = get_family("ddpm-v-zsnr4")
    torch.testing.assert_close(fam.alphas_cumprod(), s.alphas_cumprod.double(), atol=1e-6, rtol=0)
    assert fam.alphas_cumprod()[-1] == 0  # t = 999 is pure noise
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 400, 999])
    torch.testing.assert_close(fam.corrupt(x0, noise, t).float(), s.add_noise(x0, noise, t), atol=1e-5, rtol=0)
    torch.testing.assert_close(fam.target(x0, noise, t).float(), s.get_velocity(x0, noise, t), atol=1e-5, rtol=0)
    assert fam.to_noise_level(torch.tensor(999.0)) == 1.0
