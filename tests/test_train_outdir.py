"""``dardiag train`` and its OUT: the same command continues after Ctrl-C, ``--force`` keeps the old run
until the new one completes, ``--export`` never overwrites by surprise, unwritable paths fail up front.

In process through ``dardiag.cli.app.app``; Ctrl-C is a KeyboardInterrupt raised right after a chosen
checkpoint is saved. Tiny models, a few seconds in all.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

import dardiag.train.trainer as trainer
from tests.test_train_cli_errors import TINY_FLAGS, one_line_error, run_cli

STEPS = ["--steps", "6", "--save-every", "2"]


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


@pytest.fixture
def ctrl_c(monkeypatch):
    """``ctrl_c.at = K``: the next run is interrupted (KeyboardInterrupt) right after saving step K."""
    real = trainer._save

    class Interrupt:
        at = None

    def save(out, config, model, ema, opt, step, *rest):
        real(out, config, model, ema, opt, step, *rest)
        if step == Interrupt.at:
            Interrupt.at = None
            raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "_save", save)
    return Interrupt


def files(out: Path) -> dict:
    """Every file under OUT (hidden ones and _replaced/ included) -> its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def weights(path: Path) -> dict:
    obj = torch.load(path, weights_only=True)
    return {f"{k}/{n}": v for k in ("model", "ema") for n, v in obj[k].items()} | {"step": obj["dardiag"]["step"]}


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(
        torch.equal(wa[k], wb[k]) if torch.is_tensor(wa[k]) else wa[k] == wb[k] for k in wa)


def train_ok(capsys, *args) -> str:
    code, out, err = run_cli(capsys, "train", *args)
    assert code == 0 and "Traceback" not in err, (code, err)
    return out


def interrupted(capsys, *args) -> None:
    code, _, err = run_cli(capsys, "train", *args)
    assert code == 130 and "run the same command again to continue" in err and "Traceback" not in err, (code, err)


# ----------------------------------------------------------------------------- the same command again


def test_the_same_command_continues_after_ctrl_c_and_then_says_complete(tmp_path, capsys, ctrl_c):
    ref, out = tmp_path / "ref", tmp_path / "run"
    train_ok(capsys, "--out", ref, *STEPS, *TINY_FLAGS)

    cmd = ["--out", out, *STEPS, *TINY_FLAGS]
    ctrl_c.at = 4
    interrupted(capsys, *cmd)
    assert weights(out / "last.pt")["step"] == 4

    line = one_line_error(capsys, "train", *cmd[:-2], "--lr", "2e-3")  # other settings: refused, named
    assert "unfinished (step 4 of 6)" in line and "--lr: stored 0.001, now 0.002" in line and "--force" in line
    assert weights(out / "last.pt")["step"] == 4

    train_ok(capsys, *cmd)  # no --resume needed; bit-identical to the uninterrupted run
    assert same_weights(out / "last.pt", ref / "last.pt")
    a, b = pd.read_csv(ref / "loss.csv"), pd.read_csv(out / "loss.csv")
    assert a["step"].tolist() == b["step"].tolist() == list(range(1, 7)) and a["loss"].equals(b["loss"])

    before = files(out)
    text = train_ok(capsys, *cmd)  # complete: says so, trains nothing, rewrites nothing
    assert "complete" in text and "nothing to do" in text
    assert files(out) == before
    train_ok(capsys, *cmd, "--resume")  # still accepted
    assert files(out) == before


def test_a_run_without_a_checkpoint_is_simply_started_over(tmp_path, capsys):
    out = tmp_path / "run"  # a diverged fresh run leaves only loss.csv and train_config.json
    line = one_line_error(capsys, "train", "--out", out, "--steps", "3", "--lr", "1e30", "--warmup", "0", *TINY_FLAGS,
                          progress=True)
    assert "no checkpoint was written" in line and not list(out.glob("*.pt"))
    train_ok(capsys, "--out", out, "--steps", "3", *TINY_FLAGS)  # the corrected command is not blocked
    assert weights(out / "last.pt")["step"] == 3


def test_checkpoints_without_last_pt_are_not_deleted(tmp_path, capsys):
    out = tmp_path / "run"
    train_ok(capsys, "--out", out, *STEPS, *TINY_FLAGS)
    (out / "last.pt").unlink()
    before = files(out)
    line = one_line_error(capsys, "train", "--out", out, *STEPS, *TINY_FLAGS)
    assert "no last.pt" in line and "ckpt_0000006.pt" in line
    assert files(out) == before


# ----------------------------------------------------------------------------- --force


def test_a_failed_force_run_puts_the_old_run_back(tmp_path, capsys):
    out = tmp_path / "run"
    train_ok(capsys, "--out", out, *STEPS, *TINY_FLAGS)
    (out / "notes.txt").write_text("mine")
    before = files(out)
    line = one_line_error(capsys, "train", "--out", out, "--steps", "8", *TINY_FLAGS, "--force", "--lr", "1e30",
                          "--warmup", "0", progress=True)
    assert "diverged at step 2" in line and f"back in {out}" in line
    assert files(out) == before  # checkpoints, log, config byte for byte; no _replaced left


