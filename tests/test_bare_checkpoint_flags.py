"""A bare official checkpoint (tests/data/dit_tiny_official.pt: width 128, 4 heads, DiT) cannot say its
heads nor its family: every command says both at once, names flags it has, shows what the file does say
(``inspect``), and samples and fine-tunes once told (issue 32)."""

from __future__ import annotations

import json

import pytest

from dardiag.checkpoints import load_model
from dardiag.checkpoints.infer import MissingFlags
from helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_everything_missing_is_said_at_once(official_ckpt):
    with pytest.raises(MissingFlags) as err:
        load_model(official_ckpt)
    msg = str(err.value)
    assert "\n" not in msg and "cannot say 2 things" in msg
    assert "--num-heads N" in msg and "hidden size 128" in msg and "--family dit or --family sit" in msg
    assert set(err.value.missing) == {"--num-heads N", "--family dit or --family sit"}
    with pytest.raises(MissingFlags, match="cannot say 1 thing dardiag needs; pass --family") as one:
        load_model(official_ckpt, num_heads=4)
    assert list(one.value.missing) == ["--family dit or --family sit"]


def test_inspect_shows_what_the_file_says_and_what_is_missing(official_ckpt, capsys):
    code, out, err = run_cli(capsys, "inspect", official_ckpt)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "--num-heads" in err
    for words in ("incomplete", "depth", "6", "hidden_size", "128", "input_size", "16", "pos_embed", "missing",
                  "--num-heads N", "--family dit or --family sit"):
        assert words in out, words
    code, out, _ = run_cli(capsys, "inspect", official_ckpt, "--family", "dit", "--json")
    facts = json.loads(out)
    assert code == 2 and list(facts["missing"]) == ["--num-heads N"]
    assert facts["known"]["depth"] == 6 and facts["known"]["family"] == "dit" and facts["known"]["num_classes"] == 10


@pytest.mark.parametrize("command", ["sample", "train"])
def test_the_flags_the_error_names_exist_in_every_command(official_ckpt, capsys, tmp_path, command):
    """sample and train --init say "pass --num-heads N; --family ...": both take those flags, and with them
    the official checkpoint samples and fine-tunes."""
    args = {"sample": ("sample", official_ckpt, "--out", tmp_path / "grid.png", "--n-per-class", "1", "--steps", "2",
                       "--device", "cpu"),
            "train": ("train", "--out", tmp_path / "run", "--init", official_ckpt, "--steps", "1", "--batch-size", "2",
                      "--save-every", "0", "--device", "cpu", "--threads", "1")}[command]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "--num-heads N" in err and "--family dit or --family sit" in err
    code, out, err = run_cli(capsys, *args, "--num-heads", "4", "--family", "dit")
    assert code == 0, err
    assert (tmp_path / "grid.png").is_file() if command == "sample" else (tmp_path / "run" / "last.pt").is_file()
