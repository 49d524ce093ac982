"""REPA checkpoints: a SiT trunk plus projector heads, flow-matching time (1 = noise).

A tiny REPA-like file is built from our DiT: its state dict (with REPA's optional q/k LayerNorms),
``projectors.{k}.{0,2,4}`` MLP heads, saved bare, as a training checkpoint with REPA's ``args``, and
with the legacy ``decoder_blocks.{j}`` naming. REPA's own forward returns ``(x, zs)`` (prediction and
projected features); our DiT returns only ``x``, which is what the loss uses — the projector and its
alignment loss are not part of L (diagnostics.md §3), so their keys are ignored and listed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
import torch

from dardiag.checkpoints import load_model
from dardiag.families import get_family
from dardiag.models import DiT
from dardiag.models.config import DiTConfig

# width 384 is the S preset, so the heads (6) come from args.model / the preset table, as for real files
CFG = DiTConfig(input_size=8, patch_size=2, hidden_size=384, depth=2, num_heads=6, num_classes=10,
                learn_sigma=False, qk_norm=True)
ENCODER_DEPTH = 1


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


def repa_args(**kw):
    return argparse.Namespace(model="SiT-S/2", enc_type="dinov2-vit-b", proj_coeff=0.5,
                              encoder_depth=ENCODER_DEPTH, resolution=64, qk_norm=True, **kw)


def projectors(dim=384, hidden=64, z_dim=32) -> dict:
    out = {}
    for j, shape in ((0, (hidden, dim)), (2, (hidden, hidden)), (4, (z_dim, hidden))):
        out[f"projectors.0.{j}.weight"] = torch.randn(shape)
        out[f"projectors.0.{j}.bias"] = torch.randn(shape[0])
    return out


@pytest.fixture(scope="module")
def repa():
    torch.manual_seed(0)
    model = DiT(CFG).eval()
    with torch.no_grad():  # non-zero adaLN gates and head, as after training
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
    sd = model.state_dict()
    assert "blocks.0.attn.q_norm.weight" in sd and "blocks.1.attn.k_norm.bias" in sd
    return model, sd


def reference_output(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([0.3, 0.9]), torch.tensor([1, 7]))


def legacy_names(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks.") and int(k.split(".")[1]) >= ENCODER_DEPTH:
            _, i, rest = k.split(".", 2)
            k = f"decoder_blocks.{int(i) - ENCODER_DEPTH}.{rest}"
        out[k] = v
    return out


def test_training_checkpoint_reads_as_repa(repa, tmp_path):
    model, sd = repa
    proj = projectors()
    ema = {k: v.clone() for k, v in sd.items()}
    train = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}  # EMA is preferred
    path = tmp_path / "0400000.pt"
    torch.save({"model": {**train, **proj}, "ema": {**ema, **proj}, "opt": {}, "args": repa_args(),
                "steps": 400000}, path)
    loaded, info = load_model(path)
    assert info.family == "repa" and info.sources["family"] == "REPA projector keys / args"
    assert info.ignored_keys == sorted(proj)
    assert (info.weights, info.step) == ("ema", 400000)
    assert info.config.qk_norm and not info.config.learn_sigma and info.config.num_heads == 6
    assert torch.equal(reference_output(loaded), reference_output(model))


def test_legacy_decoder_blocks(repa, tmp_path):
    model, sd = repa
    legacy = legacy_names({**sd, **projectors()})
    assert "decoder_blocks.0.attn.qkv.weight" in legacy and "blocks.1.attn.qkv.weight" not in legacy
    path = tmp_path / "legacy.pt"
    torch.save({"model": legacy, "ema": legacy, "args": repa_args()}, path)
    loaded, info = load_model(path)
    assert info.family == "repa" and info.config.depth == CFG.depth
    assert torch.equal(reference_output(loaded), reference_output(model))


def test_bare_state_dict(repa, tmp_path):
    model, sd = repa
    path = tmp_path / "last.pt"
    torch.save({**sd, **projectors()}, path)
    loaded, info = load_model(path, family="repa")
    assert info.family == "repa" and len(info.ignored_keys) == 6
    assert torch.equal(reference_output(loaded), reference_output(model))
    _, info = load_model(path)  # without --family the projector keys alone say REPA
    assert info.family == "repa"


def test_repa_family_is_flow_with_noise_at_one():
    fam = get_family("repa")
    t = torch.tensor([0.0, 0.25, 1.0])
    torch.testing.assert_close(fam.to_noise_level(t), t.double())
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    s = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(fam.corrupt(x0, eps, t), (1 - s) * x0 + s * eps)
    torch.testing.assert_close(fam.target(x0, eps, t), eps - x0)


def test_profile_cli_on_repa_checkpoint(repa, tmp_path):
    import dardiag

    _, sd = repa
    path = tmp_path / "repa.pt"
    torch.save({"model": {**sd, **projectors()}, "ema": {**sd, **projectors()}, "args": repa_args(),
                "steps": 1000}, path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dardiag", "profile", str(path), "--out", str(out), "--samples", "8",
           "--batch-size", "4", "--levels", "2", "--no-figures", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only contend
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    df = dardiag.read_profile(out)
    assert set(df.family) == {"repa"} and set(df.step.dropna()) == {1000}
    z = df[df.metric == "act_rms"]
    assert set(z.block.astype(int)) == set(range(CFG.depth + 1))
    assert (df[df.metric == "grad_rms"].value > 0).all()
    assert sorted(z.noise_level.unique()) == [0.0, 1.0]
    torch.testing.assert_close(torch.tensor(z.t_native.values), torch.tensor(z.noise_level.values))
