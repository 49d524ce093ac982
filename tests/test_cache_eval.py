"""``dardiag cache-eval`` (dardiag/cache_eval.py) on tiny pipelines: a method that skips nothing reproduces the
uncached latents exactly, the block counts equal an independent count, a class without diffusers' cache
hooks gets one note per method, and the summary marks the Pareto front."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from dardiag.adapters.open import open_subject  # noqa: E402
from dardiag.savings.evaluate import Setting, evaluate, parse_settings, run_cache_eval, summarise  # noqa: E402
from dardiag.errors import DardiagError  # noqa: E402
from dardiag.pipelines.options import PipelineOptions, attach_pipelines  # noqa: E402
from pipeline_fixtures import CALLS, PROMPTS, SIZES, build_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    folder = build_pipeline("wan", tmp_path_factory.mktemp("ce"))
    subject = open_subject(str(folder))
    attach_pipelines([subject], PipelineOptions(prompts=tuple(PROMPTS), call=CALLS["wan"], **SIZES["wan"]), needed=True,
                     seed=0, steps=4, guidance=None, device="cpu", dtype=torch.float32)
    return folder, subject


def test_skipping_nothing_reproduces_the_uncached_call_and_counts_are_independent(wan):
    _, subject = wan
    ffn = []  # an independent count: every block's feed-forward, by its own hook
    handles = [b.ffn.register_forward_hook(lambda *a: ffn.append(1)) for b in subject.model.blocks]
    calls = []
    handles.append(subject.model.register_forward_pre_hook(lambda *a: calls.append(1)))
    try:
        rows = evaluate(subject, [Setting("firstblock", 0.0), Setting("firstblock", 10.0)], samples=2, steps=4)
    finally:
        for h in handles:
            h.remove()
    zero = rows[(rows.method == "firstblock") & (rows.setting == 0.0)]
    assert zero.identical.all() and (zero.rel_error == 0).all()
    D = len(subject.model.blocks)
    uncached = rows[rows.method == "uncached"]
    assert (uncached.blocks == D * 4 * 2).all()  # 4 steps x 2 guidance passes, every block computed
    assert rows.blocks.sum() == len(ffn) and len(calls) == 3 * 2 * 4 * 2  # 3 calls per sample
    big = rows[(rows.method == "firstblock") & (rows.setting == 10.0)]
    assert (big.blocks < big.blocks_uncached).all() and (big.rel_error > 0).all()  # it skips, and it costs
    s = summarise(rows)
    assert s.pareto.any() and set(s.method) == {"firstblock"}
    assert s[s.setting == 10.0].speedup_blocks.iloc[0] > 1


def test_a_class_without_cache_hooks_is_one_note_per_method(tmp_path):
    folder = build_pipeline("pixart", tmp_path)
    summary, notes = run_cache_eval(folder, tmp_path / "out", options=PipelineOptions(prompts=tuple(PROMPTS[:2]),
                                                                                      call=CALLS["pixart"]),
                                    methods=["firstblock", "pab"], samples=2, steps=2, device="cpu")
    assert summary.empty and len(notes) == 2 and all("has no enable_cache" in n for n in notes)
    rows = pd.read_parquet(tmp_path / "out" / "cache_eval.parquet")
    assert set(rows.method) == {"uncached"}
    with pytest.raises(DardiagError, match="already exists"):
        run_cache_eval(folder, tmp_path / "out", methods=["firstblock"], samples=2)


def test_settings_are_parsed_strictly():
    assert [s.value for s in parse_settings(["firstblock"], ["firstblock=0.1,0.3"])] == [0.1, 0.3]
    for bad in (["nocache=1"], ["firstblock=a"], ["firstblock"], ["firstblock=-1"]):
        with pytest.raises(DardiagError):
            parse_settings(["firstblock"], bad)
    with pytest.raises(DardiagError, match="unknown method"):
        parse_settings(["teacache"], None)


def test_cache_dit_is_one_more_method(wan):
    pytest.importorskip("cache_dit")
    _, subject = wan
    rows = evaluate(subject, [Setting("cache-dit", 0.0), Setting("cache-dit", 10.0)], samples=2, steps=4)
    zero, big = rows[rows.setting == 0.0], rows[rows.setting == 10.0]
    assert zero.identical.all() and (big.blocks < big.blocks_uncached).all()


def test_the_command_prints_its_table_and_writes_its_files(wan, tmp_path, capsys):
    """`dardiag cache-eval` end to end: the summary table, the parquet, summary.csv and the figure."""
    from helpers import run_cli

    folder, _ = wan
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    calls = [a for k, v in CALLS["wan"].items() for a in ("--call", f"{k}={v}")]
    sizes = [a for k, v in SIZES["wan"].items() for a in (f"--{k.replace('_', '-')}", str(v))]
    code, out, err = run_cli(capsys, "cache-eval", folder, "--out", tmp_path / "ce", "--prompts", prompts,
                             "--methods", "firstblock", "--settings", "firstblock=0,10", "--steps", "3",
                             "--device", "cpu", *calls, *sizes)
    assert code == 0, err
    assert "Caching methods on this pipeline" in out and "firstblock" in out
    for name in ("cache_eval.parquet", "summary.csv", "cache_eval.png"):
        assert (tmp_path / "ce" / name).is_file(), name


def test_a_hook_that_runs_fail_open_is_a_note_not_a_perfect_method(tmp_path):
    """SeaCache needs step metadata that FluxPipeline's loop does not pass: diffusers then computes every block
    ("fail-open"); that must not read as a method with no error and no speed-up."""
    folder = build_pipeline("flux", tmp_path)
    subject = open_subject(str(folder))
    attach_pipelines([subject], PipelineOptions(prompts=tuple(PROMPTS[:1]), call=CALLS["flux"], **SIZES["flux"]),
                     needed=True, seed=0, steps=3, guidance=None, device="cpu", dtype=torch.float32)
    notes = []
    rows = evaluate(subject, [Setting("seacache", 0.5), Setting("firstblock", 0.0)], samples=1, steps=3, notes=notes)
    assert set(rows.method) == {"uncached", "firstblock"}
    assert len(notes) == 1 and notes[0].startswith("seacache: diffusers ran it in fail-open mode"), notes
