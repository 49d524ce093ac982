"""Store: one schema, atomic parts, run directories that refuse to clobber, strict reading."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dardiag.errors import DardiagError
from dardiag.runs import FIGURES_DIRNAME, RUN_FILE, RunDir, read_profile
from dardiag.store import METADATA_KEY, REQUIRED_COLUMNS, SCHEMA, to_table, write_part

META = {"config": {"noise_levels": [0.1, 0.5, 0.9], "batch_size": 4, "seed": 0}, "dardiag_version": "0.1.0"}


def make_rows(model: str = "DiT-S residual", step: int = 1000, depth: int = 2) -> list[dict]:
    """A few rows of every shape the profiler writes: block, pair, sublayer/source, probe, tokens."""
    base = dict(run_id="r1", model=model, routing="residual", family="sit", checkpoint=f"ck/{step}.pt",
                step=step, n_samples=4, batch_size=4)
    rows = []
    for nl in (0.1, 0.9):
        common = dict(base, noise_level=nl, t_native=1 - nl)
        rows.append(dict(common, metric="loss", value=0.3 + nl))
        for k in range(depth + 1):
            rows.append(dict(common, metric="act_rms", site="z", block=k, value=1.5 ** k))
            rows.append(dict(common, metric="cka", site="z", block=k, other_block=0, value=-0.01 * k))
            rows.append(dict(common, metric="token_act_rms", site="z", block=k, value=1.0,
                             token_values=np.arange(4, dtype=np.float32) / 4))
        rows.append(dict(common, metric="route_importance", site="h", sublayer=2, source=1, value=3e-6))
    rows.append(dict(base, metric="probe_r2", site="x_t", value=0.8))
    rows.append(dict(base, metric="probe_r2", site="z", block=1, value=float("nan")))  # NaN is kept
    return rows


# ============================================================================ schema / to_table


def test_schema_declares_the_columns_in_order():
    assert SCHEMA.names == [
        "run_id", "model", "routing", "family", "checkpoint", "step", "metric", "site", "block", "other_block",
        "sublayer", "source", "noise_level", "t_native", "value", "n_samples", "batch_size", "token_values",
        "cka_rows", "stderr", "channel_values", "inputs", "sampler_step",
        "branch", "sample_values",  # added later: new columns only append
    ]
    assert SCHEMA.field("token_values").type == pa.list_(pa.float32())
    assert set(REQUIRED_COLUMNS) == {"run_id", "model", "routing", "family", "checkpoint", "metric", "value",
                                     "n_samples", "batch_size"}


def test_to_table_fills_nulls_and_stores_metadata():
    t = to_table(make_rows(), META)
    assert t.schema.equals(SCHEMA, check_metadata=False)
    assert json.loads(t.schema.metadata[METADATA_KEY]) == META
    loss = t.filter(pa.compute.equal(t["metric"], "loss")).to_pylist()[0]
    assert loss["block"] is None and loss["site"] is None and loss["token_values"] is None
    probe = [r for r in t.to_pylist() if r["metric"] == "probe_r2" and r["site"] == "z"][0]
    assert probe["noise_level"] is None and np.isnan(probe["value"])


def test_to_table_of_no_rows_is_an_empty_schema_table():
    t = to_table([], META)
    assert t.num_rows == 0 and t.schema.equals(SCHEMA, check_metadata=False)


def test_to_table_accepts_dataframe_with_float_ints_and_nan():
    df = pd.DataFrame(make_rows())  # block etc. become float64 with NaN here
    assert df["block"].dtype == np.float64
    t = to_table(df, META)
    assert t["block"].type == pa.int64()
    assert t["block"].null_count == (df["block"].isna()).sum()


@pytest.mark.parametrize(
    "change, column",
    [
        (lambda r: r.pop("model"), "model"),
        (lambda r: r.update(block=1.5), "block"),
        (lambda r: r.update(block="three"), "block"),
        (lambda r: r.update(value="big"), "value"),
        (lambda r: r.update(metric=3), "metric"),
        (lambda r: r.update(n_samples=None), "n_samples"),
        (lambda r: r.update(colour="red"), "colour"),
        (lambda r: r.update(step=True), "step"),
    ],
)
def test_to_table_errors_name_the_column(change, column):
    rows = make_rows()
    for r in rows:
        change(r)
    with pytest.raises(ValueError, match=column):
        to_table(rows, META)


# ============================================================================ parts


def test_write_part_round_trip_keeps_values_dtypes_metadata(tmp_path):
    rows = make_rows()
    path = write_part(tmp_path, "part-a", to_table(rows, META))
    assert path == tmp_path / "part-a.parquet"
    assert sorted(os.listdir(tmp_path)) == ["part-a.parquet"]  # no temp file left behind
    df = read_profile(path)
    assert df.attrs["dardiag"] == META
    assert len(df) == len(rows)
    assert str(df["block"].dtype) == "Int64" and str(df["step"].dtype) == "Int64"
    assert df["value"].dtype == np.float64 and df["noise_level"].dtype == np.float64
    act = df[df["metric"] == "act_rms"].sort_values(["noise_level", "block"])
    np.testing.assert_allclose(act["value"], [1.5**k for k in range(3)] * 2)
    assert act["block"].tolist() == [0, 1, 2, 0, 1, 2]
    tok = df.loc[df["metric"] == "token_act_rms", "token_values"].iloc[0]
    np.testing.assert_array_equal(tok, np.arange(4, dtype=np.float32) / 4)
    assert df["other_block"].isna().sum() == len(df) - 6
    # a read table converts back to the same schema
    assert to_table(df, META).schema.equals(SCHEMA, check_metadata=False)


def test_write_part_never_overwrites_unless_asked(tmp_path):
    t = to_table(make_rows(), META)
    write_part(tmp_path, "part-a", t)
    with pytest.raises(DardiagError, match="already exists"):
        write_part(tmp_path, "part-a", t)
    t2 = to_table(make_rows(step=5), META)
    write_part(tmp_path, "part-a", t2, overwrite=True)
    assert set(read_profile(tmp_path / "part-a.parquet")["step"]) == {5}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_write_part_rejects_bad_names_and_tables(tmp_path):
    t = to_table(make_rows(), META)
    for bad in ("../x", ".hidden", "_meta", "a/b"):
        with pytest.raises(ValueError):
            write_part(tmp_path, bad, t)
    with pytest.raises(ValueError, match="SCHEMA"):
        write_part(tmp_path, "x", pa.table({"a": [1]}))


# ============================================================================ run directories


def test_run_dir_lifecycle_and_pandas_reads_it(tmp_path):
    out = tmp_path / "run"
    run = RunDir.create(out, META)
    assert run.status == "running" and run.completed == frozenset()
    run.mark_done("ckpt-1000", to_table(make_rows(step=1000), META))
    run.mark_done("ckpt-2000", make_rows(step=2000))  # rows are converted with the run's metadata
    (run.figures_dir).mkdir()
    (run.figures_dir / "fig.png").write_bytes(b"\x89PNG not parquet")
    run.finish()
    state = json.loads((out / RUN_FILE).read_text())
    assert state["status"] == "complete" and state["completed"] == ["ckpt-1000", "ckpt-2000"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [RUN_FILE, FIGURES_DIRNAME, "part-ckpt-1000.parquet", "part-ckpt-2000.parquet"]
    )
    n = len(make_rows())
    plain = pd.read_parquet(out)  # pyarrow skips "_" and "." names
    assert len(plain) == 2 * n
    df = read_profile(out)
    assert len(df) == 2 * n and set(df["step"]) == {1000, 2000}
    assert df.attrs["dardiag"] == META and df.attrs["dardiag_status"] == "complete"
    with pytest.raises(DardiagError, match="already completed"):
        run.mark_done("ckpt-1000", make_rows())


def test_same_config_continues_and_another_config_needs_force(tmp_path):
    RunDir.create(tmp_path, META).mark_done("u1", make_rows())
    again = RunDir.create(tmp_path, META)  # the same command again: continue, never start over
    assert again.completed == {"u1"} and again.resumed_from == 1
    other = {**META, "config": {**META["config"], "batch_size": 8}}
    with pytest.raises(DardiagError, match=r"will not overwrite .*config\.batch_size: stored 4, now 8.*--force"):
        RunDir.create(tmp_path, other)
    with pytest.raises(DardiagError, match="not both"):
        RunDir.create(tmp_path, META, force=True, resume=True)
    assert RunDir.create(tmp_path, META).completed == {"u1"}


def test_force_keeps_the_replaced_run_until_the_new_one_completes(tmp_path):
    old = RunDir.create(tmp_path, META)
    old.mark_done("u1", make_rows(step=1))
    old.finish()
    other = {**META, "config": {**META["config"], "batch_size": 8}}
    new = RunDir.create(tmp_path, other, force=True)
    assert new.completed == frozenset()
    assert (tmp_path / "_replaced" / RUN_FILE).exists()  # hidden from pandas, not lost
    new.mark_done("u2", make_rows(step=2))
    new.abandon()  # the new run failed: the old one is back as it was
    assert not (tmp_path / "_replaced").exists()
    assert read_profile(tmp_path)["step"].tolist() == [1] * len(make_rows())
    assert RunDir.create(tmp_path, META).completed == {"u1"}

    # interrupted for good (no abandon): a second --force keeps the older complete run aside
    RunDir.create(tmp_path, other, force=True).mark_done("u2", make_rows(step=2))
    third = RunDir.create(tmp_path, {**META, "config": {**META["config"], "seed": 9}}, force=True)
    assert sorted(p.name for p in (tmp_path / "_replaced").iterdir()) == [RUN_FILE, "part-u1.parquet"]
    third.mark_done("u3", make_rows(step=3))
    third.finish()
    assert not (tmp_path / "_replaced").exists()
    assert set(read_profile(tmp_path)["step"]) == {3}


def test_resume_returns_completed_units_and_checks_config(tmp_path):
    run = RunDir.create(tmp_path, META)
    run.mark_done("u1", make_rows())
    run.mark_done("u2", make_rows(step=2))
    # a crash after writing u3's shard but before recording it leaves an orphan shard and a temp file
    write_part(tmp_path, "part-u3", to_table(make_rows(step=3), META))
    (tmp_path / ".part-u4.parquet.abc.tmp").write_bytes(b"half")
    resumed = RunDir.create(tmp_path, META, resume=True)
    assert resumed.completed == {"u1", "u2"}
    assert not (tmp_path / "part-u3.parquet").exists()  # recomputed, not duplicated
    assert not (tmp_path / ".part-u4.parquet.abc.tmp").exists()
    resumed.mark_done("u3", make_rows(step=3))
    resumed.finish()
    assert sorted(read_profile(tmp_path)["step"].unique()) == [2, 3, 1000]

    other = {**META, "config": {**META["config"], "batch_size": 8}}
    with pytest.raises(DardiagError, match=r"config\.batch_size: stored 4, now 8"):
        RunDir.create(tmp_path, other, resume=True)


def test_resume_on_a_new_directory_starts_fresh(tmp_path):
    run = RunDir.create(tmp_path / "new", META, resume=True)
    assert run.completed == frozenset() and (tmp_path / "new" / RUN_FILE).exists()


def test_force_removes_only_dardiag_files(tmp_path):
    run = RunDir.create(tmp_path, META)
    run.mark_done("u1", make_rows())
    run.figures_dir.mkdir()
    (run.figures_dir / "a.pdf").write_bytes(b"%PDF")
    (tmp_path / "_work").mkdir()
    (tmp_path / "_work" / "probe-u1.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    fresh = RunDir.create(tmp_path, META, force=True)
    assert fresh.completed == frozenset()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_replaced", RUN_FILE, "notes.txt"]
    fresh.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_FILE, "notes.txt"]


def test_a_finished_run_keeps_its_table_and_figures_and_drops_its_scratch(tmp_path):
    run = RunDir.create(tmp_path, META)
    run.mark_done("u1", make_rows())
    (tmp_path / "_work").mkdir()
    (tmp_path / "_work" / "probe-u1.pt").write_bytes(b"x" * 1000)  # per-level probe features, generated inputs
    run.figures_dir.mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    run.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_figures", RUN_FILE, "notes.txt", "part-u1.parquet"]


def test_force_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    for kw in ({}, {"force": True}, {"resume": True}):
        with pytest.raises(DardiagError, match="not a dardiag run"):
            RunDir.create(tmp_path, META, **kw)
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    (tmp_path / "f").write_text("x")
    with pytest.raises(DardiagError, match="not a directory"):
        RunDir.create(tmp_path / "f", META)


def test_mark_done_rejects_unsafe_unit_names(tmp_path):
    run = RunDir.create(tmp_path, META)
    with pytest.raises(ValueError, match="unit name"):
        run.mark_done("../escape", make_rows())


# ============================================================================ read_profile errors


def test_read_profile_errors_are_one_line(tmp_path):
    cases = [tmp_path / "missing"]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append(empty)
    norows = tmp_path / "norows"
    RunDir.create(norows, META)
    cases.append(norows)
    txt = tmp_path / "a.csv"
    txt.write_text("x")
    cases.append(txt)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1]}), foreign)
    cases.append(foreign)
    for path in cases:
        with pytest.raises(DardiagError) as e:
            read_profile(path)
        assert "\n" not in str(e.value), path
    with pytest.raises(DardiagError, match="holds no rows"):
        read_profile(norows)


def test_read_profile_falls_back_to_schema_metadata(tmp_path):
    write_part(tmp_path, "part-x", to_table(make_rows(), META))  # parts without _run.json
    df = read_profile(tmp_path)
    assert df.attrs["dardiag"] == META and "dardiag_status" not in df.attrs


def test_store_does_not_import_torch():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, dardiag.store; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
