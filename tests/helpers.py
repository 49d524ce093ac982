"""Small builders and references several test modules share (no fixtures: those live in conftest)."""

from __future__ import annotations

import errno

import torch

from dardiag.models import DiT, DiTConfig


def randomised_dit(cfg: dict, seed: int, scale: float = 0.1) -> DiT:
    """A DiT whose every trainable parameter got ``scale`` x N(0, 1) added: no zero-initialised branch,
    so every path carries signal and gradient, as in a trained network."""
    torch.manual_seed(seed)
    model = DiT(DiTConfig(**cfg))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def brute_hsic1(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """diagnostics.md section 4 verbatim, on explicit Grams with zeroed diagonals."""
    n = K.shape[0]
    K, L = K.clone(), L.clone()
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    KL = K @ L
    return (torch.trace(KL) + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * KL.sum()) / (n * (n - 3))


def gated_cli(target: str) -> str:
    """Python source that runs the dardiag CLI on ``sys.argv[1:]``, holding still in the HOLD-th call of
    ``target`` ("module:attribute.path") until the file GATE exists, after writing its pid to READY
    (READY + RANK under torchrun): a signal sent then lands in the middle of that call's work. Under
    torchrun HOLD may give one count per rank ("5,4": the ranks' shares of a level can differ)."""
    module, _, path = target.partition(":")
    *owner, name = path.split(".")
    return ("import importlib, os, sys, time\n"
            f"owner = importlib.import_module({module!r})\n"
            f"for part in {owner!r}:\n"
            "    owner = getattr(owner, part)\n"
            f"real, calls = getattr(owner, {name!r}), []\n"
            "def gated(*a, **k):\n"
            "    calls.append(1)\n"
            "    holds = os.environ['HOLD'].split(',')\n"
            "    if len(calls) == int(holds[min(int(os.environ.get('RANK', 0)), len(holds) - 1)]):\n"
            "        ready = os.environ['READY'] + os.environ.get('RANK', '')\n"
            "        with open(ready + '.tmp', 'w') as f:\n"
            "            f.write(str(os.getpid()))\n"
            "        os.replace(ready + '.tmp', ready)\n"
            "        while not os.path.exists(os.environ['GATE']):\n"
            "            time.sleep(0.02)\n"
            "    return real(*a, **k)\n"
            f"setattr(owner, {name!r}, gated)\n"
            "from dardiag.cli.app import app\n"
            "app(sys.argv[1:])\n")


class Filling:
    """A file object on a disk that fills up after ``room`` bytes: the write that crosses it raises
    ENOSPC, as a real full disk does (torch.save's zip writer then raises ``RuntimeError: ... unexpected
    pos``, with the ENOSPC only as its context)."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def full_disk(monkeypatch, pattern: str, room: int = 100) -> list[str]:
    """From now on, every atomic write (``dardiag.atomic``: a hidden temp file beside the target) whose
    target's name matches ``pattern`` (fnmatch) meets a full disk after ``room`` bytes. -> the names hit."""
    import fnmatch
    import os

    if not os.path.isdir("/proc/self/fd"):
        import pytest

        pytest.skip("needs /proc/self/fd to tell which file a descriptor is")
    real, hit = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)
        temp = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))  # ".{name}.<random>.tmp"
        target = temp[1:].rsplit(".", 2)[0] if temp.startswith(".") and temp.endswith(".tmp") else None
        if target is not None and fnmatch.fnmatch(target, pattern):
            hit.append(target)
            return Filling(f, room)
        return f

    monkeypatch.setattr(os, "fdopen", fdopen)
    return hit


def cli(*args, cwd=None) -> "subprocess.CompletedProcess":
    """``dardiag ARGS`` in this process, in ``cwd`` if given, as a finished process: its exit status and
    what it printed. A new Python per command costs seconds of imports; keep real processes for what
    needs one (signals from outside, a second process, SIGKILL, torchrun)."""
    import contextlib
    import io
    import os
    import subprocess

    from dardiag.cli.app import app

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            app([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """-> (exit code, stdout, stderr) of ``dardiag ARGS`` in this process (pytest's ``capsys``); any
    exception but SystemExit is a traceback, and fails the test."""
    from dardiag.cli.app import app

    capsys.readouterr()
    try:
        app([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err
