"""Multi-process sweeps (dardiag.engine.distributed): a 2-process gloo run under torchrun writes the same table
as one process, up to the order of float additions."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from dardiag.engine import distributed
from dardiag.checkpoints import save_checkpoint
from dardiag.models import DiT
from dardiag.models.config import DiTConfig
from dardiag.api import profile

KEYS = ["model", "metric", "site", "block", "other_block", "sublayer", "source", "noise_level"]
ARGS = ["--samples", "12", "--batch-size", "4", "--noise-levels", "0.1,0.6,1.0", "--seed", "3"]


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


def _torchrun(nproc: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
           "--master-port", str(_free_port()), "-m", "dardiag", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    key = df[KEYS].astype("object").where(df[KEYS].notna(), -1)  # nulls sort (and compare) as -1
    return df.assign(**{k: key[k] for k in KEYS}).sort_values(KEYS).reset_index(drop=True)


def test_two_processes_equal_one(tiny_ckpt, tmp_path):
    out = tmp_path / "run2"
    res = _torchrun(2, "profile", str(tiny_ckpt), "--out", str(out), *ARGS, "--no-figures", "--no-progress")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert res.stdout.count("wrote ") == 1  # only rank 0 reports
    assert not (out / "_figures").exists()

    two = pd.read_parquet(out)
    one = profile(str(tiny_ckpt), samples=12, batch_size=4, noise_levels=[0.1, 0.6, 1.0], seed=3)
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
                    "--batch-size", "4", "--noise-levels", "0.5", "--no-figures", timeout=90)
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
