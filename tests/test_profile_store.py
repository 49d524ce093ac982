"""``dardiag profile`` end to end: one table for several models, refusal to overwrite, resume, errors.

The command runs as a user runs it (``python -m dardiag profile ...`` in a subprocess, once; the other
commands in process) on dardiag checkpoints of tiny random models whose zero-initialised parameters got
small random values. Stopping with Ctrl-C: ``test_stop``.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import dardiag
import dardiag.api as api
import dardiag.engine.sweep as sweep
import dardiag.engine.units as units
from dardiag.checkpoints import save_checkpoint
from dardiag.cli.app import app
from dardiag.models import DiT, DiTConfig
from dardiag.engine.config import Analyses
from dardiag.store import REQUIRED_COLUMNS, SCHEMA

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
TOKENS = 16
DEPTH = 2
N = 8
LEVELS = "0.2,0.8"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


@torch.no_grad()
def tiny(seed: int, **cfg) -> DiT:
    torch.manual_seed(seed)
    model = DiT(DiTConfig(**TINY, **cfg))
    g = torch.Generator().manual_seed(seed + 100)
    for name, p in model.named_parameters():  # adaLN-Zero, output head, e(t), DAR queries: non-trivial
        if p.requires_grad and torch.count_nonzero(p) == 0:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("profile_store")
    save_checkpoint(d / "res.pt", tiny(0), family="dit", step=100)
    save_checkpoint(d / "dar.pt", tiny(1, routing="dar", query="static_t", chunk_size=2), family="sit", step=200)
    g = torch.Generator().manual_seed(5)
    torch.save({"x0": torch.randn(N, 4, 8, 8, generator=g), "y": torch.randint(0, 10, (N,), generator=g),
                "noise": torch.randn(N, 4, 8, 8, generator=g)}, d / "inputs.pt")
    torch.save({"x0": torch.randn(N, 4, 16, 16, generator=g)}, d / "big_inputs.pt")
    (d / "garbage.pt").write_bytes(b"this is not a torch file\x00\x01\x02" * 10)
    return d


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dardiag", "profile", *map(str, args)]


def snapshot(path: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file under ``path``."""
    return {str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_model_run(files):
    out = files / "run"
    cmd = cli(files / "res.pt", files / "dar.pt", "--out", out, "--inputs", files / "inputs.pt",
              "--noise-levels", LEVELS, "--samples", N, "--batch-size", 4, "--seed", 7, "--token-maps",
              "--no-figures", "--no-progress")
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    return out, r


#################################################################################
#                          One table, two models                                #
#################################################################################


def test_one_command_writes_one_table_with_both_models(two_model_run, files):
    out, r = two_model_run
    df = pd.read_parquet(out)
    assert set(df.model) == {"res", "dar"}
    assert set(df.columns) == set(SCHEMA.names)
    for col in REQUIRED_COLUMNS:
        assert df[col].notna().all(), col
    assert set(df.routing) == {"residual", "dar-static_t-c2"}
    assert dict(df.groupby("model").family.first()) == {"res": "dit", "dar": "sit"}
    assert dict(df.groupby("model").step.first()) == {"res": 100, "dar": 200}
    per_model = df[df.metric == "act_rms"].groupby("model").noise_level.nunique()
    assert dict(per_model) == {"res": 2, "dar": 2}
    assert (df[df.metric == "route_alpha"].model == "dar").all()
    assert (df[df.metric == "route_importance"].model == "res").all()
    assert df[df.metric == "probe_r2"].groupby("model").size().to_dict() == {"res": 8, "dar": 8}  # x_t,z0-2,h1-4
    assert set(df.batch_size) == {4} and set(df.n_samples) == {N}
    assert "wrote" in r.stdout


def test_metadata_records_the_run(two_model_run, files):
    out, _ = two_model_run
    df = dardiag.read_profile(out)
    meta = df.attrs["dardiag"]
    cfg = meta["config"]
    models = {m["name"]: m for m in cfg["models"]}
    for name in ("res", "dar"):
        sha = hashlib.sha256((files / f"{name}.pt").read_bytes()).hexdigest()
        assert models[name]["sha256"] == sha
        assert cfg["grid"][name] == pytest.approx([0.8, 0.2], abs=1e-3)
    assert cfg["seed"] == 7 and cfg["batch_size"] == 4 and cfg["samples"] == N
    assert cfg["analyses"]["token_maps"] is True and cfg["analyses"]["cka_rows"] == "tokens"
    assert {"dardiag", "torch", "pandas", "pyarrow", "numpy", "python"} <= set(meta["versions"])
    assert meta["versions"]["torch"] == torch.__version__
    assert df.attrs["dardiag_status"] == "complete"
    assert set(df.run_id) == {meta["run_id"]}


def test_token_maps_have_one_value_per_token_and_average_to_the_block_value(two_model_run):
    df = pd.read_parquet(two_model_run[0])
    for tok_metric, metric in (("token_act_rms", "act_rms"), ("token_grad_rms", "grad_rms")):
        tok = df[df.metric == tok_metric]
        assert len(tok) == 2 * 2 * (DEPTH + 1)  # models x levels x blocks
        ref = df[df.metric == metric].set_index(["model", "noise_level", "block"]).value
        for r in tok.itertuples():
            vals = list(r.token_values)
            assert len(vals) == TOKENS
            assert all(math.isfinite(v) and v >= 0 for v in vals)
            want = ref[(r.model, r.noise_level, r.block)]
            assert sum(vals) / len(vals) == pytest.approx(want, rel=1e-5)
            assert r.value == pytest.approx(want, rel=1e-5)
    assert df[~df.metric.str.startswith("token_")].token_values.isna().all()


def in_process(capsys, *args) -> subprocess.CompletedProcess:
    """``dardiag profile ARGS`` in this process (one real process, ``two_model_run``, is enough: a new Python
    per command costs seconds of imports), as a finished process."""
    capsys.readouterr()
    try:
        app(["profile", *map(str, args)])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_rerun_without_force_is_refused_and_changes_nothing(two_model_run, files, capsys):
    out, _ = two_model_run
    before = snapshot(out)
    r = in_process(capsys, files / "res.pt", "--out", out, "--inputs", files / "inputs.pt", "--noise-levels", "0.5",
                   "--samples", N, "--no-figures", "--no-progress")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--force" in lines[0], r.stderr
    assert snapshot(out) == before


#################################################################################
#                                   Resume                                      #
#################################################################################


def test_resume_after_an_interruption_equals_an_uninterrupted_run(files, monkeypatch):
    kw = dict(inputs=files / "inputs.pt", noise_levels=[0.1, 0.5, 0.9], samples=N, batch_size=4, seed=3)
    models = [str(files / "res.pt"), str(files / "dar.pt")]
    whole = api.profile(models, out=files / "whole", **kw)

    real = sweep.run_level
    calls = []

    def flaky(*a, **k):
        calls.append(a[2])
        if len(calls) > 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a unit
        return real(*a, **k)

    out = files / "resumed"
    monkeypatch.setattr(sweep, "run_level", flaky)
    with pytest.raises(KeyboardInterrupt):
        api.profile(models, out=out, **kw)
    state = dardiag.runs.profile_run._read_run_json(out / "_run.json")
    assert state["status"] == "running" and len(state["completed"]) == 2

    calls.clear()
    monkeypatch.setattr(sweep, "run_level", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    resumed = api.profile(models, out=out, **kw)  # the same call again continues (as --resume would)
    assert len(calls) == 2 * 3 - 2  # only the unfinished levels were recomputed
    assert resumed.attrs["dardiag_status"] == "complete"

    def canon(df):
        df = df.drop(columns=["run_id", "token_values"])
        keys = ["model", "metric", "site", "block", "other_block", "sublayer", "source", "noise_level"]
        return df.sort_values(keys, na_position="first").reset_index(drop=True)

    pd.testing.assert_frame_equal(canon(resumed), canon(whole), check_exact=False, rtol=1e-12, atol=0)
    assert resumed.run_id.nunique() == 1
    assert len(resumed) == len(whole)


#################################################################################
#                              User errors                                      #
#################################################################################


def bad_cases(f: Path) -> dict[str, list]:
    res, dar = f / "res.pt", f / "dar.pt"
    return {
        "unreadable inputs": [res, "--inputs", f / "garbage.pt"],
        "missing inputs": [res, "--inputs", f / "nowhere.pt"],
        "shape mismatch": [res, "--inputs", f / "big_inputs.pt"],
        "DiT timestep 1000": [res, "--timesteps", "1000"],
        "SiT timestep 1.5": [dar, "--timesteps", "1.5"],
        "empty grid": [res, "--noise-levels", ""],
        "noise level 1.5": [res, "--noise-levels", "0.5,1.5"],
        "batch 2 with CKA over images": [res, "--batch-size", "2", "--cka-rows", "images"],
        "unknown dtype": [res, "--dtype", "float8"],
        "cuda without CUDA": [res, "--device", "cuda"],
        "levels and timesteps": [res, "--noise-levels", "0.5", "--timesteps", "10"],
        "missing checkpoint": [f / "nothing.pt"],
        "cka max rows 3": [res, "--cka-max-rows", "3"],
        "device mps": [res, "--device", "mps"],
        "levels 1e12": [res, "--levels", "1000000000000"],
    }


EXPECT = {
    "unreadable inputs": "garbage.pt", "missing inputs": "nowhere.pt", "shape mismatch": "shape",
    "DiT timestep 1000": "range", "SiT timestep 1.5": "range", "empty grid": "empty",
    "noise level 1.5": "[0, 1]", "batch 2 with CKA over images": "CKA", "unknown dtype": "float8",
    "cuda without CUDA": "CUDA", "levels and timesteps": "either", "missing checkpoint": "nothing.pt",
    "cka max rows 3": "--cka-max-rows", "device mps": "mps", "levels 1e12": "--levels",
}


@pytest.mark.parametrize("case", list(EXPECT))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(files, case, capsys, monkeypatch):
    """In-process through the CLI entry point (a subprocess per case costs seconds of torch import;
    test_rerun_without_force... runs the same error path in a real interpreter). An exception other
    than DardiagError would escape ``app`` here and fail the test: that is the 'Traceback' case."""
    import warnings

    from dardiag.cli.app import app

    if case == "cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # app() replaces it
    out = files / f"bad-{case.replace(' ', '_')}"
    args = [str(a) for a in bad_cases(files)[case]]
    with pytest.raises(SystemExit) as exc:
        app(["profile", *args, "--out", str(out), "--samples", "8", "--no-figures", "--no-progress"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exc.value.code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert EXPECT[case] in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


def test_huge_samples_and_unwritable_out_are_one_line_errors(files, tmp_path):
    from dardiag.errors import DardiagError

    with pytest.raises(DardiagError, match="--samples 100000000000 needs"):
        api.profile(str(files / "res.pt"), samples=10**11, noise_levels=[0.5])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DardiagError, match="cannot create .*afile/sub.*writable directory"):
        api.profile(str(files / "res.pt"), out=tmp_path / "afile" / "sub", samples=N, batch_size=4,
                      noise_levels=[0.5], analyses=Analyses(probe=False))
    assert (tmp_path / "afile").read_text() == "x"


def test_a_failed_force_restores_the_replaced_run(files, monkeypatch):
    kw = dict(inputs=files / "inputs.pt", samples=N, batch_size=4, analyses=Analyses(probe=False))
    out = files / "forced"
    first = api.profile(str(files / "res.pt"), out=out, noise_levels=[0.5], **kw)
    before = snapshot(out)

    def broken(*a, **k):
        raise RuntimeError("loss is not finite")  # what a NaN checkpoint or an OOM does mid-run

    monkeypatch.setattr(sweep, "run_level", broken)
    with pytest.raises(RuntimeError):
        api.profile(str(files / "res.pt"), out=out, noise_levels=[0.2, 0.9], force=True, **kw)
    assert snapshot(out) == before  # the old run is back, byte for byte
    pd.testing.assert_frame_equal(dardiag.read_profile(out), first)


def test_resume_recomputes_levels_whose_probe_cache_is_gone(files, monkeypatch):
    kw = dict(inputs=files / "inputs.pt", noise_levels=[0.2, 0.8], samples=N, batch_size=4)
    out = files / "nocache"
    real = sweep.run_level
    calls = []

    def stop_before_probe(*a, **k):  # the first model's levels are done, its probe is not
        calls.append(a[2])
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    def no_probe(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(units, "probe_rows", no_probe)

    monkeypatch.setattr(sweep, "run_level", stop_before_probe)
    with pytest.raises(KeyboardInterrupt):
        api.profile([str(files / "res.pt"), str(files / "dar.pt")], out=out, **kw)
    shutil.rmtree(out / "_work")  # e.g. the run directory was copied without its scratch
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(sweep, "run_level", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    df = api.profile([str(files / "res.pt"), str(files / "dar.pt")], out=out, **kw)
    assert len(calls) == 4  # the first model's two levels again (cache gone), then the second's
    assert df[df.metric == "probe_r2"].model.nunique() == 2
    assert not (out / "_work").exists()  # a complete run drops its scratch: read back without any work
    calls.clear()
    again = api.profile([str(files / "res.pt"), str(files / "dar.pt")], out=out, **kw)
    assert calls == [] and len(again) == len(df)


def test_a_failed_fresh_run_leaves_nothing_that_blocks_the_corrected_command(files, monkeypatch):
    kw = dict(inputs=files / "inputs.pt", samples=N, batch_size=4, noise_levels=[0.5], analyses=Analyses(probe=False))
    out = files / "stub"
    monkeypatch.setattr(sweep, "run_level", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("loss is not finite")))
    with pytest.raises(RuntimeError):
        api.profile(str(files / "dar.pt"), out=out, **kw)
    assert not out.exists()  # no stub run, and no empty OUT: nothing was finished (this command created OUT)
    monkeypatch.undo()
    df = api.profile(str(files / "res.pt"), out=out, **kw)  # another config, no --force needed
    assert set(df.model) == {"res"}


def test_ctrl_c_during_force_then_the_same_force_command_continues(files, monkeypatch):
    kw = dict(inputs=files / "inputs.pt", samples=N, batch_size=4, analyses=Analyses(probe=False))
    out = files / "force_ctrl_c"
    api.profile(str(files / "res.pt"), out=out, noise_levels=[0.5], **kw)
    real, calls = sweep.run_level, []

    def interrupted(*a, **k):
        calls.append(a[2])
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sweep, "run_level", interrupted)
    new = dict(noise_levels=[0.1, 0.6, 0.9], force=True, **kw)
    with pytest.raises(KeyboardInterrupt):
        api.profile(str(files / "res.pt"), out=out, **new)
    assert (out / "_replaced" / "_run.json").exists()  # the old run is kept, not lost
    with pytest.raises(dardiag.errors.DardiagError, match="kept in .*_replaced"):
        api.profile(str(files / "res.pt"), out=out, noise_levels=[0.5], **kw)  # the old command
    calls.clear()
    monkeypatch.setattr(sweep, "run_level", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    df = api.profile(str(files / "res.pt"), out=out, **new)
    assert len(calls) == 2 and not (out / "_replaced").exists()
    assert df.noise_level.nunique() == 3


def test_noise_levels_are_stored_as_asked_where_the_family_is_continuous(files):
    from dardiag.adapters.open import open_subject as load_subject

    sit, dit = load_subject(files / "dar.pt"), load_subject(files / "res.pt")
    assert [lv for lv, _ in sweep.resolve_grid(sit, [0.1, 0.5, 0.9], None)] == [0.9, 0.5, 0.1]  # == matches
    grid = sweep.default_grid(8)
    assert sorted(lv for lv, _ in sweep.resolve_grid(sit, grid, None)) == grid
    # DiT's timesteps are integers: the level stored is the one the model saw, t / 999
    assert [lv for lv, _ in sweep.resolve_grid(dit, [0.1], None)] == [100 / 999]


def test_an_in_memory_model_changed_since_the_last_run_is_not_read_back(files):
    from dardiag.checkpoints import load_model

    model, info = load_model(files / "dar.pt")
    kw = dict(samples=N, batch_size=4, noise_levels=[0.5], analyses=Analyses(probe=False), out=files / "mem")
    first = api.profile((model, info), **kw)
    pd.testing.assert_frame_equal(api.profile((model, info), **kw), first)  # same weights: read back
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    with pytest.raises(dardiag.errors.DardiagError, match="weights_sha256"):
        api.profile((model, info), **kw)


def test_checkpoints_of_one_training_run_are_one_model_over_steps(files, tmp_path, capsys):
    """`dardiag profile run/ckpt_*.pt`: one model (the run's folder) with a step per file, so the
    training figures draw one line; the console summary reads the last step."""
    run = tmp_path / "my_run"
    run.mkdir()
    for i, step in enumerate((500, 1000, 1500)):
        save_checkpoint(run / f"ckpt_{step:07d}.pt", tiny(10 + i), family="dit", step=step)
    shutil.copy(files / "dar.pt", run / "other.pt")  # another architecture in the folder: its own model
    out = tmp_path / "out"
    r = in_process(capsys, *sorted(run.glob("*.pt")), "--out", out, "--inputs", files / "inputs.pt",
                   "--noise-levels", "0.2,0.8", "--samples", N, "--batch-size", 4, "--no-progress")
    assert r.returncode == 0, r.stderr
    df = dardiag.read_profile(out)
    steps = df.groupby("model")["step"].unique()
    assert sorted(steps["my_run"]) == [500, 1000, 1500] and list(steps["other"]) == [200]
    assert (out / "_figures" / "training_act_rms.png").exists()
    last = dardiag.summary.symptom_summary(df)
    assert len(last[last.model == "my_run"]) == 2  # one row per extreme level, from step 1500 only
