"""Stopping a profile: the first Ctrl-C or SIGTERM finishes the minibatch, keeps it and exits 130 / 143; a
second one exits at once; either way the same command gives the uninterrupted table.

In process (fast): a signal sent from inside a chosen minibatch, under ``stop_on_signals``, and
``dardiag sample`` stopped from inside a sampler step. End to end: real ``python -m dardiag profile``
processes held still inside a minibatch (a gate file), then signalled from outside.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import dardiag
import dardiag.api as api
from dardiag.checkpoints import save_checkpoint
from dardiag.engine import partial
from dardiag.engine.progress import Progress
from dardiag.runs.layout import INPUTS_DIRNAME, LOCK, WORK_DIRNAME
from dardiag.runs.stop import Stopped, current, stop_on_signals
import helpers
from helpers import gated_cli, randomised_dit

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
N, B, LEVELS = 16, 4, 3  # 4 minibatches per level

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("stop")
    save_checkpoint(d / "res.pt", randomised_dit(TINY, 0, scale=0.05), family="sit", step=10)
    g = torch.Generator().manual_seed(2)
    torch.save({"x0": torch.randn(N, 4, 8, 8, generator=g), "y": torch.randint(0, 10, (N,), generator=g)},
               d / "inputs.pt")
    return d / "res.pt", d / "inputs.pt"


def table(out: Path) -> pd.DataFrame:
    df = dardiag.read_profile(out).drop(columns=["run_id"])
    return df.sort_values(["metric", "noise_level", "site", "block", "other_block", "sublayer", "source"],
                          na_position="first").reset_index(drop=True)


# ----------------------------------------------------------------------------- the request itself


def test_a_first_signal_waits_inside_deferred_work_and_a_second_one_stops_at_once():
    said = []
    with stop_on_signals("this step", notify=said.append) as req:
        assert current() is req
        with req.deferred():
            signal.raise_signal(signal.SIGTERM)
            assert req.requested and "stopping after this step" in said[0]  # acknowledged at once
            with pytest.raises(Stopped) as e:
                signal.raise_signal(signal.SIGINT)  # the second one: at once, even inside deferred work
        assert e.value.exit_code == 143  # the first signal decides the exit status
        with pytest.raises(Stopped):
            req.check()
    assert not current().requested  # outside a command nothing ever fires
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_deferred_work_the_first_signal_stops_at_once():
    with stop_on_signals(notify=lambda line: None):
        with pytest.raises(Stopped) as e:
            signal.raise_signal(signal.SIGINT)
            time.sleep(5)  # never reached: loading a checkpoint has nothing to keep half-done
    assert e.value.exit_code == 130


class _SignalAt(Progress):
    """Sends ``signum`` to this process when the ``at``-th minibatch of this run finishes."""

    def __init__(self, at: int, signum=signal.SIGINT):
        self.at, self.signum, self.n = at, signum, 0

    def step(self, images: int) -> None:
        self.n += 1
        if self.n == self.at:
            signal.raise_signal(self.signum)


def test_a_level_stopped_between_minibatches_continues_from_the_next_one(files, tmp_path):
    res, inputs = files
    kw = dict(inputs=str(inputs), noise_levels=[0.2, 0.5, 0.9], samples=N, batch_size=B, device="cpu")
    whole = api.profile(str(res), out=tmp_path / "whole", **kw)
    out = tmp_path / "stopped"
    with stop_on_signals(notify=lambda line: None), pytest.raises(Stopped):
        api.profile(str(res), out=out, progress=_SignalAt(6), **kw)  # level 2, its 2nd minibatch
    state = json.loads((out / "_run.json").read_text())
    assert state["completed"] == ["m00-l000"]
    assert partial.done_in(out / WORK_DIRNAME, "m00-l001") == 2 and not (out / LOCK).exists()

    steps = _SignalAt(0)
    again = api.profile(str(res), out=out, progress=steps, **kw)
    assert steps.n == 2 * 4 - 2  # only the minibatches not kept were run
    assert not (out / WORK_DIRNAME / "partial-m00-l001.pt").exists()
    pd.testing.assert_frame_equal(table(out), table(tmp_path / "whole"), check_exact=True)
    assert len(again) == len(whole)


# ----------------------------------------------------------------------------- real processes

# `dardiag profile` that holds still inside its HOLD-th minibatch (after the forward+backward, in the
# collector) until the GATE file exists, first writing READY: a signal then lands mid-minibatch
GATED = gated_cli("dardiag.engine.collector:LevelCollector.end_batch")


def command(files, out: Path, *, gated: bool) -> list[str]:
    res, inputs = files
    head = [sys.executable, "-c", GATED] if gated else [sys.executable, "-m", "dardiag"]
    return [*head, "profile", str(res), "--out", str(out), "--inputs", str(inputs), "--levels", str(LEVELS),
            "--samples", str(N), "--batch-size", str(B), "--no-figures", "--no-progress", "--device", "cpu"]


def _line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def stopped_run(cmd: list[str], tmp: Path, hold: int, signals: list[int]) -> subprocess.CompletedProcess:
    """Run the gated ``cmd`` until inside the ``hold``-th call, send ``signals`` (each acknowledged before
    the next), then open the gate; -> the finished process with its stderr."""
    here = Path(tempfile.mkdtemp(dir=tmp))
    ready, gate = here / "ready", here / "gate"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**ENV, "HOLD": str(hold), "READY": str(ready), "GATE": str(gate)})
    deadline = time.time() + 240
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ready.exists(), proc.communicate()
    said = []
    for s in signals:
        proc.send_signal(s)
        said.append(_line(proc.stderr, 60))  # acknowledged while the minibatch is still held
    gate.touch()
    _, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", "".join(said) + err)


def cli(*args: str) -> tuple[int, str, str]:
    """``dardiag ARGS`` in this process (``helpers.cli``), where the signals come from inside or none come.
    -> (exit status, stdout, stderr)."""
    r = helpers.cli(*args)
    return r.returncode, r.stdout, r.stderr


def test_sigint_sigterm_and_a_double_ctrl_c_then_the_same_command_gives_the_uninterrupted_table(files, tmp_path):
    ref = tmp_path / "ref"
    code, _, err = cli(*command(files, ref, gated=False)[3:])  # [python, -m, dardiag, profile, ...]
    assert code == 0, err
    out = tmp_path / "out"

    # Ctrl-C inside level 2's 2nd minibatch: it finishes, both of level 2's finished minibatches are kept
    first = stopped_run(command(files, out, gated=True), tmp_path, 6, [signal.SIGINT])
    assert first.returncode == 130, first.stderr
    assert first.stderr.startswith("Ctrl-C: stopping after this minibatch; run the same command to continue")
    assert "interrupted" in first.stderr and "Traceback" not in first.stderr
    assert json.loads((out / "_run.json").read_text())["completed"] == ["m00-l000"]
    assert partial.done_in(out / WORK_DIRNAME, "m00-l001") == 2
    assert not (out / LOCK).exists()

    # SIGTERM (a job scheduler) inside the continued run's 3rd minibatch (level 3's first): exit 143
    second = stopped_run(command(files, out, gated=True), tmp_path, 3, [signal.SIGTERM])
    assert second.returncode == 143, second.stderr
    assert second.stderr.startswith("SIGTERM: stopping after this minibatch") and "Traceback" not in second.stderr
    assert json.loads((out / "_run.json").read_text())["completed"] == ["m00-l000", "m00-l001"]
    assert partial.done_in(out / WORK_DIRNAME, "m00-l002") == 1

    # Ctrl-C twice: the second one exits at once, mid-minibatch (the gate is never opened before it)
    third = stopped_run(command(files, out, gated=True), tmp_path, 1, [signal.SIGINT, signal.SIGINT])
    assert third.returncode == 130 and "Ctrl-C again: stopping now" in third.stderr, third.stderr
    assert "Traceback" not in third.stderr and not (out / LOCK).exists()

    code, text, err = cli(*command(files, out, gated=False)[3:])
    assert code == 0, err
    assert "continuing: 2 of 4 units done, and 1 noise level(s) stopped part-way" in text
    pd.testing.assert_frame_equal(table(out), table(ref), check_exact=True)


def test_generated_inputs_stop_after_the_batch_being_drawn_and_are_drawn_once_per_run(files, tmp_path, monkeypatch):
    """A first signal while sampling lets the batch being drawn finish; drawn inputs are kept in OUT/_inputs
    and a continued run samples nothing and ends with the uninterrupted table."""
    import dardiag.sampler as sampler

    res, _ = files
    kw = dict(inputs="generated", generate_steps=2, noise_levels=[0.2, 0.8], samples=8, batch_size=B, device="cpu")
    out = tmp_path / "gen"
    real, calls, armed = sampler._predict, [], [True]

    def predict(*a, **k):
        calls.append(1)
        if armed:
            armed.clear()
            signal.raise_signal(signal.SIGINT)  # deferred: the batch of 8 finishes its 2 sampler steps
        return real(*a, **k)

    monkeypatch.setattr(sampler, "_predict", predict)
    with stop_on_signals(notify=lambda line: None), pytest.raises(Stopped):
        api.profile(str(res), out=out, **kw)
    assert len(calls) == 2 and (out / INPUTS_DIRNAME / "generated-m00.pt").exists() and not (out / LOCK).exists()
    assert not list(out.glob("part-*.parquet"))  # stopped before the first level

    calls.clear()
    df = api.profile(str(res), out=out, **kw)
    assert calls == []  # read back from OUT/_inputs, not sampled again
    whole = api.profile(str(res), out=tmp_path / "gen_whole", **kw)
    pd.testing.assert_frame_equal(table(out), table(tmp_path / "gen_whole"), check_exact=True)
    assert len(df) == len(whole)


# ----------------------------------------------------------------------------- dardiag sample


def signal_in(monkeypatch, target: str, at: int, signals: list[int]) -> None:
    """Send ``signals`` to this process from inside the ``at``-th call of ``target`` ("module.attribute")."""
    module, _, name = target.rpartition(".")
    real, calls = getattr(importlib.import_module(module), name), []

    def signalled(*a, **k):
        calls.append(1)
        if len(calls) == at:
            for s in signals:
                signal.raise_signal(s)
        return real(*a, **k)

    monkeypatch.setattr(f"{module}.{name}", signalled)


def test_sample_stops_after_the_sampler_step_or_the_grids_write_and_writes_the_whole_grid_or_nothing(
        files, tmp_path, monkeypatch):
    """A grid needs every step, so a stop keeps nothing and says so; a stop asked for while the grid is
    written lets the write finish; the file is never half-written and a --force'd old one stays as it was."""
    args = ["sample", str(files[0]), "--n-per-class", "2", "--steps", "4", "--device", "cpu"]
    ref = tmp_path / "ref.png"
    assert cli(*args, "--out", ref)[0] == 0
    out = tmp_path / "grid" / "g.png"
    out.parent.mkdir()
    out.write_bytes(b"the old grid")

    # Ctrl-C inside step 2 of 4: the step finishes, then the command stops; the old file is untouched
    signal_in(monkeypatch, "dardiag.sampler._predict", 2, [signal.SIGINT])
    code, _, err = cli(*args, "--out", out, "--force")
    assert code == 130, err
    assert err.startswith(f"Ctrl-C: stopping after this sampler step; nothing is written to {out}")
    assert f"interrupted: nothing was written to {out} (a stopped sample does not resume" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["g.png"] and out.read_bytes() == b"the old grid"
    monkeypatch.undo()

    # Ctrl-C twice: the second one stops at once, inside the step
    signal_in(monkeypatch, "dardiag.sampler._predict", 2, [signal.SIGINT, signal.SIGINT])
    code, _, err = cli(*args, "--out", out, "--force")
    assert code == 130 and f"Ctrl-C again: stopping now; nothing was written to {out}" in err, err
    assert "Traceback" not in err and out.read_bytes() == b"the old grid"
    monkeypatch.undo()

    # SIGTERM just before the grid is written: the write finishes (atomically) and the grid is whole
    signal_in(monkeypatch, "dardiag.sampler.atomic_write", 1, [signal.SIGTERM])
    code, _, err = cli(*args, "--out", out, "--force")
    assert code == 143, err
    assert err.startswith(f"SIGTERM: stopping after writing the grid; {out} will be complete")
    assert f"interrupted: {out} was written in full" in err and "Traceback" not in err
    assert out.read_bytes() == ref.read_bytes() and sorted(p.name for p in out.parent.iterdir()) == ["g.png"]