def test_force_keeps_the_old_run_until_the_new_one_completes(tmp_path, capsys, ctrl_c):
    ref, out = tmp_path / "ref", tmp_path / "run"
    new = [*STEPS, *TINY_FLAGS, "--lr", "2e-3"]
    train_ok(capsys, "--out", ref, *new)
    train_ok(capsys, "--out", out, *STEPS, *TINY_FLAGS)
    old = files(out)

    forced = ["--out", out, *new, "--force"]
    ctrl_c.at = 2
    interrupted(capsys, *forced)  # both runs kept: the old one aside
    assert {k[len("_replaced/"):]: v for k, v in files(out).items() if k.startswith("_replaced/")} == old
    assert weights(out / "last.pt")["step"] == 2

    state = files(out)  # the old command now is refused, naming where the old run waits
    line = one_line_error(capsys, "train", "--out", out, *STEPS, *TINY_FLAGS)
    assert "_replaced" in line and "--lr" in line
    assert files(out) == state

    ctrl_c.at = 4
    interrupted(capsys, *forced)  # the same --force command continues the new run (2 -> 4)...
    assert weights(out / "last.pt")["step"] == 4 and (out / "_replaced" / "last.pt").exists()
    train_ok(capsys, *forced)  # ...to the end, bit-identical to an uninterrupted run; the old run goes now
    assert same_weights(out / "last.pt", ref / "last.pt")
    assert not (out / "_replaced").exists()
    assert pd.read_csv(out / "loss.csv")["step"].tolist() == list(range(1, 7))


def test_the_old_command_brings_back_a_run_whose_replacement_never_saved(tmp_path, capsys, ctrl_c, monkeypatch):
    out = tmp_path / "run"
    train_ok(capsys, "--out", out, *STEPS, *TINY_FLAGS)
    old = files(out)

    def stop(step, loss):
        raise KeyboardInterrupt
    real_train = trainer.train
    monkeypatch.setattr("dardiag.train.train", lambda c, *, on_step=None, plan=None, **kw: real_train(
        c, on_step=stop, plan=plan, **kw))
    interrupted(capsys, "--out", out, *STEPS, *TINY_FLAGS, "--lr", "2e-3", "--force")  # stopped after step 1
    assert "last.pt" not in files(out) and "_replaced/last.pt" in files(out)
    monkeypatch.undo()
    assert "complete" in train_ok(capsys, "--out", out, *STEPS, *TINY_FLAGS)
    assert files(out) == old


# ----------------------------------------------------------------------------- --export


def test_export_refuses_an_existing_file_before_training(tmp_path, capsys):
    out, target = tmp_path / "run", tmp_path / "ema.pt"
    target.write_bytes(b"precious")
    line = one_line_error(capsys, "train", "--out", out, "--steps", "2", *TINY_FLAGS, "--export", target)
    assert "already exists" in line and target.read_bytes() == b"precious" and not out.exists()
    train_ok(capsys, "--out", out, "--steps", "2", *TINY_FLAGS, "--export", target, "--force")
    assert set(torch.load(target, weights_only=True)) == {"dardiag", "ema", "train"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ema.pt", "run"]  # no temp file beside it

    exported = target.read_bytes()  # complete run, the same command: nothing rewritten
    assert "left as it is" in train_ok(capsys, "--out", out, "--steps", "2", *TINY_FLAGS, "--export", target)
    assert target.read_bytes() == exported
    train_ok(capsys, "--out", out, "--steps", "2", *TINY_FLAGS, "--export", tmp_path / "e2.pt")  # forgot --export
    assert (tmp_path / "e2.pt").read_bytes() == exported


@pytest.mark.parametrize("name", ["last.pt", "ckpt_0000002.pt", "loss.csv", "profile/ema.pt", "_replaced/x.pt"])
def test_export_never_lands_on_a_file_of_the_run(tmp_path, capsys, name):
    out = tmp_path / "run"
    train_ok(capsys, "--out", out, "--steps", "2", *TINY_FLAGS)
    before = files(out)
    for extra in ([], ["--force"]):
        line = one_line_error(capsys, "train", "--out", out, "--steps", "4", *TINY_FLAGS, "--export", out / name,
                              *extra)
        assert "--export" in line and "the training run" in line
        assert files(out) == before
    train_ok(capsys, "--out", out, "--steps", "4", *TINY_FLAGS, "--export", out / "ema.pt")  # a user file in OUT is fine
    train_ok(capsys, "--out", out, "--steps", "6", *TINY_FLAGS)  # and the run still continues
    assert weights(out / "last.pt")["step"] == 6


# ----------------------------------------------------------------------------- paths


def _unwritable() -> Path:
    """A directory even root cannot create files in (sysfs), or skip."""
    import tempfile

    d = Path("/sys")
    try:
        fd, p = tempfile.mkstemp(dir=d)
    except OSError:
        return d
    Path(p).unlink()
    pytest.skip("no unwritable directory here")


@pytest.mark.parametrize("where", ["under_file", "unwritable"])
def test_unwritable_out_and_export_fail_before_training(tmp_path, capsys, where):
    (tmp_path / "afile").write_text("mine")
    bad = tmp_path / "afile" if where == "under_file" else _unwritable()
    line = one_line_error(capsys, "train", "--out", bad / "t", "--steps", "2", *TINY_FLAGS)
    assert "--out" in line
    out = tmp_path / "run"
    line = one_line_error(capsys, "train", "--out", out, "--steps", "2", *TINY_FLAGS, "--export", bad / "x.pt")
    assert "--export" in line and not out.exists()  # refused before a single step
    assert (tmp_path / "afile").read_text() == "mine"


def test_sample_refuses_a_grid_too_large_before_sampling(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    train_ok(capsys, "--out", out, "--steps", "1", *TINY_FLAGS)
    import dardiag.train as dt

    monkeypatch.setattr(dt, "sample", lambda *a, **k: pytest.fail("sampling started"))
    line = one_line_error(capsys, "sample", out / "last.pt", "--out", tmp_path / "g.png", "--steps", "2",
                          "--n-per-class", "100000000")
    assert "--n-per-class" in line and "or less" in line and not (tmp_path / "g.png").exists()
