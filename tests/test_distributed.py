"""Multi-process sweeps (dardiag.engine.distributed): a 2-process gloo run under torchrun writes the same table
as one process, up to the order of float additions; a stop is agreed by every process."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dardiag.engine import distributed
from dardiag.checkpoints import save_checkpoint
from dardiag.models import DiT
from dardiag.models.config import DiTConfig
from dardiag.api import profile
from dardiag.runs.layout import LOCK, WORK_DIRNAME
from tests.helpers import gated_cli

KEYS = ["model", "metric", "site", "block", "other_block", "sublayer", "source", "noise_level"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A depth-2 DiT with every zero-initialised weight randomised (a trained-like network)."""
    torch.manual_seed(0)
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                    num_classes=10)
    model = DiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, family="dit", step=7)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROOT = Path(__file__).resolve().parents[1]


def _torchrun_command(nproc: int, *args: str, script: Path | None = None) -> tuple[list[str], dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # a script elsewhere imports this tree
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
           "--master-port", str(_free_port()), *([str(script)] if script else ["-m", "dardiag"]), *args]
    return cmd, env


def _torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd, env = _torchrun_command(nproc, *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    key = df[KEYS].astype("object").where(df[KEYS].notna(), -1)  # nulls sort (and compare) as -1
    return df.assign(**{k: key[k] for k in KEYS}).sort_values(KEYS).reset_index(drop=True)


# 20 images in minibatches of 4: 5 per level, so rank 0 holds 3 and rank 1 holds 2 (unequal shares)
STOP_ARGS = ["--samples", "20", "--batch-size", "4", "--noise-levels", "0.1,0.6,1.0", "--seed", "3",
             "--no-figures", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def two_process_run(tiny_ckpt, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted 2-process run: compared with one process, and with a stopped and continued one."""
    out = tmp_path_factory.mktemp("two") / "run2"
    res = _torchrun(2, "profile", str(tiny_ckpt), "--out", str(out), *STOP_ARGS)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return out, res


def test_two_processes_equal_one(tiny_ckpt, two_process_run):
    out, res = two_process_run
    assert res.stdout.count("wrote ") == 1  # only rank 0 reports
    assert not (out / "_figures").exists()

    two = pd.read_parquet(out)
    one = profile(str(tiny_ckpt), samples=20, batch_size=4, noise_levels=[0.1, 0.6, 1.0], seed=3)
    assert set(two["metric"]) == set(one["metric"]) >= {"act_rms", "grad_rms", "cos_prev", "cka", "probe_r2",
                                                          "route_importance", "loss"}
    a, b = _sorted(two), _sorted(one)
    assert len(a) == len(b)
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS], check_dtype=False)
    np.testing.assert_array_equal(a["n_samples"], b["n_samples"])  # every image counted once
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6, atol=1e-12)
    # the standard errors too: per-image sums add, CKA's per-minibatch terms join, maxima take the max
    assert set(one["metric"]) >= {"act_absmax", "act_kurtosis", "channel_top_share", "token_top_share"}
    np.testing.assert_array_equal(a["stderr"].isna(), b["stderr"].isna())
    np.testing.assert_allclose(a["stderr"], b["stderr"], rtol=1e-6, atol=1e-12, equal_nan=True)
    assert a[a.metric == "cka"]["stderr"].notna().any()  # 3 minibatches: a jackknife exists


def test_too_few_minibatches_fails_cleanly(tiny_ckpt, tmp_path):
    """One minibatch for two processes: every rank stops with the same one-line error, none hangs."""
    res = _torchrun(2, "profile", str(tiny_ckpt), "--out", str(tmp_path / "r"), "--samples", "4",
                    "--batch-size", "4", "--noise-levels", "0.5", "--no-figures")
    assert res.returncode != 0
    assert "fewer minibatches than the 2 processes" in res.stderr
    assert not (tmp_path / "r").exists()  # nothing written


def test_helpers_are_identity_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert not distributed.is_distributed() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.init_if_needed("cpu") is False
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    feats, ids = {"z_0": torch.ones(3, 2)}, torch.arange(3)
    assert distributed.gather_probe(feats, ids) == (feats, ids)


def test_shard_takes_every_world_th(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    assert distributed.shard(list(range(8))) == [1, 4, 7]
    assert distributed.rank_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert distributed.rank_device("cuda") == torch.device("cuda", 2)


# ----------------------------------------------------------------------------- stopping under torchrun


def _stopped(script: Path, ckpt: Path, out: Path, tmp: Path, hold: str, signals: list[int], to: str = "torchrun"):
    """torchrun held inside each rank's ``hold``-th minibatch ("rank 0's,rank 1's"), ``signals`` sent to
    torchrun (which forwards them to every worker) or to one worker (``to="rank 1"``), each acknowledged by
    the processes it reaches before the next is sent; then the gate opens. -> (torchrun's status, stderr)."""
    here = Path(tempfile.mkdtemp(dir=tmp))
    cmd, env = _torchrun_command(2, "profile", str(ckpt), "--out", str(out), *STOP_ARGS, script=script)
    env.update(HOLD=hold, READY=str(here / "ready"), GATE=str(here / "gate"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    ready = [here / f"ready{r}" for r in (0, 1)]
    deadline = time.time() + 300  # three Python processes start and import torch: slow on a loaded machine
    while not all(r.exists() for r in ready) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert all(r.exists() for r in ready), proc.communicate()
    said, acks = "", 0
    for s in signals:
        if to == "torchrun":
            proc.send_signal(s)
        else:
            os.kill(int(ready[int(to.split()[-1])].read_text()), s)
        acks += 2 if to == "torchrun" else 1
        deadline = time.time() + 120  # each signal's own wait, however long the start took
        # each worker's own line; raw reads, as two workers' lines may come in one chunk
        while said.count("stopping") < acks and time.time() < deadline:
            if select.select([proc.stderr], [], [], 1)[0]:
                said += os.read(proc.stderr.fileno(), 1 << 16).decode()
    (here / "gate").touch()
    rest = proc.communicate(timeout=300)[1]
    return proc.returncode, said + rest


def _table(out: Path) -> pd.DataFrame:
    import dardiag

    df = dardiag.read_profile(out).drop(columns=["run_id"])
    return df.sort_values(["metric", "noise_level", "site", "block", "other_block", "sublayer", "source"],
                          na_position="first").reset_index(drop=True)


def _done(out: Path, unit: str) -> list[int]:
    """How many of its minibatches each rank kept of a level stopped half-way."""
    return [r["done"] for r in torch.load(out / WORK_DIRNAME / f"partial-{unit}.pt", weights_only=True)["ranks"]]


def _completed(out: Path) -> list[str]:
    import json

    return json.loads((out / "_run.json").read_text())["completed"]


def _no_traceback_in_dardiag(err: str) -> bool:
    return re.search(r'File ".*/dardiag/', err) is None  # torchrun prints its own when a worker exits non-zero


def test_a_stop_under_torchrun_is_agreed_kept_and_continued_to_the_uninterrupted_table(tiny_ckpt, two_process_run,
                                                                                      tmp_path):
    script = tmp_path / "gated.py"
    script.write_text(gated_cli("dardiag.engine.collector:LevelCollector.end_batch"))
    ref = two_process_run[0]
    out = tmp_path / "out"

    # Ctrl-C on torchrun inside level 2's 2nd round (rank 1's last minibatch there): torchrun forwards it,
    # each worker says so at once, both finish the minibatch, keep their share and exit 130
    rc, err = _stopped(script, tiny_ckpt, out, tmp_path, "5,4", [signal.SIGINT])
    assert "\nCtrl-C: stopping after this minibatch; run the same command to continue" in err, err
    assert rc != 0 and "rank 1: Ctrl-C: stopping after this minibatch" in err and _no_traceback_in_dardiag(err), err
    assert err.count("interrupted: finished work is kept") == 2, err
    assert _completed(out) == ["m00-l000"] and _done(out, "m00-l001") == [2, 2] and not (out / LOCK).exists()

    # SIGTERM to rank 1 alone (a scheduler) in level 3's first round: rank 0 learns of it after that minibatch,
    # and both stop there with exit 143
    rc, err = _stopped(script, tiny_ckpt, out, tmp_path, "2,1", [signal.SIGTERM], to="rank 1")
    assert rc != 0 and "rank 1: SIGTERM: stopping after this minibatch" in err and _no_traceback_in_dardiag(err), err
    assert "SIGTERM on another process: every process stops after this minibatch" in err, err
    assert sorted(re.findall(r"exitcode +: (-?\d+)", err)) == ["143", "143"], err  # torchrun's summary
    assert _completed(out) == ["m00-l000", "m00-l001"] and _done(out, "m00-l002") == [1, 1]
    assert not (out / LOCK).exists()

    # Ctrl-C twice to rank 1 alone: it stops at once; torchrun then sends rank 0 SIGTERM, and rank 0's next
    # collective, which finds rank 1 gone, is that stop (no error, no hang; the level's saved share stays),
    # however late the SIGTERM comes (distributed.PEER_GONE_WAIT_S)
    rc, err = _stopped(script, tiny_ckpt, out, tmp_path, "1,1", [signal.SIGINT, signal.SIGINT], to="rank 1")
    assert "rank 1: Ctrl-C again: stopping now" in err and "\nSIGTERM: stopping after this minibatch" in err, err
    assert sorted(re.findall(r"exitcode +: (-?\d+)", err)) == ["130", "143"] and _no_traceback_in_dardiag(err), err
    assert _done(out, "m00-l002") == [1, 1] and not (out / LOCK).exists()

    # Ctrl-C twice on torchrun: its second one sends SIGTERM to every worker, which stops at once, mid-minibatch
    rc, err = _stopped(script, tiny_ckpt, out, tmp_path, "1,1", [signal.SIGINT, signal.SIGINT])
    assert rc != 0 and err.count("SIGTERM again: stopping now") == 2 and _no_traceback_in_dardiag(err), err
    assert _done(out, "m00-l002") == [1, 1] and not (out / LOCK).exists()

    res = _torchrun(2, "profile", str(tiny_ckpt), "--out", str(out), *STOP_ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "continuing: 2 of 4 units done, and 1 noise level(s) stopped part-way" in res.stdout
    assert not (out / WORK_DIRNAME / "partial-m00-l002.pt").exists()
    pd.testing.assert_frame_equal(_table(out), _table(ref), check_exact=True)
