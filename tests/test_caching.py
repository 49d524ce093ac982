"""The cached sampler and cache-plan: TAU = 0 reproduces the uncached samples exactly; a reused cell
really reuses (it equals an explicit sampler that feeds the block's earlier contribution); the schedule
follows the run's cache_error rows; the CLI plans, applies and reports."""

from __future__ import annotations

import json

import pytest
import torch

import dardiag
from dardiag.savings.plan import evaluate_schedule, plan_schedule
from dardiag.savings.schedule import CachedForward, CacheSchedule
from dardiag.cli.app import app
from dardiag.engine.config import Analyses
from dardiag.errors import DardiagError
from test_ablation_trajectory import _states_and_parts, _subject

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trajectory run of a tiny residual SiT saved as a checkpoint (cache-plan reopens it)."""
    from dardiag.checkpoints import save_checkpoint

    d = tmp_path_factory.mktemp("cache")
    s = _subject()
    ckpt = d / "tiny.pt"
    save_checkpoint(ckpt, s.model, family="sit")
    df = dardiag.profile([str(ckpt)], out=d / "run", noise_levels=[0.5], samples=4, batch_size=4,
                         analyses=Analyses(cka=False, probe=False, trajectory=True), trajectory_steps=5)
    return d, df


def test_tolerance_zero_reproduces_the_uncached_sampler_exactly(run):
    _, df = run
    schedule = plan_schedule(df, 0.0)
    assert schedule.cells == frozenset() and schedule.saved_fraction == 0
    s = _subject()
    y = torch.arange(6) % 3
    plain = s.sample(y, schedule.steps, 1.0, 7)
    cached = s.sample(y, schedule.steps, 1.0, 7, forward=CachedForward(s, schedule))
    assert torch.equal(plain, cached)


def test_a_reused_cell_feeds_the_blocks_earlier_contribution():
    s = _subject()
    y = torch.arange(4) % 3
    steps = 4
    schedule = CacheSchedule(depth=3, steps=steps, cells=frozenset({(2, 2), (2, 3)}))
    fwd = CachedForward(s, schedule)
    got = s.sample(y, steps, 1.0, 1, forward=fwd)
    assert (fwd.computed, fwd.reused) == (3 * steps - 2, 2)
    assert schedule.saved_fraction == pytest.approx(2 / 12)
    # the same sampler written out: block 2 at steps 2 and 3 adds what it computed at step 1
    stored = {}

    def explicit(i, x, t, y_):
        reuse = (2, stored[2]) if i in (2, 3) else None
        out, _, parts = _states_and_parts(s.model, x, t, y_, reuse=reuse)
        if reuse is None:
            stored[2] = parts[2]
        return out

    want = s.sample(y, steps, 1.0, 1, forward=explicit)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, s.sample(y, steps, 1.0, 1), atol=1e-4)


def test_plan_follows_the_cache_error_rows(run):
    _, df = run
    ce = df[df["metric"] == "cache_error"]
    tau = float(ce["value"].median())
    schedule = plan_schedule(df, tau)
    want = {(int(b), int(i)) for b, i, v in zip(ce["block"], ce["sampler_step"], ce["value"]) if v < tau}
    assert schedule.cells == want and 0 < len(want) < len(ce)
    assert schedule.steps == 5 and schedule.depth == 3
    assert CacheSchedule.from_dict(json.loads(json.dumps(schedule.to_dict()))) == schedule
    with pytest.raises(DardiagError, match="--tolerance"):
        plan_schedule(df, -1.0)


def test_evaluate_reports_the_measured_effect(run):
    _, df = run
    s = _subject()
    everything = plan_schedule(df, 10.0)  # every cell: the largest effect
    r = evaluate_schedule(s, everything, samples=4)
    assert r["saved_fraction"] == pytest.approx(12 / 15) and r["evaluations_saved"] == pytest.approx(12 / 15)
    assert r["rel_error"] > 0 and r["rel_error_se"] > 0 and not r["identical"]
    assert evaluate_schedule(s, plan_schedule(df, 0.0), samples=4)["identical"]


def test_cli_cache_plan(run, capsys, tmp_path):
    d, df = run
    out = tmp_path / "plan.json"
    app(["cache-plan", str(d / "run"), "--tolerance", "1.0", "--samples", "4", "--out", str(out)])
    text = capsys.readouterr().out
    assert "saves" in text and "relative error" in text
    schedule = CacheSchedule.load(out)
    assert schedule.cells
    with pytest.raises(SystemExit) as e:  # never overwritten without --force
        app(["cache-plan", str(d / "run"), "--tolerance", "1.0", "--samples", "4", "--out", str(out)])
    assert e.value.code == 2
    grid = tmp_path / "grid.png"
    app(["sample", str(d / "tiny.pt"), "--out", str(grid), "--n-per-class", "2", "--steps", "5",
         "--cache-schedule", str(out)])
    assert grid.exists() and "reused" in capsys.readouterr().out
