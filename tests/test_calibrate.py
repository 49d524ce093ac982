"""``dardiag calibrate`` (dardiag/calibrate.py) against diffusers' own cache hooks on tiny pipelines: MagCache's
ratios are what ``MagCacheConfig(calibrate=True)`` prints, the first block's change is what
FirstBlockCache compares with its threshold, and the configurations build diffusers' config classes."""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import dardiag  # noqa: E402
from dardiag.savings.calibrate import calibrate, computed_steps, resample, threshold_for  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from dardiag.errors import DardiagError  # noqa: E402
from pipeline_fixtures import CALLS, PROMPTS, SIZES, build_pipeline, generators, load_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 5


@pytest.fixture(scope="module")
def wan_run(tmp_path_factory):
    """A tiny Wan pipeline (two guidance passes per step) and its trajectory over two prompts."""
    root = tmp_path_factory.mktemp("cal")
    folder = build_pipeline("wan", root)
    dardiag.profile(str(folder), out=root / "run", samples=2, trajectory_steps=STEPS, noise_levels=[0.5], batch_size=2,
                    device="cpu", prompts=tuple(PROMPTS[:2]), call=CALLS["wan"], **SIZES["wan"],
                    analyses=Analyses(cka=False, probe=False, outliers=False, trajectory=True, cache_error=False))
    return folder, dardiag.read_profile(root / "run")


def test_mag_ratios_are_what_diffusers_calibration_prints(wan_run, capsys):
    folder, df = wan_run
    pipe = load_pipeline(folder)
    printed = {}
    for j in range(2):  # one prompt at a time: diffusers averages over its batch
        pipe.transformer.enable_cache(diffusers.MagCacheConfig(calibrate=True, num_inference_steps=STEPS))
        capsys.readouterr()
        pipe(prompt=PROMPTS[j], generator=generators(0, [j]), num_inference_steps=STEPS, output_type="latent",
             **CALLS["wan"], **SIZES["wan"])
        pipe.transformer.disable_cache()
        lists = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines() if line.startswith("[1")]
        assert len(lists) == 2  # WanPipeline's two cache contexts: cond first, then uncond
        printed[j] = dict(zip(("cond", "uncond"), lists))
    for branch in ("cond", "uncond"):
        got = calibrate(df, "magcache", branch=branch)
        ours = df[(df.metric == "mag_ratio") & (df.branch == branch)].sort_values("sampler_step")
        per_prompt = np.stack([np.asarray(v) for v in ours.sample_values], axis=1)  # [prompts, steps - 1]
        for j in range(2):
            np.testing.assert_allclose(per_prompt[j], printed[j][branch][1:], rtol=1e-5)
        want = np.mean([printed[j][branch] for j in range(2)], axis=0)
        np.testing.assert_allclose(got["config"]["mag_ratios"], want, rtol=1e-5, atol=1e-6)
        assert got["config"]["num_inference_steps"] == STEPS and got["branch"] == branch
        diffusers.MagCacheConfig(**got["config"])  # builds


def test_first_block_change_is_what_first_block_cache_compares(wan_run, monkeypatch):
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook

    folder, df = wan_run
    seen, real = [], FBCHeadBlockHook._should_compute_remaining_blocks

    def spy(self, residual):
        prev = self.state_manager.get_state().head_block_residual
        if prev is not None:
            seen.append(float((residual - prev).abs().mean() / prev.abs().mean()))
        return real(self, residual)

    monkeypatch.setattr(FBCHeadBlockHook, "_should_compute_remaining_blocks", spy)
    pipe = load_pipeline(folder)
    pipe.transformer.enable_cache(diffusers.FirstBlockCacheConfig(threshold=0.0))  # never skips
    pipe(prompt=PROMPTS[0], generator=generators(0, [0]), num_inference_steps=STEPS, output_type="latent",
         **CALLS["wan"], **SIZES["wan"])
    ours = df[(df.metric == "first_block_change")].sort_values("sampler_step")
    cond = [v[0] for v in ours[ours.branch == "cond"].sample_values]
    uncond = [v[0] for v in ours[ours.branch == "uncond"].sample_values]
    np.testing.assert_allclose(seen[0::2], cond, rtol=1e-5)  # the contexts alternate: cond, uncond per step
    np.testing.assert_allclose(seen[1::2], uncond, rtol=1e-5)
    got = calibrate(df, "firstblock", computed=3)
    diffusers.FirstBlockCacheConfig(**got["config"])
    assert got["computed_steps"] >= 3


def test_threshold_replay_and_resampling():
    changes = np.array([[0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2]])  # [prompts, steps - 1]
    assert computed_steps(changes, 0.0).tolist() == [5, 5]  # nothing reused
    assert computed_steps(changes, 0.25).tolist() == [2, 3]  # step 0, then whenever the sum passes 0.25 (3rd, 2nd step)
    tau, counts = threshold_for(changes, 3)  # the largest threshold that still computes 3 steps on average
    assert tau == pytest.approx(0.1) and counts.mean() >= 3 and computed_steps(changes, 0.2).mean() < 3
    assert resample([1.0, 2.0, 3.0], 5) == [1.0, 1.0, 2.0, 3.0, 3.0]  # nearest, halves to even, as diffusers
    from diffusers.hooks.mag_cache import nearest_interp
    assert resample([1.0, 2.0, 3.0, 4.0], 7) == nearest_interp(torch.tensor([1.0, 2.0, 3.0, 4.0]), 7).tolist()


def test_every_method_gives_a_config_and_bad_runs_are_one_line(wan_run, tmp_path):
    _, df = wan_run
    for method in ("teacache", "taylorseer", "pab", "fastercache"):
        got = calibrate(df, method)
        json.dumps(got, allow_nan=False)  # plain JSON
        if method == "taylorseer":
            diffusers.TaylorSeerCacheConfig(**got["config"])
        if method == "teacache":
            assert len(got["config"]["coefficients"]) == 5 and got["r2"] <= 1
    with pytest.raises(DardiagError, match="unknown --method"):
        calibrate(df, "nocache")
    with pytest.raises(DardiagError, match="--branch"):
        calibrate(df, "magcache", branch="negative")
    with pytest.raises(DardiagError, match="no mag_ratio rows"):
        calibrate(df[df.metric != "mag_ratio"], "magcache")
