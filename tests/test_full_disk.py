"""A full disk on every path that writes with torch.save: one ``error:`` line (never torch's
``RuntimeError: ... unexpected pos``), the file it was writing as it was, no temp file, and the same
command again (with room on the disk) finishes the work as if nothing had happened.

The disk fills inside the write (``helpers.full_disk``: the temp file's write raises ENOSPC after a
few bytes), as a real one does; parquet parts and ``_run.json`` are covered in ``test_first_run``,
latents and prompts in their own modules."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import dardiag
from dardiag.atomic import WriteFailed, atomic_write
from dardiag.checkpoints import save_checkpoint
from dardiag.train import outdir
import helpers
from helpers import Filling, full_disk, randomised_dit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=16, depth=2, num_heads=2, num_classes=10,
            learn_sigma=False)
TRAIN = ["--steps", "4", "--save-every", "2", "--depth", "2", "--hidden", "16", "--heads", "2", "--patch", "4",
         "--batch-size", "8"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "tiny.pt"
    save_checkpoint(path, randomised_dit(TINY, seed=0), family="sit")
    return path


def cli(*args) -> tuple[int, str, str]:
    r = helpers.cli(*args)
    return r.returncode, r.stdout, r.stderr


def full_disk_line(*args) -> str:
    code, out, err = cli(*args)
    *progress, line = err.strip().splitlines()  # train's progress lines may come first
    assert code == 2 and all(p.startswith("step ") for p in progress) and "Traceback" not in out + err, (code, err)
    assert line.startswith("error: cannot write") and "the disk is full" in line, line
    assert "run the same command again" in line
    return line


def temp_files(d):
    return [p.name for p in d.rglob("*.tmp")]


@pytest.mark.parametrize("room", [0, 100, 5000])  # torch raises OSError, or RuntimeError chained to it
def test_a_full_disk_in_torch_save_is_write_failed_and_the_old_file_stays(tmp_path, room):
    dest = tmp_path / "state.pt"
    dest.write_bytes(b"the old state")

    def save(f):
        torch.save({"w": torch.zeros(4096)}, Filling(f, room))

    with pytest.raises(WriteFailed, match="the disk is full"):
        atomic_write(dest, save)
    assert dest.read_bytes() == b"the old state" and sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_other_errors_of_the_writer_are_not_taken_for_a_full_disk(tmp_path):
    def broken(f):
        raise RuntimeError("a bug in the writer")

    with pytest.raises(RuntimeError, match="a bug in the writer"):
        atomic_write(tmp_path / "x.pt", broken)
    assert not any(tmp_path.iterdir())


def test_to_dar(ckpt, tmp_path, monkeypatch):
    out = tmp_path / "dar.pt"
    hit = full_disk(monkeypatch, "dar.pt")
    full_disk_line("to-dar", ckpt, out)
    assert hit and not out.exists() and not temp_files(tmp_path)
    monkeypatch.undo()
    assert cli("to-dar", ckpt, out)[0] == 0 and dardiag.checkpoints.load_model(out)[1].config.routing == "dar"


def test_train_checkpoints_then_the_same_command_ends_as_an_uninterrupted_run(tmp_path, monkeypatch):
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert cli("train", "--out", ref, *TRAIN)[0] == 0
    hit = full_disk(monkeypatch, "ckpt_0000004.pt")  # the second save: step 2 is on disk
    full_disk_line("train", "--out", out, *TRAIN)
    assert hit and not (out / "ckpt_0000004.pt").exists() and not temp_files(out)
    assert torch.load(out / "last.pt", weights_only=True)["dardiag"]["step"] == 2
    monkeypatch.undo()
    assert cli("train", "--out", out, *TRAIN)[0] == 0
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (out, ref))
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in b["ema"])
    assert pd.read_csv(out / "loss.csv")["loss"].equals(pd.read_csv(ref / "loss.csv")["loss"])


def test_train_export_then_the_same_command_exports(tmp_path, monkeypatch):
    out, target = tmp_path / "run", tmp_path / "ema.pt"
    hit = full_disk(monkeypatch, "ema.pt")
    full_disk_line("train", "--out", out, *TRAIN, "--export", target)
    assert hit and not target.exists() and not temp_files(tmp_path)
    monkeypatch.undo()
    code, text, _ = cli("train", "--out", out, *TRAIN, "--export", target)  # the run is complete
    assert code == 0 and "nothing to do" in text and f"exported EMA weights to {target}" in text
    assert set(torch.load(target, weights_only=True)) == {"dardiag", "ema", "train"}


def test_the_loss_log_on_a_full_disk(tmp_path):
    log = outdir.LossLog(tmp_path, keep_until=0)
    log._f = Filling(log._f, 10)
    with pytest.raises(WriteFailed, match="loss.csv: the disk is full"):
        log.write(1, 0.5, 1e-3, 0.1)
    log.close()
    (tmp_path / "loss.csv").write_text("step,loss,lr,seconds\n1,0.5,0.001,0.1\n2,0.4")  # a row cut short
    outdir.LossLog(tmp_path, keep_until=2).close()
    assert pd.read_csv(tmp_path / "loss.csv")["step"].tolist() == [1]


def test_a_units_saved_state_in_profile(ckpt, tmp_path, monkeypatch):
    args = ["profile", ckpt, "--levels", "2", "--samples", "8", "--batch-size", "4", "--no-figures",
            "--no-progress", "--device", "cpu"]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert cli(*args, "--out", ref)[0] == 0
    hit = full_disk(monkeypatch, "probe-*.pt")  # the timestep probe's features of the first level
    full_disk_line(*args, "--out", out)
    assert hit and not temp_files(out)
    monkeypatch.undo()
    assert cli(*args, "--out", out)[0] == 0
    keys = ["metric", "noise_level", "site", "block", "other_block", "sublayer", "source"]

    def table(d):
        return dardiag.read_profile(d).drop(columns=["run_id"]).sort_values(keys).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(out), table(ref))


def test_the_lock_file_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    from dardiag.runs import claim
    from dardiag.runs.layout import LOCK

    real = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(LOCK):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(WriteFailed, match="the disk is full"):
        with claim(tmp_path / "run"):
            pass
    assert not (tmp_path / "run").exists()
