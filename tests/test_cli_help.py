"""``--help`` says what was written: no markup eaten, no value shown for a flag that takes none, and
every command's description whole in the command list; a mistyped flag or value is one line too."""

from __future__ import annotations

import re

import pytest

from dardiag.cli.app import _COMMANDS, app


def help_of(capsys, monkeypatch, *args: str, width: int = 250) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    capsys.readouterr()
    try:
        app([*args, "--help"])
    except SystemExit as e:
        assert e.code == 0
    return capsys.readouterr().out


COMMANDS = [c.replace("_", "-") for c in _COMMANDS]


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_show_no_value_type(capsys, monkeypatch, command):
    text = help_of(capsys, monkeypatch, command)
    assert "--help" in text and "<bool>" not in text


def test_square_brackets_survive(capsys, monkeypatch):
    assert "needs dardiag[lora]" in help_of(capsys, monkeypatch, "train")


def test_every_command_description_is_one_unbroken_line(capsys, monkeypatch):
    text = help_of(capsys, monkeypatch)
    panel = text[text.index("Commands"):]
    rows = [line for line in panel.splitlines()[1:] if line.startswith("│")]
    names = [re.match(r"│ (\S+)", row).group(1) for row in rows]
    assert sorted(names) == sorted(set(names)) and set(COMMANDS) <= set(names), rows  # one row each: no wraps
    assert all(row.rstrip(" │").endswith(".") for row in rows), rows


@pytest.mark.parametrize("args,needle", [
    (["train", "--steps", "x"], "Invalid value for '--steps'"),
    (["profile", "x.pt", "--bogus"], "No such option: --bogus"),
    (["trian"], "No such command 'trian'"),
    (["cache-plan", "run"], "Missing option '--tolerance'"),
])
def test_usage_errors_are_one_line(capsys, args, needle):
    with pytest.raises(SystemExit) as e:
        app(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert "--help)" in err[0]
