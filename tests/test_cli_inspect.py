"""``dardiag inspect`` end to end through the CLI entry point: exit codes, JSON, one-line errors."""

from __future__ import annotations

import json
import subprocess

from helpers import cli as dardiag


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_inspect_json(official_ckpt):
    proc = dardiag("inspect", official_ckpt, "--family", "dit", "--num-heads", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["depth"] == 6 and info["num_heads"] == 4 and info["hidden_size"] == 128
    assert info["family"] == "dit" and info["routing"] == "residual"
    assert info["file_format"] == "state_dict" and info["learn_sigma"] is True
    assert info["latent_size"] == 16 and info["num_classes"] == 10
    assert info["sources"]["num_heads"] == "--num-heads"
    assert len(info["sha256"]) == 64 and info["parameters"] > 0


def test_inspect_table(official_ckpt):
    proc = dardiag("inspect", official_ckpt, "--family", "dit", "--num-heads", "4")
    assert proc.returncode == 0, proc.stderr
    assert "num_heads" in proc.stdout and "residual" in proc.stdout


def test_inspect_without_num_heads_is_one_line_error(official_ckpt):
    proc = dardiag("inspect", official_ckpt, "--family", "dit")
    assert_one_line_error(proc, "--num-heads")

