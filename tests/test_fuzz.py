"""Every command against bad input: missing, empty, binary, truncated and hostile files, odd numbers
(negative, zero, inf, nan, huge), flags that contradict the files. Each case must end in exit status 2
with exactly one stderr line starting with ``error:``, no traceback, and nothing written: the case's
OUT does not exist afterwards and no fixture file changed. In process (``dardiag.cli.app``), so the
whole fuzz costs seconds, not a Python start per case."""

from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

import dardiag
from dardiag.checkpoints import save_checkpoint
from dardiag.cli.app import app
from dardiag.engine.config import Analyses
from helpers import randomised_dit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=16, depth=2, num_heads=2, num_classes=10,
            learn_sigma=False)
TRAJECTORY_STEPS = 3


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The inputs every case draws from: good files to pair with bad flags, and bad files."""
    d = tmp_path_factory.mktemp("fuzz")
    ckpt = d / "tiny.pt"
    save_checkpoint(ckpt, randomised_dit(TINY, seed=0), family="sit")
    other = d / "other.pt"
    save_checkpoint(other, randomised_dit(TINY, seed=1), family="sit")
    nan = randomised_dit(TINY, seed=2)
    with torch.no_grad():
        nan.blocks[0].attn.qkv.weight[0, 0] = float("nan")
    save_checkpoint(d / "nan.pt", nan, family="sit")
    data = ckpt.read_bytes()
    (d / "cut.pt").write_bytes(data[: len(data) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "junk.pt").write_bytes(bytes(range(256)) * 8)
    (d / "notes.txt").write_text("not a checkpoint\n")
    (d / "folder").mkdir()
    g = torch.Generator().manual_seed(0)
    torch.save({"x0": torch.randn(8, 1, 8, 8, generator=g), "y": torch.arange(8) % 10}, d / "latents.pt")
    torch.save({"x0": torch.full((8, 1, 8, 8), float("nan"))}, d / "nan_latents.pt")
    dardiag.profile([str(ckpt)], out=d / "run", noise_levels=[0.5], samples=4, batch_size=4,
                    analyses=Analyses(cka=False, probe=False, trajectory=True), trajectory_steps=TRAJECTORY_STEPS)
    schedule = {"format": "dardiag-cache-schedule", "depth": 2, "steps": TRAJECTORY_STEPS, "cells": [[1, 1]],
                "meta": {"model": "tiny", "checkpoint": str(ckpt), "sha256": dardiag.checkpoints.sha256_file(ckpt)}}
    (d / "for_tiny.json").write_text(json.dumps(schedule))
    (d / "half_cell.json").write_text(json.dumps({**schedule, "cells": [[3.5, 1]]}))
    (d / "negative_steps.json").write_text(json.dumps({**schedule, "steps": -5}))
    (d / "prompts.txt").write_text("a photo of a cat\n")
    return {p.name: p for p in d.iterdir()} | {"dir": d}


def _case(*argv: str, id: str | None = None):
    return pytest.param(list(argv), id=id or " ".join(argv)[:70])


ODD_INTS = ["0", "-1", "-5"]
HUGE = "1000000000"
ODD_FLOATS = ["nan", "inf", "-inf", "-1"]
NOT_NUMBERS = ["abc", "1e999x"]

CASES = [
    # ---------------------------------------------------------------- inspect
    *[_case("inspect", f"{{{f}}}") for f in ("missing.pt", "empty.pt", "junk.pt", "cut.pt", "notes.txt", "folder")],
    _case("inspect", "{tiny.pt}", "--num-heads", "0"),
    # ---------------------------------------------------------------- profile
    *[_case("profile", f"{{{f}}}", "--out", "{out}") for f in ("missing.pt", "empty.pt", "junk.pt", "cut.pt",
                                                               "notes.txt", "folder", "run")],
    *[_case("profile", "{tiny.pt}", "--out", "{out}", flag, v) for flag in ("--samples", "--batch-size", "--levels",
                                                                              "--threads", "--cka-max-rows",
                                                                              "--num-heads", "--input-size")
      for v in ODD_INTS[:2]],
    _case("profile", "{tiny.pt}", "--out", "{out}", "--levels", "100000"),
    *[_case("profile", "{tiny.pt}", "--out", "{out}", "--noise-levels", v) for v in ("nan", "inf", "-0.5", "1.5",
                                                                                       "a,b", ",")],
    *[_case("profile", "{tiny.pt}", "--out", "{out}", "--timesteps", v) for v in ("nan", "-1", "1e30")],
    *[_case("profile", "{tiny.pt}", "--out", "{out}", "--inputs", "generated", "--generate-cfg", v)
      for v in ODD_FLOATS],
    _case("profile", "{tiny.pt}", "--out", "{out}", "--inputs", "generated", "--generate-steps", "0"),
    _case("profile", "{tiny.pt}", "--out", "{out}", "--trajectory", "--trajectory-steps", "1"),
    *[_case("profile", "{tiny.pt}", "--out", "{out}", *more, flag, HUGE) for flag, more in (
        ("--trajectory-steps", ["--trajectory"]), ("--generate-steps", ["--inputs", "generated"]), ("--samples", []))],
    *[_case("profile", "{tiny.pt}", "--out", "{out}", "--inputs", f"{{{f}}}") for f in ("missing.pt", "empty.pt",
                                                                                       "junk.pt", "notes.txt",
                                                                                       "nan_latents.pt")],
    _case("profile", "{tiny.pt}", "--out", "{out}", "--cond", "{junk.pt}"),
    *[_case("profile", "{tiny.pt}", "--out", "{out}", "--device", v) for v in ("cuda:99", "tpu", "cpu:1")],
    _case("profile", "{tiny.pt}", "--out", "{out}", "--dtype", "float8"),
    _case("profile", "{tiny.pt}", "--out", "{out}", "--family", "nope"),
    _case("profile", "{tiny.pt}", "--out", "{notes.txt}"),
    _case("profile", "{tiny.pt}", "--out", "{out}", "--cka-rows", "pixels"),
    # ---------------------------------------------------------------- demo
    *[_case("demo", "--out", "{out}", flag, v) for flag in ("--samples", "--levels", "--batch-size")
      for v in ODD_INTS[:2]],
    _case("demo", "--out", "{notes.txt}"),
    # ---------------------------------------------------------------- train
    *[_case("train", "--out", "{out}", flag, v) for flag in ("--steps", "--batch-size", "--log-every",
                                                            "--profile-samples", "--profile-batch-size", "--depth",
                                                            "--hidden", "--heads", "--patch", "--input-size",
                                                            "--chunk-size", "--threads") for v in ODD_INTS[1:]],
    *[_case("train", "--out", "{out}", flag, v) for flag in ("--lr", "--grad-clip", "--ema", "--class-dropout")
      for v in ODD_FLOATS],
    *[_case("train", "--out", "{out}", flag, "-1") for flag in ("--warmup", "--seed", "--save-every",
                                                                "--profile-every", "--lora")],
    _case("train", "--out", "{out}", "--lr", "1e300"),
    *[_case("train", "--out", "{out}", flag, HUGE) for flag in ("--batch-size", "--hidden", "--depth")],
    _case("train", "--out", "{out}", "--ema", "1"),
    _case("train", "--out", "{out}", "--hidden", "30"),
    *[_case("train", "--out", "{out}", "--profile-noise-levels", v) for v in ("nan", "2", "a")],
    *[_case("train", "--out", "{out}", "--data", f"{{{f}}}") for f in ("missing.pt", "empty.pt", "junk.pt",
                                                                      "notes.txt", "cut.pt")],
    *[_case("train", "--out", "{out}", "--init", f"{{{f}}}") for f in ("missing.pt", "junk.pt", "cut.pt", "nan.pt")],
    _case("train", "--out", "{out}", "--init", "{tiny.pt}", "--data", "{latents.pt}", "--lora", "100000"),
    *[_case("train", "--out", "{out}", flag, "nope") for flag in ("--routing", "--query", "--family", "--preset")],
    _case("train", "--out", "{out}", "--export", "{out}.safetensors"),
    _case("train", "--out", "{out}", "--export", "{tiny.pt}"),
    _case("train", "--out", "{out}", "--init", "{tiny.pt}", "--data", "{latents.pt}", "--export", "{tiny.pt}",
          "--force"),
    _case("train", "--out", "{run}", "--steps", "1"),
    _case("train", "--out", "{notes.txt}"),
    _case("train", "--out", "{out}", "--steps", "abc"),
    # ---------------------------------------------------------------- sample
    *[_case("sample", f"{{{f}}}", "--out", "{out}.png") for f in ("missing.pt", "empty.pt", "junk.pt", "cut.pt",
                                                                  "notes.txt", "folder", "nan.pt")],
    *[_case("sample", "{tiny.pt}", "--out", "{out}.png", flag, v) for flag in ("--n-per-class", "--steps")
      for v in ODD_INTS],
    *[_case("sample", "{tiny.pt}", "--out", "{out}.png", flag, v) for flag in ("--n-per-class", "--steps")
      for v in (HUGE, "100000000000000000000")],
    *[_case("sample", "{tiny.pt}", "--out", "{out}.png", "--cfg", v) for v in ODD_FLOATS],
    _case("sample", "{tiny.pt}", "--out", "{out}.xyz"),
    _case("sample", "{tiny.pt}", "--out", "{out}.png", "--family", "nope"),
    _case("sample", "{tiny.pt}", "--out", "{out}.png", "--score"),
    *[_case("sample", "{tiny.pt}", "--out", "{out}.png", "--steps", str(TRAJECTORY_STEPS), "--cache-schedule",
            f"{{{f}}}") for f in ("missing.pt", "empty.pt", "junk.pt", "notes.txt", "half_cell.json",
                                  "negative_steps.json")],
    _case("sample", "{other.pt}", "--out", "{out}.png", "--steps", str(TRAJECTORY_STEPS), "--cache-schedule",
          "{for_tiny.json}", id="sample another model with a schedule planned for tiny"),
    _case("sample", "{tiny.pt}", "--out", "{out}.png", "--steps", "7", "--cache-schedule", "{for_tiny.json}"),
    # ---------------------------------------------------------------- plot, compare
    *[_case("plot", f"{{{f}}}", "--out", "{out}") for f in ("missing.pt", "junk.pt", "notes.txt", "folder")],
    *[_case("compare", f"{{{f}}}", "{run}", "--out", "{out}") for f in ("missing.pt", "junk.pt", "folder")],
    _case("compare", "{run}", "{run}", "--out", "{out}", "--baseline", "nope"),
    # ---------------------------------------------------------------- latents
    _case("latents", "{missing.pt}", "--vae", "{folder}", "--out", "{out}.pt"),
    _case("latents", "{folder}", "--vae", "{missing.pt}", "--out", "{out}.pt"),
    _case("latents", "{folder}", "--vae", "{folder}", "--out", "{out}.safetensors"),
    _case("latents", "{folder}", "--vae", "{folder}", "--out", "{out}.npz"),
    *[_case("latents", "{folder}", "--vae", "{folder}", "--out", "{out}.pt", flag, v)
      for flag in ("--size", "--batch-size", "--samples") for v in ODD_INTS[:2]],
    _case("latents", "{folder}", "--vae", "{folder}", "--out", "{out}.pt", "--dtype", "float8"),
    _case("latents", "{folder}", "--vae", "{folder}", "--out", "{out}.pt", "--device", "cuda:99"),
    _case("latents", "{folder}", "--vae", "{folder}", "--out", "{tiny.pt}"),
    # ---------------------------------------------------------------- prompts
    _case("prompts", "{missing.pt}", "--pipeline", "{folder}", "--out", "{out}.pt"),
    _case("prompts", "{junk.pt}", "--pipeline", "{folder}", "--out", "{out}.pt"),
    _case("prompts", "{prompts.txt}", "--pipeline", "{folder}", "--out", "{out}.pt"),
    _case("prompts", "{prompts.txt}", "--pipeline", "{folder}", "--out", "{out}.safetensors"),
    _case("prompts", "{prompts.txt}", "--pipeline", "{folder}", "--out", "{out}.pt", "--dtype", "float8"),
    _case("prompts", "{prompts.txt}", "--pipeline", "{folder}", "--out", "{out}.pt", "--max-length", "0"),
    _case("prompts", "{prompts.txt}", "--pipeline", "{folder}", "--out", "{out}.pt", "--device", "cuda:99"),
    # ---------------------------------------------------------------- cache-plan
    *[_case("cache-plan", "{run}", "--tolerance", v, "--out", "{out}.json") for v in ODD_FLOATS],
    *[_case("cache-plan", f"{{{f}}}", "--tolerance", "0.1", "--out", "{out}.json") for f in ("missing.pt", "junk.pt",
                                                                                            "folder")],
    *[_case("cache-plan", "{run}", "--tolerance", "0.1", "--out", "{out}.json", "--samples", v) for v in ("1", "0",
                                                                                                        "10" + HUGE)],
    _case("cache-plan", "{run}", "--tolerance", "0.1", "--out", "{notes.txt}/s.json"),
    _case("cache-plan", "{run}", "--tolerance", "0.1", "--out", "{out}.json", "--threads", "0"),
    _case("cache-plan", "{run}", "--tolerance", "0.1", "--out", "{out}.json", "--model", "nope"),
    _case("cache-plan", "{run}", "--tolerance", "0.1", "--out", "{out}.json", "--checkpoint", "{junk.pt}"),
    _case("cache-plan", "{run}", "--tolerance", "0.1", "--out", "{out}.json", "--checkpoint", "{other.pt}"),
    # ---------------------------------------------------------------- generate, calibrate, cache-eval
    *[_case("generate", f"{{{f}}}", "--out", "{out}.pt") for f in ("missing.pt", "junk.pt", "folder", "tiny.pt")],
    _case("generate", "{folder}", "--out", "{out}.pt", "--prompts", "{junk.pt}"),
    *[_case("generate", "{tiny.pt}", "--out", "{out}.pt", flag, v) for flag, v in (
        ("--batch-size", "0"), ("--generate-steps", "0"), ("--height", "-1"), ("--dtype", "float8"),
        ("--device", "cuda:99"), ("--call", "nonsense"), ("--call", "prompt=x"), ("--generate-cfg", "nan"))],
    *[_case("calibrate", f"{{{f}}}", "--method", "magcache") for f in ("missing.pt", "junk.pt", "folder", "run")],
    *[_case("calibrate", "{run}", "--method", m) for m in ("nocache", "")],
    _case("calibrate", "{run}", "--method", "magcache", "--steps", "0"),
    _case("calibrate", "{run}", "--method", "firstblock", "--branch", "uncond"),
    *[_case("cache-eval", f"{{{f}}}", "--out", "{out}") for f in ("missing.pt", "junk.pt", "folder", "tiny.pt")],
    *[_case("cache-eval", "{tiny.pt}", "--out", "{out}", flag, v) for flag, v in (
        ("--methods", "nocache"), ("--settings", "firstblock=a"), ("--settings", "x"), ("--samples", "1"),
        ("--dtype", "float8"), ("--calibration", "{junk.pt}"))],
    _case("cache-eval", "{tiny.pt}", "--out", "{run}"),
    # ---------------------------------------------------------------- to-dar
    *[_case("to-dar", f"{{{f}}}", "{out}.pt") for f in ("missing.pt", "empty.pt", "junk.pt", "cut.pt", "notes.txt",
                                                        "folder", "nan.pt", "run")],
    _case("to-dar", "{tiny.pt}", "{out}.safetensors"),
    _case("to-dar", "{tiny.pt}", "{tiny.pt}", "--force"),
    _case("to-dar", "{tiny.pt}", "{other.pt}"),
    *[_case("to-dar", "{tiny.pt}", "{out}.pt", flag, v) for flag in ("--chunk-size", "--check-samples", "--num-heads",
                                                                      "--input-size") for v in ("-1",)],
    _case("to-dar", "{tiny.pt}", "{out}.pt", "--chunk-size", "3"),
    _case("to-dar", "{tiny.pt}", "{out}.pt", "--check-samples", HUGE),
    *[_case("to-dar", "{tiny.pt}", "{out}.pt", flag, "nope") for flag in ("--query", "--weights", "--family")],
]


def _fill(arg: str, files: dict, out: Path) -> str:
    names = {"out": str(out), "missing.pt": str(files["dir"] / "missing.pt"),
             **{k: str(v) for k, v in files.items()}}
    return re.sub(r"\{([^}]+)\}", lambda m: names[m.group(1)], arg)


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("argv", CASES)
def test_bad_input_is_one_line_and_writes_nothing(argv, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default OUT would land here
    out = tmp_path / "out"
    before = _snapshot(files["dir"])
    capsys.readouterr()
    with warnings.catch_warnings():  # as on a terminal: a warning is a line on stderr (pytest would keep it)
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: print(f"warning: {message}", file=sys.stderr)
        try:
            app([_fill(a, files, out) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code
    stdout, stderr = capsys.readouterr()
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stdout + stderr, stderr
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stderr)
    assert not any(tmp_path.iterdir()), sorted(p.name for p in tmp_path.iterdir())  # OUT and any default OUT
    assert _snapshot(files["dir"]) == before
