"""``dardiag train`` and ``dardiag sample`` on bad input: one ``error:`` line, exit 2, and no file harmed.

In process through ``dardiag.cli.app.app`` (the same path as the console script, without a second torch
import per case); tiny models, a few seconds in all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import dardiag
from dardiag.errors import DardiagError
from dardiag.train import TrainConfig, train
from helpers import run_cli

TINY_FLAGS = ["--depth", "2", "--hidden", "32", "--heads", "2", "--patch", "4", "--batch-size", "8"]
TINY = dict(depth=2, hidden_size=32, num_heads=2, patch_size=4, batch_size=8)


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def one_line_error(capsys, *args, progress: bool = False) -> str:
    """The error line; before it stderr is empty, or holds only ``step ...`` progress lines with ``progress``."""
    code, out, err = run_cli(capsys, *args)
    *before, last = err.strip().splitlines() or [""]
    assert code == 2 and last.startswith("error: "), (code, err)
    assert all(progress and line.startswith("step ") for line in before), err
    assert "Traceback" not in err + out
    return last


def snapshot(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


# ----------------------------------------------------------------------------- train: flags


@pytest.mark.parametrize("flags,needle", [
    (["--heads", "0"], "--heads"),
    (["--heads", "-2"], "--heads"),
    (["--patch", "0"], "--patch"),
    (["--patch", "-2"], "--patch"),
    (["--patch", "3"], "--patch 3"),  # does not divide the 16x16 digits
    (["--hidden", "0"], "--hidden"),
    (["--hidden", "-4"], "--hidden"),
    (["--hidden", "36", "--heads", "8"], "not divisible by --heads"),
    (["--hidden", "30"], "multiple of 4"),
    (["--depth", "0"], "--depth"),
    (["--depth", "-1"], "--depth"),
    (["--input-size", "6"], "not a multiple of --patch"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "1e40"], "--lr"),  # finite, but AdamW's float32 step would overflow with a traceback
    (["--grad-clip", "inf"], "--grad-clip"),
    (["--steps", "0"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--chunk-size", "0"], "--chunk-size"),
    (["--profile-noise-levels", "0.5,2"], "--profile-noise-levels"),
    (["--profile-noise-levels", "nan"], "--profile-noise-levels"),
    (["--profile-batch-size", "2"], "--profile-batch-size"),
    (["--device", "mps"], "--device"),
    (["--device", "cpu:3"], "--device"),
    (["--export", "."], "--export"),
])
def test_bad_train_flags_are_one_line_before_anything_is_written(tmp_path, capsys, flags, needle):
    out = tmp_path / "run"
    line = one_line_error(capsys, "train", "--out", out, "--steps", "2", *TINY_FLAGS, *flags)
    assert needle in line
    assert not out.exists()


def test_bad_flags_with_force_delete_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), steps=1, **TINY))
    before = snapshot(out)
    one_line_error(capsys, "train", "--out", out, "--force", "--steps", "2", *TINY_FLAGS, "--heads", "0")
    assert snapshot(out) == before


def test_cuda_on_a_machine_without_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = one_line_error(capsys, "train", "--out", tmp_path / "run", "--steps", "1", *TINY_FLAGS, "--device", "cuda")
    assert "CUDA is not available" in line and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- train: divergence


def test_diverging_loss_stops_without_writing_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"  # lr 1e30: step 1 is finite (zero-initialised head), step 2's loss is inf
    line = one_line_error(capsys, "train", "--out", out, "--steps", "3", "--lr", "1e30", "--warmup", "0", *TINY_FLAGS,
                          progress=True)
    assert "step 2" in line and "--lr" in line and "no checkpoint" in line
    assert not list(out.glob("*.pt"))


def test_diverging_resume_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--out", out, "--lr", "1e30", "--warmup", "0", *TINY_FLAGS]
    code, _, err = run_cli(capsys, "train", *flags, "--steps", "1")
    assert code == 0, err
    before = snapshot(out)
    line = one_line_error(capsys, "train", *flags, "--steps", "3", "--resume", progress=True)
    assert "step 2" in line and "step 1) is kept" in line
    def checkpoints(files):
        return {k: v for k, v in files.items() if k.endswith(".pt")}
    assert checkpoints(snapshot(out)) == checkpoints(before) and "last.pt" in checkpoints(before)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for k in ("model", "ema") for v in ckpt[k].values())


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    """A finite loss can still be followed by an update that overflows; the save refuses such weights."""
    import dardiag.train.trainer as trainer

    def poisoned(ema, model, decay):
        with torch.no_grad():
            next(ema.parameters()).fill_(float("nan"))
    monkeypatch.setattr(trainer, "update_ema", poisoned)
    with pytest.raises(DardiagError, match="weights are no longer finite.*no checkpoint was written"):
        train(TrainConfig(out=str(tmp_path / "run"), steps=1, **TINY))
    assert not list((tmp_path / "run").glob("*.pt"))


# ----------------------------------------------------------------------------- train: resume


@pytest.mark.parametrize("flags,needle", [
    (["--depth", "3"], "--depth: stored 2, now 3"),
    (["--routing", "dar"], "--routing: stored 'residual', now 'dar'"),
    (["--hidden", "64"], "--hidden: stored 32, now 64"),
])
def test_resume_with_a_changed_architecture_names_the_setting(tmp_path, capsys, flags, needle):
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), steps=1, **TINY))
    before = snapshot(out)
    args = dict(zip(TINY_FLAGS[::2], TINY_FLAGS[1::2]))
    args.update(dict(zip(flags[::2], flags[1::2])))
    line = one_line_error(capsys, "train", "--out", out, "--resume", "--steps", "2",
                          *[x for kv in args.items() for x in kv])
    assert "settings differ" in line and needle in line and "state_dict" not in line
    assert snapshot(out) == before


def test_resume_from_a_damaged_last_pt_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), steps=1, **TINY))
    (out / "last.pt").write_bytes(b"\x80\x02garbage")
    line = one_line_error(capsys, "train", "--out", out, "--resume", "--steps", "2", *TINY_FLAGS)
    assert "cannot resume" in line and "--force" in line


# ----------------------------------------------------------------------------- sample


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(TrainConfig(out=str(tmp_path_factory.mktemp("s") / "run"), steps=1, **TINY))
    finally:
        torch.set_num_threads(before)


SAMPLE = ["--steps", "2", "--n-per-class", "1"]


@pytest.mark.parametrize("name,flags,needle", [
    ("x.txt", [], ".png"),
    ("x", [], "no extension"),
    (".", [], "is a directory"),
    ("afile/x.png", [], "is a file"),
    ("s.png", ["--cfg", "nan"], "--cfg"),
    ("s.png", ["--cfg", "inf"], "--cfg"),
    ("s.png", ["--cfg", "-1"], "--cfg"),
    ("s.png", ["--steps", "0"], "--steps"),
    ("s.png", ["--device", "mps"], "--device"),
])
def test_bad_sample_flags_are_one_line(tmp_path, capsys, ckpt, name, flags, needle):
    (tmp_path / "afile").write_text("mine")
    line = one_line_error(capsys, "sample", ckpt, "--out", tmp_path / name, *SAMPLE, *flags)
    assert needle in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_sample_on_cuda_without_cuda(tmp_path, capsys, ckpt, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = one_line_error(capsys, "sample", ckpt, "--out", tmp_path / "s.png", *SAMPLE, "--device", "cuda")
    assert "CUDA is not available" in line


def test_sample_refuses_to_overwrite_without_force(tmp_path, capsys, ckpt):
    from PIL import Image

    out = tmp_path / "keep.png"
    out.write_bytes(b"precious")
    line = one_line_error(capsys, "sample", ckpt, "--out", out, *SAMPLE)
    assert "--force" in line and out.read_bytes() == b"precious"
    code, _, err = run_cli(capsys, "sample", ckpt, "--out", out, *SAMPLE, "--force", "--cfg", "0")
    assert code == 0, err
    assert Image.open(out).format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]  # no temp file left beside it
    code, _, err = run_cli(capsys, "sample", ckpt, "--out", tmp_path / "g.JPG", *SAMPLE)
    assert code == 0 and Image.open(tmp_path / "g.JPG").format == "JPEG", err


@pytest.mark.filterwarnings("ignore:.*non-finite values")
def test_sample_with_non_finite_output_writes_nothing(tmp_path, capsys, ckpt):
    obj = torch.load(ckpt, weights_only=True)
    for key in ("model", "ema"):
        obj[key]["final_layer.linear.weight"].fill_(float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save(obj, bad)
    code, out, err = run_cli(capsys, "sample", bad, "--out", tmp_path / "s.png", *SAMPLE)
    assert code == 2 and "Traceback" not in err + out
    assert err.strip().splitlines()[-1].startswith("error: ") and "non-finite" in err  # refused before sampling
    assert not (tmp_path / "s.png").exists()


# ----------------------------------------------------------------------------- train: what the files say


def test_nan_init_weights_are_said_as_such_not_as_a_divergence(tmp_path, capsys, ckpt):
    obj = torch.load(ckpt, weights_only=True)
    obj["ema"]["blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(obj, bad)
    line = one_line_error(capsys, "train", "--out", tmp_path / "run", "--init", bad, "--steps", "1")
    assert "blocks.0.attn.qkv.weight has 1 non-finite values" in line and "diverged" not in line
    assert not (tmp_path / "run").exists()


def test_a_lora_rank_above_the_layers_width_is_refused(tmp_path, capsys, ckpt):
    line = one_line_error(capsys, "train", "--out", tmp_path / "run", "--init", ckpt, "--lora", "100000")
    assert "--lora 100000 is above the rank of the layers it adapts (width 32)" in line
    assert not (tmp_path / "run").exists()


def test_the_init_file_is_never_the_export(tmp_path, capsys, ckpt):
    before = ckpt.read_bytes()
    line = one_line_error(capsys, "train", "--out", tmp_path / "run", "--init", ckpt, "--steps", "1", "--export",
                          ckpt, "--force")
    assert "is the --init checkpoint" in line and ckpt.read_bytes() == before


def test_a_profile_run_is_not_a_training_run(tmp_path, capsys):
    out = tmp_path / "prof"
    run_cli(capsys, "profile", dardiag.bundled_checkpoints()["residual"], "--out", out, "--levels", "1",
            "--samples", "4", "--batch-size", "4", "--no-figures", "--no-progress", "--no-probe")
    before = snapshot(out)
    for force in ([], ["--force"]):
        line = one_line_error(capsys, "train", "--out", out, "--steps", "1", *TINY_FLAGS, *force)
        assert "is a profile run" in line and snapshot(out) == before
