"""Run directories held by one process at a time: the lock, two concurrent commands, SIGKILL mid-run.

The lock is an OS lock (flock) on ``OUT/.dardiag.lock``: it dies with its process, names its holder,
and is re-entrant within a process. End to end, a real ``python -m dardiag profile`` process holding
OUT while a second command (this process) is refused in one line and touches nothing, and one killed
with SIGKILL mid-run, then the same command (the table equals an uninterrupted run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import dardiag
from dardiag.checkpoints import save_checkpoint
from dardiag.errors import DardiagError
from dardiag.models import DiT, DiTConfig
from dardiag.runs import claim, lifecycle
from dardiag.runs.layout import LOCK
from dardiag.runs.profile_run import PROFILE
from helpers import cli

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)


# ----------------------------------------------------------------------------- the lock


def test_a_second_claim_stops_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from dardiag.runs import claim\n"
        "with claim(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(60)\n"), str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in out.iterdir())
        with pytest.raises(DardiagError) as e:
            with claim(out):
                pytest.fail("two processes held one OUT")
        msg = str(e.value)
        assert "\n" not in msg and "in use" in msg and f"pid {holder.pid}" in msg and "since" in msg
        assert sorted(p.name for p in out.iterdir()) == before  # touched nothing, not even the lock file
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock died with it, a stale file left behind blocks nobody
    assert (out / LOCK).exists()
    with claim(out):
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    assert not (out / LOCK).exists()  # the holder deletes it when it lets go


def test_claims_are_reentrant_and_leave_no_empty_directory_when_nothing_began(tmp_path):
    out = tmp_path / "new"
    with claim(out) as outer:
        with claim(out) as inner:  # train holds OUT while its periodic profile writes OUT/profile
            assert inner is outer
        assert (out / LOCK).exists()
    assert not out.exists()  # created for the claim, nothing began: gone again
    with claim(out) as hold:
        hold.keep()
    assert out.is_dir() and not any(out.iterdir())  # a run began here: OUT stays (a valid --out)


def test_a_filesystem_that_cannot_lock_is_said_in_one_line(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, op):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock") as w:
        with claim(tmp_path / "nfs"):
            pass
    assert all("\n" not in str(x.message) for x in w)


def test_claim_of_a_file_or_under_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(DardiagError, match="directory") as e:
            with claim(out):
                pass
        assert "\n" not in str(e.value)
    assert (tmp_path / "f").read_text() == "x"


# ----------------------------------------------------------------------------- the lifecycle


def test_one_lifecycle_for_both_kinds_names_what_each_owns(tmp_path):
    from dardiag.train.outdir import kind as train_kind

    out = tmp_path / "t"
    out.mkdir()
    for name in ("last.pt", "loss.csv", "ckpt_0000002.pt", "notes.txt", "_run.json", "part-a.parquet"):
        (out / name).write_text("x")
    (out / "profile").mkdir()
    (out / "profile" / "_run.json").write_text("{}")
    train = train_kind(2, read_last=lambda p: ({}, {"steps": 2}, 2))
    assert [p.name for p in lifecycle.own_entries(out, train)] == ["ckpt_0000002.pt", "last.pt", "loss.csv", "profile"]
    assert [p.name for p in lifecycle.own_entries(out, PROFILE)] == ["_run.json", "part-a.parquet"]


def test_a_profile_stub_after_ctrl_c_is_started_over_by_another_command(tmp_path):
    """Ctrl-C before the first unit leaves _run.json with no unit: nothing to continue, so a command
    with other settings starts over without --force (as a training run without a checkpoint does)."""
    from dardiag.runs import RunDir

    RunDir.create(tmp_path, {"config": {"a": 1}})  # killed before any unit
    run = RunDir.create(tmp_path, {"config": {"a": 2}})
    assert run.completed == frozenset() and run.metadata["config"] == {"a": 2}


# ----------------------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    model = DiT(DiTConfig(**TINY))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and torch.count_nonzero(p) == 0:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    save_checkpoint(d / "res.pt", model, family="sit", step=10)
    g = torch.Generator().manual_seed(2)
    torch.save({"x0": torch.randn(16, 4, 8, 8, generator=g), "y": torch.randint(0, 10, (16,), generator=g)},
               d / "inputs.pt")
    return d / "res.pt", d / "inputs.pt"


# `dardiag profile` that holds still before its (HOLD + 1)-th noise level until the GATE file exists: a tiny
# model would otherwise finish before a second process has even imported torch, and the overlap (or a
# kill mid-run) would be left to chance
GATED = ("import os, sys, time\n"
         "import dardiag.engine.sweep as sweep\n"
         "real, calls = sweep.run_level, []\n"
         "def gated(*a, **k):\n"
         "    calls.append(1)\n"
         "    while len(calls) > int(os.environ['HOLD']) and not os.path.exists(os.environ['GATE']):\n"
         "        time.sleep(0.02)\n"
         "    return real(*a, **k)\n"
         "sweep.run_level = gated\n"
         "from dardiag.cli.app import app\n"
         "app(sys.argv[1:])\n")


def command(ckpt, out: Path, levels: int, *, gated: bool = False) -> list[str]:
    res, inputs = ckpt
    head = [sys.executable, "-c", GATED] if gated else [sys.executable, "-m", "dardiag"]
    return [*head, "profile", str(res), "--out", str(out), "--inputs", str(inputs), "--levels", str(levels),
            "--samples", "16", "--batch-size", "4", "--no-figures", "--no-progress"]


def wait_for_units(proc, out: Path, n: int) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(json.loads((out / "_run.json").read_text())["completed"]) >= n:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"the first command never finished {n} units: {proc.communicate()}")


def table(out: Path) -> pd.DataFrame:
    df = dardiag.read_profile(out).drop(columns=["run_id"])
    return df.sort_values(["metric", "noise_level", "site", "block", "other_block", "sublayer", "source"],
                          na_position="first").reset_index(drop=True)


def in_process(command: list[str]) -> subprocess.CompletedProcess:
    """``command`` (an ungated one) run in this process (``helpers.cli``) on one torch thread, as the real
    ones (ENV): what matters here is the process holding OUT and the one killed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cli(*command[3:])  # [python, -m, dardiag, profile, ...]
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(ckpt, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("ref") / "out"
    r = in_process(command(ckpt, out, 6))
    assert r.returncode == 0, r.stderr
    return table(out)


def test_two_commands_on_one_out_one_completes_the_other_refuses(ckpt, reference, tmp_path):
    out, gate = tmp_path / "out", tmp_path / "gate"
    first = subprocess.Popen(command(ckpt, out, 6, gated=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**ENV, "HOLD": "1", "GATE": str(gate)})
    wait_for_units(first, out, 1)  # the first command holds OUT, one unit written, the next one waiting
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "_run.json" and p.is_file()}
    second = in_process(command(ckpt, out, 6))
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert lines[0].startswith("error:") and "in use by another dardiag command" in lines[0]
    assert f"pid {first.pid}" in lines[0] and "Traceback" not in second.stderr
    assert first.poll() is None  # the refusal did not disturb the first command
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before} == before
    gate.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    pd.testing.assert_frame_equal(table(out), reference)
    assert not (out / LOCK).exists()


