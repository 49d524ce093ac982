"""Reduced-precision sweeps (``--dtype bfloat16|float16``): the model runs under torch.autocast, the
statistics still accumulate in float32 per token and float64 across tokens and minibatches.

Tolerances, against the float32 sweep of the same trained-like model (every zero-initialised weight
randomised, so all branches and gates are active) and inputs. They bound the autocast rounding of the
forward/backward, not of the statistics; the observed errors on this model are 10-100x smaller
(bfloat16: act_rms 1e-4, grad_rms 1.5e-4 relative; cos_prev, CKA 1e-6 absolute):

    act_rms, h_rms   rtol 5e-3      (means of per-token RMS)
    grad_rms         rtol 5e-2      (backward through the low-precision matmuls too; a block whose
                                     gradient is > 1000x below the largest one, as DAR models have,
                                     is compared to 1e-3 of the largest instead; observed: 2.5%
                                     relative on such a block, float16)
    cos_prev         atol 2e-3
    cka              atol 5e-3      (unbiased CKA in [-1, 1]; Grams always float64)
    route_alpha      atol 5e-3      (DAR weights in [0, 1])

float16 autocast is supported on CPU by torch 2.13 (slower than float32 there), so it is tested, not
refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dardiag.checkpoints import ModelInfo
from dardiag.models import DiT
from dardiag.models.config import DiTConfig
from dardiag.engine.config import Analyses
from dardiag.adapters.dit import dit_subject
from dardiag.api import profile
from dardiag.engine.sweep import make_inputs, run_level

# metric -> (rtol, atol, atol as a fraction of the largest reference value)
TOL = {"act_rms": (5e-3, 0, 0), "h_rms": (5e-3, 0, 0), "grad_rms": (5e-2, 0, 1e-3),
       "cos_prev": (0, 2e-3, 0), "cka": (0, 5e-3, 0), "route_alpha": (0, 5e-3, 0)}
INDEX = ["metric", "block", "other_block", "sublayer", "source", "noise_level"]


def _trained_like(routing: str) -> DiT:
    torch.manual_seed(0)
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=4, num_heads=4,
                    num_classes=10, routing=routing)
    model = DiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and not p.any():  # adaLN-Zero gates, output head, DAR queries
                p.normal_(0.0, 0.05)
    return model


def _table(model: DiT, dtype: str):
    info = ModelInfo.in_memory(model, family="dit", name=model.config.routing)
    df = profile((model, info), samples=16, batch_size=8, noise_levels=[0.2, 0.9], dtype=dtype,
                 analyses=Analyses(probe=False))
    return df.astype({c: "float64" for c in INDEX[1:]}).fillna({c: -1 for c in INDEX[1:]}).set_index(INDEX)["value"]


@pytest.fixture(scope="module")
def reference():
    return {r: _table(_trained_like(r), "float32") for r in ("residual", "dar")}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("routing", ["residual", "dar"])
def test_autocast_matches_float32(reference, routing, dtype):
    low, ref = _table(_trained_like(routing), dtype), reference[routing]
    assert set(low.index) == set(ref.index)
    for metric, (rtol, atol, floor) in TOL.items():
        if metric not in ref.index.get_level_values("metric"):
            continue
        a, b = low.xs(metric, level="metric").sort_index(), ref.xs(metric, level="metric").sort_index()
        assert np.isfinite(a).all(), (metric, dtype)
        atol = max(atol, floor * b.abs().max())
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{routing} {dtype} {metric}")


def test_statistics_accumulate_in_float64_under_autocast():
    model = _trained_like("dar")
    subject = dit_subject(model, ModelInfo.in_memory(model, family="dit", name="m"))
    inputs = make_inputs(None, subject, 8, seed=0)
    col = run_level(subject, inputs, 500, batch_size=8, analyses=Analyses(), device="cpu", dtype=torch.bfloat16)
    assert {v.dtype for v in col.sums.values()} == {torch.float64}
    assert col.cka.sums.dtype == torch.float64
    assert all(f.dtype == torch.float32 for chunks in col.probe_feats.values() for f in chunks)
