"""``dardiag plot`` / ``compare`` argument errors, and the summary's quiet arithmetic."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import dardiag
from dardiag.cli.app import app
from dardiag.runs import RunDir


def tiny_run(path, run_id: str):
    rows = [dict(run_id=run_id, model="m", routing="residual", family="sit", checkpoint="m.pt", step=1,
                 n_samples=4, batch_size=4, noise_level=0.5, t_native=0.5, metric="act_rms", site="z",
                 block=k, value=1.0 + k) for k in range(3)]
    run = RunDir.create(path, {"config": {"id": run_id}})
    run.mark_done("u", rows)
    run.finish()
    return path


def one_line_error(capsys, argv, *needles):
    with pytest.raises(SystemExit) as exc:
        app(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error:"), err
    for needle in needles:
        assert needle in err
    return err


def test_compare_refuses_the_same_run_twice(tmp_path, capsys):
    a = tiny_run(tmp_path / "a", "r1")
    one_line_error(capsys, ["compare", str(a), str(a), "--out", str(tmp_path / "figs")], "same run")
    assert not (tmp_path / "figs").exists()


def test_plot_out_must_be_a_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # app() replaces it
    a = tiny_run(tmp_path / "a", "r1")
    f = tmp_path / "afile"
    f.write_text("keep")
    for extra in ([], ["--force"]):
        one_line_error(capsys, ["plot", str(a), "--out", str(f), *extra], "not a directory")
    assert f.read_text() == "keep"


def test_symptom_summary_is_quiet_about_zero_gradients():
    df = pd.DataFrame({"model": "a", "routing": "r", "noise_level": 0.5, "metric": ["grad_rms"] * 2 + ["act_rms"] * 2,
                       "block": [1, 2, 1, 2], "other_block": np.nan, "value": [0.0, 0.0, 1.0, 2.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = dardiag.summary.symptom_summary(df)  # reachable after a bare `import dardiag`, as the README says
    assert s.act_growth.iloc[0] == 2.0 and np.isnan(s.grad_decay.iloc[0])


def test_plot_defaults_to_the_runs_figures_and_refuses_a_run_as_out(tmp_path, capsys):
    a = tiny_run(tmp_path / "a", "r1")
    one_line_error(capsys, ["plot", str(a), "--out", str(a), "--force"], "run directory", "_figures")
    app(["plot", str(a)])
    assert any(p.suffix == ".png" for p in (a / "_figures").iterdir())
    assert len(dardiag.read_profile(a)) == 3 and len(pd.read_parquet(a)) == 3  # still one-line readable
    (tmp_path / "afile").write_text("keep")
    one_line_error(capsys, ["plot", str(a), "--out", str(tmp_path / "afile" / "x")], "cannot create")


def test_plotting_an_unfinished_run_warns(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # app() replaces it
    run = RunDir.create(tmp_path / "a", {"config": {"id": 1}})
    run.mark_done("u", [dict(run_id="r", model="m", routing="residual", family="sit", checkpoint="m.pt",
                             step=1, n_samples=4, batch_size=4, noise_level=0.5, t_native=0.5,
                             metric="act_rms", site="z", block=k, value=1.0 + k) for k in range(3)])
    with pytest.warns(UserWarning, match="unfinished run"):
        app(["plot", str(tmp_path / "a"), "--out", str(tmp_path / "figs")])