def test_sigkill_mid_run_then_the_same_command_gives_the_uninterrupted_table(ckpt, reference, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(command(ckpt, out, 6, gated=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**ENV, "HOLD": "2", "GATE": str(tmp_path / "never")})
    wait_for_units(proc, out, 2)  # two units written, the third one waiting: kill it mid-run
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    state = json.loads((out / "_run.json").read_text())
    assert state["status"] == "running" and len(state["completed"]) == 2
    assert (out / LOCK).exists()  # killed: its lock file stays behind, and must not block
    r = in_process(command(ckpt, out, 6))
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(table(out), reference)
    assert not (out / LOCK).exists() and dardiag.read_profile(out).attrs["dardiag_status"] == "complete"


# ----------------------------------------------------------------------------- a damaged part


def test_a_damaged_part_is_said_with_its_repair_and_the_same_command_computes_it_again(ckpt, tmp_path, recwarn):
    res, inputs = ckpt
    kw = dict(inputs=str(inputs), noise_levels=[0.2, 0.8], samples=8, batch_size=4, device="cpu")
    ref = table_of(dardiag.profile(str(res), out=tmp_path / "ref", **kw))
    out = tmp_path / "out"
    dardiag.profile(str(res), out=out, **kw)
    part = sorted(out.glob("part-*.parquet"))[1]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # a copy cut short
    with pytest.raises(DardiagError, match=f"{part.name}.*damaged: run the command that made the run again"):
        dardiag.read_profile(out)
    again = dardiag.profile(str(res), out=out, **kw)  # the complete run, read back: the damaged unit first
    assert any(f"{part.name} is damaged" in str(w.message) and "computed again" in str(w.message) for w in recwarn)
    pd.testing.assert_frame_equal(table_of(again), ref)
    pd.testing.assert_frame_equal(table(out), ref)


def table_of(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["run_id"]).sort_values(
        ["metric", "noise_level", "site", "block", "other_block", "sublayer", "source"],
        na_position="first").reset_index(drop=True)
