"""A cache schedule file is read strictly (whole numbers, a positive depth and step count, JSON text) and
applied only to the weights it was planned on; ``cache-plan`` writes valid JSON and checks --out first."""

from __future__ import annotations

import json

import pytest

from dardiag.savings.plan import plan_schedule
from dardiag.savings.schedule import CacheSchedule
from dardiag.errors import DardiagError

GOOD = {"format": "dardiag-cache-schedule", "depth": 2, "steps": 4, "cells": [[1, 1], [2, 3]], "meta": {}}


def load(tmp_path, content) -> CacheSchedule:
    path = tmp_path / "s.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return CacheSchedule.load(path)


def test_a_good_file_round_trips(tmp_path):
    s = load(tmp_path, GOOD)
    assert s.cells == frozenset({(1, 1), (2, 3)}) and (s.depth, s.steps) == (2, 4)
    s.save(tmp_path / "again.json")
    assert CacheSchedule.load(tmp_path / "again.json") == s


@pytest.mark.parametrize("change,needle", [
    ({"cells": [[3.5, 1]]}, "pairs of whole numbers"),
    ({"cells": [[1, True]]}, "pairs of whole numbers"),
    ({"cells": [["1", 1]]}, "pairs of whole numbers"),
    ({"cells": [[1, 1, 1]]}, "pairs of whole numbers"),
    ({"cells": [1]}, "pairs of whole numbers"),
    ({"steps": -5}, "steps must be a whole number >= 1, got -5"),
    ({"steps": 0}, "steps must be a whole number >= 1"),
    ({"depth": 2.5}, "depth must be a whole number >= 1"),
    ({"depth": None}, "depth must be a whole number >= 1"),
    ({"cells": [[3, 1]]}, "outside blocks 1..2 and steps 1..3"),
    ({"meta": [1]}, "meta"),
    ({"format": "other"}, "not a dardiag cache schedule"),
])
def test_a_bad_file_is_one_line_that_names_what_is_wrong(tmp_path, change, needle):
    with pytest.raises(DardiagError, match=needle.replace(".", r"\.")) as e:
        load(tmp_path, {**GOOD, **change})
    assert "1..-" not in str(e.value)  # never "steps 1..-6"


@pytest.mark.parametrize("content", [bytes(range(256)), b"\xff\xfe\x00junk", b"{not json", b""])
def test_binary_or_broken_text_is_not_a_schedule(tmp_path, content):
    with pytest.raises(DardiagError, match="is not a cache schedule .not JSON"):
        load(tmp_path, content)


def test_a_schedule_refuses_other_weights(tmp_path):
    s = load(tmp_path, {**GOOD, "meta": {"model": "tiny", "checkpoint": "tiny.pt", "sha256": "a" * 64}})
    s.check_weights("a" * 64, "tiny.pt")  # its own weights
    with pytest.raises(DardiagError, match="planned for tiny .tiny.pt.; other.pt holds other weights"):
        s.check_weights("b" * 64, "other.pt")
    load(tmp_path, GOOD).check_weights("b" * 64, "other.pt")  # an older schedule says nothing: depth decides


@pytest.mark.parametrize("tolerance", [float("inf"), float("nan"), -0.1])
def test_cache_plan_tolerance_must_be_finite(tolerance):
    import pandas as pd

    with pytest.raises(DardiagError, match="finite number >= 0"):
        plan_schedule(pd.DataFrame(), tolerance)
