"""``--shard``: the weights sharded over torchrun's processes (FSDP2, each block its own unit), each process
loading only its rows, gives the single process' table (our DiT, a joint and a video diffusers class);
a failing process ends every process with one line and the run continues; bad input is one line.

Two torchrun runs of 2 gloo processes (the slowest tests here: kept to these), the rest in process.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import dardiag
from dardiag.checkpoints import save_checkpoint
from dardiag.checkpoints.files import mapped_safetensors
from dardiag.checkpoints.sharded import _release, check_units
from dardiag.adapters.options import LoadOptions
from dardiag.errors import DardiagError
from tests.helpers import randomised_dit
from tests.test_distributed import KEYS, _no_traceback_in_dardiag, _sorted, _torchrun, _torchrun_command
from tests.test_train_cli_errors import run_cli

sys.path.insert(0, str(Path(__file__).parent))  # diffusers_tiny, as the diffusers tests import it
diffusers = pytest.importorskip("diffusers")
from diffusers_tiny import TEXT_TOKENS, build, save  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

DIT = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)
# 12 images in minibatches of 4: 3 per level, so rank 0 holds 2 and rank 1 holds 1 and runs one pass more
ARGS = ["--samples", "12", "--batch-size", "4", "--noise-levels", "0.1,0.9", "--seed", "3",
        "--text-tokens", str(TEXT_TOKENS), "--no-figures", "--no-progress"]
KW = dict(samples=12, batch_size=4, noise_levels=[0.1, 0.9], seed=3, text_tokens=TEXT_TOKENS)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    save_checkpoint(root / "tiny.pt", randomised_dit(DIT, 0, scale=0.05), family="dit", step=7)
    return [root / "tiny.pt", save(build("FluxTransformer2DModel"), root / "flux"),
            save(build("WanTransformer3DModel"), root / "wan")]


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = _sorted(a), _sorted(b)
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS], check_dtype=False)
    np.testing.assert_array_equal(a["n_samples"], b["n_samples"])  # every image counted once, none twice
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(a["stderr"], b["stderr"], rtol=1e-6, atol=1e-12, equal_nan=True)


def _single(paths) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # synthetic latents and text: said, and the same in both runs
        return dardiag.profile([str(p) for p in paths], **KW)


def test_two_sharded_processes_equal_one(models, tmp_path):
    """Our DiT, Flux (joint text-image) and Wan (video) in one run, sharded over 2 processes and every block
    checkpointed as well: the single process' plain table, CKA and its standard errors included."""
    out = tmp_path / "sharded"
    res = _torchrun(2, "profile", *map(str, models), "--out", str(out), *ARGS, "--shard", "--checkpoint-blocks",
                    timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    plans = [line for line in res.stdout.splitlines() if line.startswith("plan: ")]
    assert len(plans) == 3 and all("sharded over 2" in p and "with every block checkpointed" in p for p in plans)
    two, one = pd.read_parquet(out), _single(models)
    assert set(two.model) == {"tiny", "flux", "wan"}
    assert {"act_rms", "grad_rms", "cos_prev", "cka", "probe_r2", "route_importance", "act_kurtosis"} <= set(one.metric)
    assert_same_table(two, one)


FAILING = """\
import os, sys
import dardiag.engine.level as level
from dardiag.errors import DardiagError
real, calls = level._pass, []
def failing(*args, **kwargs):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 3:  # rank 1's first minibatch of the second level
        raise DardiagError("rank 1 fails here on purpose")
    return real(*args, **kwargs)
level._pass = failing
from dardiag.cli.app import app
app(sys.argv[1:])
"""


def test_a_failing_process_ends_every_process_with_one_line_and_the_run_continues(models, tmp_path):
    import subprocess

    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    out = tmp_path / "run"
    args = ["profile", str(models[0]), "--out", str(out), *ARGS, "--shard"]
    cmd, env = _torchrun_command(2, *args, script=script)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode != 0
    ours = [line for line in res.stderr.splitlines() if line.startswith(("error:", "interrupted:", "SIGTERM"))]
    assert ours[0] == "error: rank 1 fails here on purpose" or ours[1] == "error: rank 1 fails here on purpose", ours
    assert len(ours) == 2 and any("process 0: another process of this run ended" in line for line in ours), ours
    assert _no_traceback_in_dardiag(res.stderr)
    res = _torchrun(2, *args, timeout=300)  # the same command continues: the first level is kept
    assert res.returncode == 0, res.stderr[-3000:]
    assert "continuing: 1 of 3 units done" in res.stdout
    assert_same_table(pd.read_parquet(out), _single(models[:1]))


# ----------------------------------------------------------------------------- bad input, in process

def test_shard_without_torchrun_is_one_line_and_writes_nothing(models, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, _, err = run_cli(capsys, "profile", models[0], "--out", tmp_path / "p", *ARGS, "--shard")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --shard spreads the weights over torchrun")
    assert not (tmp_path / "p").exists()


def test_shard_refuses_the_analyses_that_split_their_passes_unevenly(models, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # refused before the process group is joined
    with pytest.raises(DardiagError, match="--ablation is not available with --shard"):
        dardiag.profile(str(models[0]), shard=True, analyses={"ablation": True}, **KW)


class Tied(nn.Module):
    def __init__(self, tie: bool, width: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        if tie:
            self.blocks[1].weight = self.blocks[0].weight


def test_blocks_fsdp2_cannot_make_units_and_too_many_processes_are_refused():
    check_units(Tied(False), ["blocks.0", "blocks.1"], 2, "m")
    with pytest.raises(DardiagError, match="blocks blocks.0 and blocks.1 share weights"):
        check_units(Tied(True), ["blocks.0", "blocks.1"], 2, "m")
    with pytest.raises(DardiagError, match="5 processes cannot shard block blocks.0: its largest weight has 4 rows"):
        check_units(Tied(False), ["blocks.0", "blocks.1"], 5, "m")
    with pytest.raises(DardiagError, match="does not know this model's blocks"):
        check_units(Tied(False), [], 2, "m")


def test_a_mapped_safetensors_file_holds_the_saved_tensors_and_a_truncated_one_is_one_line(models, tmp_path):
    from safetensors.torch import load_file

    file = models[1] / "diffusion_pytorch_model.safetensors"
    mapped, read = mapped_safetensors(file), load_file(str(file))
    assert set(mapped) == set(read) and all(torch.equal(mapped[k], read[k]) for k in read)
    for k in read:  # pages given back after a copy come back from the file when read again
        _release(mapped[k][: max(1, mapped[k].shape[0] // 2)] if mapped[k].dim() else mapped[k])
    assert all(torch.equal(mapped[k], read[k]) for k in read)
    memory = torch.randn(1000)  # memory no file backs is left as it is
    before = memory.clone()
    _release(memory)
    assert torch.equal(memory, before)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(file.read_bytes()[:200])
    with pytest.raises(DardiagError, match="is not a readable safetensors file"):
        mapped_safetensors(cut)


def test_shard_is_not_part_of_what_a_resumed_run_compares():
    assert "shard" not in LoadOptions(shard=True).compared()
    assert LoadOptions(shard=True).compared() == LoadOptions().compared()
