"""``dardiag demo`` end to end, and ``dardiag compare``'s success path with its ``--model`` / ``--routing``
filters, in process through the CLI entry point (the bundled models are tiny: seconds)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import dardiag
from dardiag.cli.app import app

pytestmark = pytest.mark.usefixtures("one_thread")

DEMO = ["--samples", "16", "--levels", "3", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    app(["demo", "--out", str(out), *DEMO])
    return out


def test_demo_profiles_both_bundled_models_and_draws_the_figures(demo_run, capsys):
    df = dardiag.read_profile(demo_run)
    assert set(df.model) == {"residual", "DAR static_t c4"}
    assert set(df.routing) == {"residual", "dar-static_t-c4"}
    assert df.attrs["dardiag_status"] == "complete" and df.noise_level.dropna().nunique() == 3
    assert set(df.n_samples) == {16}
    # the DAR model writes its routing weights, the residual one its counterfactual importance
    assert set(df[df.metric == "route_alpha"].model) == {"DAR static_t c4"}
    assert set(df[df.metric == "route_importance"].model) == {"residual"}
    figures = {p.name for p in (demo_run / "_figures").iterdir()}
    assert {"symptoms.pdf", "symptoms.png", "cka.png", "routing.png", "probe.png"} <= figures
    assert len(pd.read_parquet(demo_run)) == len(df)  # pandas reads the table in one line


def test_demo_again_reads_the_finished_run_back(demo_run, capsys, monkeypatch):
    import dardiag.engine.sweep as sweep

    monkeypatch.setattr(sweep, "run_level", lambda *a, **k: pytest.fail("a finished run was computed again"))
    before = {p.name: p.stat().st_mtime_ns for p in demo_run.glob("part-*.parquet")}
    app(["demo", "--out", str(demo_run), *DEMO, "--no-figures"])
    out = capsys.readouterr().out
    assert "residual" in out and "DAR static_t c4" in out  # the symptom table, from the stored rows
    assert {p.name: p.stat().st_mtime_ns for p in demo_run.glob("part-*.parquet")} == before


def test_compare_puts_two_runs_side_by_side_and_filters(demo_run, tmp_path, capsys):
    # a second run: the residual model alone on other levels
    other = tmp_path / "other"
    residual = str(dardiag.bundled_checkpoints()["residual"])
    app(["profile", residual, "--out", str(other), "--inputs", str(_digits(tmp_path)), "--noise-levels",
         "0.2,0.7", "--samples", "16", "--batch-size", "8", "--no-figures", "--no-progress", "--no-probe"])
    figs = tmp_path / "figs"
    app(["compare", str(demo_run), str(other), "--out", str(figs)])
    drawn = {p.stem for p in figs.glob("*.png")}
    assert {"symptoms", "heatmap_act_rms", "cka"} <= drawn

    only = tmp_path / "only"
    app(["compare", str(demo_run), str(other), "--out", str(only), "--model", "DAR static_t c4"])
    assert (only / "symptoms.png").exists()
    routing = tmp_path / "routing"
    app(["compare", str(demo_run), str(other), "--out", str(routing), "--routing", "residual"])
    assert (routing / "symptoms.png").exists() and (routing / "routing.png").exists()

    with pytest.raises(SystemExit) as e:  # a filter that matches nothing is one line, exit 2
        app(["compare", str(demo_run), str(other), "--out", str(tmp_path / "none"), "--model", "nope"])
    assert e.value.code == 2 and "no model named nope" in capsys.readouterr().err


def test_compare_filters_select_the_rows_drawn(demo_run, tmp_path):
    """The filters themselves, on the merged table compare draws from."""
    from dardiag.cli.cmd_plot import select_models

    df = dardiag.read_profile(demo_run)
    assert set(select_models(df, ["residual"], None).model) == {"residual"}
    assert set(select_models(df, None, ["dar-static_t-c4"]).routing) == {"dar-static_t-c4"}
    assert select_models(df, None, None).equals(df)


def _digits(tmp_path: Path) -> Path:
    import torch

    path = tmp_path / "digits.pt"
    torch.save(dardiag.held_out_digits(), path)
    return path
