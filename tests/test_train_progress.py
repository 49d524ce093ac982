"""What ``dardiag train`` tells whoever watches it: an opening line (what was loaded, the data, the device,
what happens to OUT), the loss with time per step and an ETA, each ``--profile-every`` profile said before
and after, and a fine-tune's starting model profiled as step 0 (its "before")."""

from __future__ import annotations

import re

import pytest

import dardiag
import dardiag.engine.progress as progress
from dardiag.engine.progress import Pace
import helpers

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--depth", "2", "--hidden", "16", "--heads", "2", "--patch", "4", "--batch-size", "8"]
PROFILE = ["--profile-every", "2", "--profile-samples", "4", "--profile-batch-size", "4",
           "--profile-noise-levels", "0.5", "--no-profile-cka"]


def cli(*args) -> tuple[int, str, str]:
    r = helpers.cli(*args)
    return r.returncode, r.stdout, r.stderr


def test_the_opening_line_and_the_pace(tmp_path):
    out = tmp_path / "run"
    code, text, err = cli("train", "--out", out, "--steps", "4", *TINY)
    assert code == 0, err
    first, opening = text.splitlines()[:2]
    assert first.startswith(f"OUT: {out}  (device ")
    assert re.fullmatch(r"training a new model: residual DiT, depth 2, width 16, 2 heads, patch 4 "
                        r"\([\d,]+ parameters\), sit objective; data digits \(train split\): 1437 images 1x16x16, "
                        r"10 classes; on cpu; fresh run, to step 4 \(batch 8, lr 0\.001\)", opening), opening
    lines = err.strip().splitlines()
    assert [int(re.match(r"step +(\d+)/4", line).group(1)) for line in lines] == [1, 2, 3, 4]
    assert all(re.search(r"loss \d\.\d{4}  [\d.e-]+ s/step", line) for line in lines), lines
    assert all("ETA " in line for line in lines[:-1]) and "ETA" not in lines[-1]  # nothing left at the end

    code, text, _ = cli("train", "--out", out, "--steps", "6", *TINY)  # a longer run continues it
    assert code == 0 and "continuing from step 4, to step 6" in text.splitlines()[1]


def test_periodic_profiles_are_said_and_a_fine_tune_starts_with_step_0(tmp_path):
    base = tmp_path / "base"
    assert cli("train", "--out", base, "--steps", "2", *TINY, *PROFILE)[0] == 0
    assert sorted(dardiag.read_profile(base / "profile").step.unique()) == [2]  # a new model: no step 0

    out = tmp_path / "tune"
    code, text, err = cli("train", "--out", out, "--init", base / "last.pt", "--steps", "2", "--batch-size",
                          "8", *PROFILE)
    assert code == 0, err
    assert text.splitlines()[1].startswith(f"fine-tuning {base / 'last.pt'}: residual DiT, depth 2")
    said = [line for line in err.splitlines() if "profil" in line]
    assert said[0] == f"step       0: profiling the EMA model (4 images x 1 noise levels) into {out / 'profile'}"
    assert re.fullmatch(r"step       0: profiled in \d+ s", said[1])
    assert [line.split(":")[0] for line in said] == ["step       0"] * 2 + ["step       2"] * 2
    assert sorted(dardiag.read_profile(out / "profile").step.unique()) == [0, 2]


def test_the_eta_leaves_out_the_time_of_other_work(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    pace = Pace(total=10, done=2)  # a continued run: 2 steps took no time here
    assert pace.seconds_left() is None and pace.eta("step") == "ETA after the first step"
    clock[0] += 3.0
    pace.step()  # 3 s
    clock[0] += 1.0 + 60.0  # a 1 s step, then a 60 s profile
    pace.step()
    pace.exclude(60.0)
    assert pace.per_step() == pytest.approx(2.0) and pace.seconds_left() == pytest.approx(12.0)
    clock[0] += 5.0  # a long step under way: the ETA counts down
    assert pace.seconds_left() == pytest.approx(7.0) and pace.eta() == "ETA 0:00:07"
