"""``compare_runs`` / ``dardiag compare``: every model against a baseline, with what makes runs comparable
(inputs, noise grid, family, batch size, depth) said on the first lines; sanity notices; tables that fit
80 columns. Synthetic tables built with the schema (tests/tables.py), runs written with RunDir: no
profiling, so every test takes well under a second of work."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import dardiag
from dardiag.cli.app import app
from dardiag.cli.tables import print_comparison_table, print_probe_table, print_symptom_table
from dardiag.analysis.comparability import match_depth, match_levels, merge_runs
from dardiag.errors import DardiagError
from dardiag.runs import RunDir
from dardiag.analysis.sanity import NOTICES_ATTR, sanity_notices
from dardiag.analysis.summary import compare_runs
from tables import profile_table

LEVELS = [0.0, 0.5, 1.0]


def small(models, levels=LEVELS, **kw) -> pd.DataFrame:
    return profile_table(models, levels, channels=8, **kw)


def write_run(path, df: pd.DataFrame):
    run = RunDir.create(path, {"config": {"id": str(path)}})
    for i, (_, g) in enumerate(df.groupby("model", sort=False)):
        run.mark_done(f"u{i}", g.to_dict("records"))
    run.finish()
    return path


# ============================================================================ compare_runs


def test_every_model_against_the_baseline_with_counts_and_largest_cells():
    df = small({"residual": 4, "DAR": 4, "DAR2": 4})
    res = compare_runs(df)
    assert res.attrs["baseline"] == "residual"  # the one residual model
    assert list(pd.unique(res["model"])) == ["DAR", "DAR2"]
    act = res[(res.model == "DAR") & (res.metric == "act_rms")].iloc[0]
    # residual grows 2^(4k/D), DAR stays flat: every block past the embedding differs (se 1%)
    assert act.cells == 3 * 5 and act.beyond == 3 * 4 and act.cells_with_se == 15
    top = act.largest[0]
    assert top["block"] == 4 and top["significant"] and np.isclose(top["ratio"], 1 / 16)
    assert act.largest_block == 4 and np.isclose(act.largest_ratio, 1 / 16)
    cka = res[(res.model == "DAR") & (res.metric == "cka")].iloc[0]
    assert cka.cells == 3 * 4  # adjacent pairs only: CKA(z_k-1, z_k), k = 1..4
    # the model order and baseline can be chosen
    res2 = compare_runs(df, baseline="DAR2", models=["DAR2", "DAR", "residual"])
    assert res2.attrs["models"] == ["DAR2", "DAR", "residual"] and list(pd.unique(res2.model)) == ["DAR", "residual"]
    with pytest.raises(DardiagError, match="baseline"):
        compare_runs(df, baseline="nope")


def test_only_shared_levels_are_compared_and_nearest_only_when_asked():
    a = small({"residual": 4}, levels=[0.0, 0.5, 1.0])
    b = small({"DAR": 4}, levels=[0.0, 0.4, 1.0])
    res = compare_runs(merge_runs([a, b], ["a", "b"]))
    act = res[res.metric == "act_rms"].iloc[0]
    assert act.cells == 2 * 5  # levels 0 and 1 only
    assert any("noise grids" in w and "2 shared" in w for w in res.attrs["warnings"])
    near = compare_runs(merge_runs([a, b], ["a", "b"]), nearest=True)
    assert near[near.metric == "act_rms"].iloc[0].cells == 3 * 5  # 0.4 paired with 0.5
    assert match_levels([0.0, 0.4, 1.0], [0.0, 0.5, 1.0], nearest=True) == [(0.0, 0.0), (0.4, 0.5), (1.0, 1.0)]
    c = small({"DAR": 4}, levels=[0.2, 0.7])
    with pytest.raises(DardiagError, match="no noise level in common"):  # nothing to compare: refused
        compare_runs(merge_runs([a, c], ["a", "c"]))


def test_depth_batch_family_and_inputs_differences_are_said_and_handled():
    a = small({"residual": 8}, batch_size=16)
    b = small({"DAR": 28}, batch_size=8)
    res = compare_runs(merge_runs([a, b], ["a", "b"]))
    w = " ".join(res.attrs["warnings"])
    assert "different depths (D = 28 vs 8)" in w and "different batch sizes" in w
    assert match_depth(28, 8) == [(0, 0), (7, 2), (14, 4), (21, 6), (28, 8)]
    act = res[res.metric == "act_rms"].iloc[0]
    assert act.cells == 3 * 5  # blocks at equal relative depth only
    assert {(c["block"], c["block_baseline"]) for c in act.largest} <= set(match_depth(28, 8))
    grad = res[res.metric == "grad_rms"].iloc[0]
    # tables.py makes grad_rms proportional to 1/B: B x grad_rms is the same for both models
    assert grad.scaled_by_batch and grad.beyond == 0
    fam = compare_runs(merge_runs([a, small({"DAR": 8}, family="dit", inputs="synthetic N(0, 1) latents (seed 0)")],
                                  ["a", "b"]))
    assert not {"grad_rms", "loss"} & set(fam.metric)  # different objectives: not compared
    w = " ".join(fam.attrs["warnings"])
    assert "different families" in w and "different inputs" in w


# ============================================================================ sanity notices


def test_identical_states_zero_gradients_and_non_finite_values_are_noticed():
    df = small({"untrained": 4, "ok": 4})
    u = df["model"] == "untrained"
    df.loc[u & (df.metric == "cos_prev"), "value"] = 1.0
    df.loc[u & (df.metric == "act_rms"), "value"] = 1.5
    df.loc[u & (df.metric == "grad_rms"), "value"] = 0.0
    df.loc[(df.model == "ok") & (df.metric == "act_rms") & (df.block == 3) & (df.noise_level == 0.5), "value"] = np.inf
    kinds = {(n.model, n.kind) for n in sanity_notices(df)}
    assert kinds == {("untrained", "identical_states"), ("untrained", "zero_gradients"), ("ok", "non_finite")}
    msg = {n.kind: n.message for n in sanity_notices(df)}
    assert "all block states are identical" in msg["identical_states"]
    assert "Inf in act_rms" in msg["non_finite"] and "block 3" in msg["non_finite"]
    assert sanity_notices(small({"ok": 4})) == []


def test_loss_far_above_the_family_scale_on_real_inputs_only():
    real = small({"m": 4}, family="dit")
    real.loc[real.metric == "loss", "value"] = 12.0  # predicting zero scores 1 for eps prediction
    assert [n.kind for n in sanity_notices(real)] == ["loss_scale"]
    synthetic = real.assign(inputs="synthetic N(0, 1) latents (seed 0)")
    assert sanity_notices(synthetic) == []  # on synthetic latents a high loss is expected
    fine = real.assign(value=np.where(real.metric == "loss", 2.5, real.value))  # below 3x for dit
    assert sanity_notices(fine) == []


def test_notices_reach_the_table_metadata_and_the_first_lines(tmp_path, capsys):
    df = small({"residual": 4, "DAR": 4})
    df.loc[(df.model == "DAR") & (df.metric == "grad_rms"), "value"] = 0.0
    path = write_run(tmp_path / "run", df)
    back = dardiag.read_profile(path)
    assert any("grad_rms is 0" in n for n in back.attrs[NOTICES_ATTR])
    app(["compare", str(path)])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("notice: DAR: grad_rms is 0")


# ============================================================================ tables at 80 columns


def rendered(fn, *args, width=200) -> str:
    buf = io.StringIO()
    fn(Console(file=buf, width=width, color_system=None), *args)
    return buf.getvalue()


def test_tables_fit_80_columns_never_cut_a_number_and_explain_symbols():
    df = small({"DiT-XL-2-256x256 residual checkpoint": 28, "DAR static_t c4 (runs/p2)": 28})
    out = rendered(print_symptom_table, df, "Symptoms") + rendered(print_probe_table, df)
    out += rendered(lambda c, d: print_comparison_table(c, compare_runs(d)), df)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "\u2026" not in out  # rich's ellipsis: nothing cut
    for number in ("14.5 ± 0.2", "0.9999 ± 0.0004", "0.78 ± 0.06"):
        assert number in out
    for symbol in ("-: not defined", "x_t: the raw noisy input", "z = difference", "k~j: block k"):
        assert symbol in " ".join(out.split())


def test_savings_tables_fit_80_columns_in_the_light_style(monkeypatch):
    from dardiag.cli import savings

    df = profile_table({"DiT-XL-2-256x256 residual checkpoint": 4, "DAR static_t c4 (runs/p2)": 4},
                       levels=[0.0, 0.5, 1.0], channels=8, savings=6)
    buf = io.StringIO()
    monkeypatch.setattr(savings, "console", Console(file=buf, width=200, color_system=None))
    savings.print_ablation(df)
    savings.print_trajectory(df)
    out = buf.getvalue()
    assert max(len(line) for line in out.splitlines()) <= 80 and "\u2026" not in out
    assert not set("┏┃━╇│└") & set(out)  # the other tables' light style, not a heavy box
    assert out.startswith("Looks redundant vs is removable (--ablation)")  # the title on a line of its own
    assert "1e-16" in out and "0.0000000000" not in out  # a vanishing error is not printed to 16 places
    for symbol in ("rho: Spearman rank correlation", "dloss: the loss increase", "error: cache_error"):
        assert symbol in " ".join(out.split())


def test_a_narrow_table_keeps_its_title_on_one_line():
    df = small({"residual": 4})
    title = rendered(print_probe_table, df).splitlines()[0]
    assert title == "Timestep probe: held-out R^2 of a ridge fit of the noise level"


# ============================================================================ the command


def test_compare_command_json_baseline_order_and_warnings(tmp_path, capsys):
    a = write_run(tmp_path / "a", small({"residual": 4}, batch_size=16))
    b = write_run(tmp_path / "b", small({"DAR": 8}, batch_size=8))
    app(["compare", str(b), str(a), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["models"] == ["DAR", "residual"] and out["baseline"] == "residual"
    assert any("different depths" in w for w in out["warnings"])
    assert {r["metric"] for r in out["rows"]} == {"act_rms", "grad_rms", "cos_prev", "cka", "loss"}
    app(["compare", str(b), str(a), "--baseline", "DAR"])
    text = capsys.readouterr().out
    assert text.startswith("warning: residual vs DAR: different batch sizes")
    assert "residual vs DAR (baseline)" in text
    with pytest.raises(SystemExit) as e:
        app(["compare", str(a), str(b), "--baseline", "nope"])
    assert e.value.code == 2 and "nope" in capsys.readouterr().err
