"""dardiag.train: the loop learns, resumes bit-exactly, profiles with the right step, refuses bad input."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dardiag.checkpoints import load_model
from dardiag.errors import DardiagError
from dardiag.families import get_family
from dardiag.models import DiT
from dardiag.data import check_matches_model, digits_latents, load_latents
from dardiag.train import TrainConfig, digit_score, export, sample, save_grid, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


TINY = dict(depth=2, hidden_size=32, num_heads=2, patch_size=4, batch_size=32, warmup=0)


def tiny(out, **kw) -> TrainConfig:
    return TrainConfig(out=str(out), **{**TINY, **kw})


def tensors(obj, prefix=""):
    """Every tensor in a nested checkpoint dict, keyed by its path."""
    if torch.is_tensor(obj):
        return {prefix: obj}
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(tensors(v, f"{prefix}/{i}"))
    return out


def snapshot(out: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.iterdir()) if p.is_file()}


# ----------------------------------------------------------------------------- learning


def test_training_reduces_loss_on_a_fixed_batch(tmp_path):
    last = train(tiny(tmp_path / "run", steps=30, save_every=0))
    obj = torch.load(last, weights_only=True)
    trained, info = load_model(last, weights="model")
    fresh = DiT(trained.config).eval()  # any init: the zero-initialised head makes the output 0
    data = digits_latents("test")
    g = torch.Generator().manual_seed(123)
    x0 = data["x0"][:64]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.rand(64, generator=g)
    fam = get_family("sit")
    with torch.no_grad():
        losses = [fam.loss(m(fam.corrupt(x0, noise, t), t, data["y"][:64]), x0, noise, t).item()
                  for m in (fresh, trained)]
    assert losses[1] < 0.8 * losses[0], losses
    assert obj["dardiag"]["step"] == 30 and info.family == "sit"
    log = pd.read_csv(tmp_path / "run" / "loss.csv")
    assert list(log["step"]) == list(range(1, 31))


# ----------------------------------------------------------------------------- resume


class Killed(Exception):
    pass


@pytest.mark.parametrize("family,routing", [("sit", "residual"), ("dit", "dar")])
def test_kill_and_resume_is_bit_identical(tmp_path, family, routing):
    kw = dict(family=family, routing=routing, chunk_size=2, steps=6, save_every=3)
    train(tiny(tmp_path / "a", **kw))  # uninterrupted

    train(tiny(tmp_path / "b", **{**kw, "steps": 3}))  # stopped cleanly at 3, then extended
    train(tiny(tmp_path / "b", **kw, resume=True))

    def kill_at_5(step, loss):
        if step == 5:
            raise Killed
    with pytest.raises(Killed):  # killed after step 5; last.pt is step 3
        train(tiny(tmp_path / "c", **kw), on_step=kill_at_5)
    assert torch.load(tmp_path / "c" / "last.pt", weights_only=True)["dardiag"]["step"] == 3
    train(tiny(tmp_path / "c", **kw, resume=True))

    ref = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    ref_t = tensors({k: ref[k] for k in ("model", "ema", "opt")})
    assert len(ref_t) > 50
    for run in ("b", "c"):
        got = torch.load(tmp_path / run / "last.pt", weights_only=True)
        got_t = tensors({k: got[k] for k in ("model", "ema", "opt")})
        assert got_t.keys() == ref_t.keys()
        bad = [k for k in ref_t if not torch.equal(ref_t[k], got_t[k])]
        assert not bad, f"{run}: {bad[:5]}"
        assert got["dardiag"]["step"] == 6
        log_ref = pd.read_csv(tmp_path / "a" / "loss.csv")
        log_got = pd.read_csv(tmp_path / run / "loss.csv")
        assert log_got["step"].tolist() == log_ref["step"].tolist()
        assert np.array_equal(log_got["loss"].to_numpy(), log_ref["loss"].to_numpy())


def test_resume_refuses_changed_settings(tmp_path):
    train(tiny(tmp_path / "r", steps=2))
    with pytest.raises(DardiagError, match="lr"):
        train(tiny(tmp_path / "r", steps=4, lr=5e-4, resume=True))


# ----------------------------------------------------------------------------- profiling


def _fake_sweep(monkeypatch):
    """Stand-in for dardiag.engine.sweep when it is not installed: one row per noise level."""

    def profile(models, *, inputs=None, noise_levels=None, samples=None, batch_size=16, seed=0, device="cpu", **kw):
        (model, info), = models
        return pd.DataFrame([dict(run_id="x", model=info.name, routing=model.config.routing_name, family=info.family,
                                  checkpoint=info.path, step=info.step, metric="loss", noise_level=lv, value=1.0,
                                  n_samples=samples, batch_size=batch_size) for lv in noise_levels])

    mod = types.ModuleType("dardiag.engine.sweep")
    mod.profile = profile
    monkeypatch.setitem(sys.modules, "dardiag.engine.sweep", mod)


def test_profile_every_rows_carry_the_step(tmp_path, monkeypatch):
    if importlib.util.find_spec("dardiag.engine.sweep") is None:
        _fake_sweep(monkeypatch)
    from dardiag.runs import read_profile

    cfg = tiny(tmp_path / "p", steps=4, save_every=0, profile_every=2, profile_samples=8, profile_batch_size=8,
               profile_noise_levels=(0.3, 0.9))
    train(cfg)
    df = read_profile(tmp_path / "p" / "profile")
    assert sorted(df["step"].unique().tolist()) == [2, 4]
    assert df["run_id"].nunique() == 1
    assert set(df["noise_level"].dropna().round(6)) <= {0.3, 0.9}
    per_step = df.groupby("step").size()
    assert per_step.loc[2] == per_step.loc[4] > 0


def test_profiling_does_not_change_training_and_resumes_without_duplicates(tmp_path, monkeypatch):
    if importlib.util.find_spec("dardiag.engine.sweep") is None:
        _fake_sweep(monkeypatch)
    from dardiag.runs import read_profile

    prof = dict(profile_every=1, profile_samples=8, profile_batch_size=8, profile_noise_levels=(0.5,))
    kw = dict(steps=4, save_every=2)
    train(tiny(tmp_path / "plain", **kw))

    def kill_at_3(step, loss):
        if step == 3:
            raise Killed
    with pytest.raises(Killed):  # steps 1-3 profiled, last.pt at step 2
        train(tiny(tmp_path / "prof", **kw, **prof), on_step=kill_at_3)
    train(tiny(tmp_path / "prof", **kw, **prof, resume=True))
    df = read_profile(tmp_path / "prof" / "profile")
    assert df.groupby("step").size().tolist() == [df.groupby("step").size().iloc[0]] * 4
    a = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "prof" / "last.pt", weights_only=True)
    ta, tb = tensors({k: a[k] for k in ("model", "ema", "opt")}), tensors({k: b[k] for k in ("model", "ema", "opt")})
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


# ----------------------------------------------------------------------------- bad input


def test_chunk_size_must_divide_sublayers():
    with pytest.raises(DardiagError, match=r"use one of \[1, 2, 4\]"):
        TrainConfig(out="x", **TINY, routing="dar", chunk_size=3)


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    train(tiny(out, steps=2))
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(DardiagError, match="other settings.*--lr: stored 0.001, now 0.002.*--force"):
        train(tiny(out, steps=2, lr=2e-3))
    assert snapshot(out) == before
    train(tiny(out, steps=2))  # the same settings: complete, nothing to do, nothing rewritten
    assert snapshot(out) == before
    train(tiny(out, steps=1, force=True))  # replaces our files only
    assert (out / "notes.txt").read_text() == "mine"
    assert torch.load(out / "last.pt", weights_only=True)["dardiag"]["step"] == 1
    assert not (out / "ckpt_0000002.pt").exists()


def test_latents_of_the_wrong_shape_are_one_line_errors(tmp_path, capsys):
    from dardiag.cli.app import app

    good = digits_latents("test")
    path = tmp_path / "lat.pt"
    torch.save({"x0": good["x0"][:16], "y": good["y"][:16]}, path)
    with pytest.raises(SystemExit) as e:  # 16x16 latents, model asked for 8x8
        app(["train", "--out", str(tmp_path / "o"), "--data", str(path), "--input-size", "8", "--depth", "2",
             "--hidden", "32", "--heads", "2", "--patch", "4", "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "16x16" in err and "8x8" in err

    config = tiny(tmp_path / "x").model_config(in_channels=4, input_size=16, num_classes=10)
    with pytest.raises(DardiagError, match="1 channel"):
        check_matches_model(good, config)


@pytest.mark.parametrize("payload,match", [
    ({"y": torch.zeros(3)}, "no 'x0'"),
    ({"x0": torch.zeros(3, 16, 16)}, r"\[N, C, H, W\]"),
    ({"x0": torch.full((2, 1, 4, 4), float("nan"))}, "finite"),
    ({"x0": torch.zeros(2, 1, 4, 4), "noise": torch.zeros(2, 1, 4, 5)}, "noise has shape"),
    ({"x0": torch.zeros(2, 1, 4, 4), "y": torch.tensor([0, 12])}, "labels"),
    ({"x0": torch.zeros(2, 1, 4, 4), "y": torch.tensor([0])}, "one label"),
])
def test_load_latents_validates(tmp_path, payload, match):
    path = tmp_path / "l.pt"
    torch.save(payload, path)
    with pytest.raises(DardiagError, match=match):
        load_latents(path, num_classes=10)


def test_load_latents_reads_npz(tmp_path):
    x0 = np.random.RandomState(0).randn(5, 2, 4, 4).astype(np.float64)
    np.savez(tmp_path / "l.npz", x0=x0, y=np.arange(5))
    d = load_latents(tmp_path / "l.npz")
    assert d["x0"].dtype == torch.float32 and d["x0"].shape == (5, 2, 4, 4) and d["y"].dtype == torch.int64
    with pytest.raises(DardiagError, match="no such"):
        load_latents(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- sampling and scoring


@pytest.mark.parametrize("family", ["sit", "dit"])
def test_sampler_shape_and_determinism(tmp_path, family):
    model = DiT(tiny(tmp_path).model_config(in_channels=1, input_size=16, num_classes=10))
    with torch.no_grad():  # a non-zero head so samples depend on the network
        model.final_layer.linear.weight.normal_(0, 0.02)
    y = torch.arange(10)
    a = sample(model, family, y, steps=4, cfg_scale=2.0, seed=1)
    b = sample(model, family, y, steps=4, cfg_scale=2.0, seed=1)
    c = sample(model, family, y, steps=4, cfg_scale=2.0, seed=2)
    assert a.shape == (10, 1, 16, 16) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    png = save_grid(a, tmp_path / "g.png", nrow=5, scale=2)
    from PIL import Image

    assert Image.open(png).size == ((5 * 17 + 1) * 2, (2 * 17 + 1) * 2)


def test_digit_score_separates_real_digits_from_noise():
    test = digits_latents("test")
    real = digit_score(test["x0"][:120], test["y"][:120])
    noise = digit_score(torch.randn(120, 1, 16, 16, generator=torch.Generator().manual_seed(0)), test["y"][:120])
    assert real["accuracy"] > 0.9 and real["real_accuracy"] > 0.9
    assert real["fd"] < noise["fd"] / 10
    assert digit_score(test["x0"][:120], test["y"][:120]) == real  # deterministic


def test_digits_split_is_fixed_and_disjoint():
    tr, te, al = digits_latents("train"), digits_latents("test"), digits_latents("all")
    assert tr["x0"].shape == (1437, 1, 16, 16) and te["x0"].shape == (360, 1, 16, 16)
    assert al["x0"].shape[0] == 1797 and float(al["x0"].min()) >= -1 and float(al["x0"].max()) <= 1
    assert torch.equal(digits_latents("test")["x0"], te["x0"])
    assert torch.bincount(te["y"]).min() >= 35  # stratified


def test_cli_train_export_sample(tmp_path, capsys):
    from dardiag.cli.app import app

    out = tmp_path / "run"
    app(["train", "--out", str(out), "--depth", "2", "--hidden", "32", "--heads", "2", "--patch", "4",
         "--steps", "3", "--batch-size", "8", "--export", str(tmp_path / "e.pt")])
    obj = torch.load(tmp_path / "e.pt", weights_only=True)
    assert set(obj) == {"dardiag", "ema", "train"}  # EMA only: no optimizer, no raw weights
    assert all(v.dtype == torch.float32 for v in obj["ema"].values())
    app(["sample", str(tmp_path / "e.pt"), "--out", str(tmp_path / "g.png"), "--n-per-class", "2", "--steps", "2",
         "--score"])
    text = capsys.readouterr().out
    assert "digit score" in text and (tmp_path / "g.png").exists()
    ema, _ = load_model(out / "last.pt", weights="ema")
    exported, info = load_model(export(out / "last.pt", tmp_path / "e2.pt"))
    assert info.weights == "ema" and info.step == 3
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), exported.state_dict().values()))
