"""Shared, generic fixtures. Module-specific helpers live in the test module that uses them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest


FIXTURES = Path(__file__).resolve().parent / "data"


def _fixtures_path() -> Path:
    env = os.environ.get("DARDIAG_FIXTURES")
    return Path(env) if env else FIXTURES


def _need(path: Path) -> Path:
    """A fixture file that must be there: a bare clone carries tests/data, so a missing file is a failure
    (a broken checkout or a wrong DARDIAG_FIXTURES), never a quiet skip."""
    if not path.is_file():
        pytest.fail(f"fixture {path} is missing; it ships in tests/data (set DARDIAG_FIXTURES only to use another copy)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The fixture folder: tests/data in the repository (env DARDIAG_FIXTURES overrides)."""
    path = _fixtures_path()
    if not path.is_dir():
        pytest.fail(f"fixture folder {path} not found; it ships in tests/data")
    return path


@pytest.fixture(scope="session")
def official_ckpt(fixtures_dir) -> Path:
    """A bare DiT state dict written by the official code (tests/data/README.md: depth 6, width 128, 4 heads)."""
    return _need(fixtures_dir / "dit_tiny_official.pt")


@pytest.fixture(scope="session")
def official_reference(fixtures_dir) -> dict:
    """Inputs ``x, t, y`` and the official model's ``out`` for the checkpoint above."""
    import torch

    return torch.load(_need(fixtures_dir / "dit_tiny_official_reference.pt"), map_location="cpu", weights_only=True)


@contextlib.contextmanager
def _one_torch_thread():
    """One torch thread, restored afterwards. Tiny models gain nothing from more, and on a shared,
    oversubscribed machine a second OpenMP thread can make a 10 ms step take seconds."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def single_thread():
    """One test on one torch thread (see _one_torch_thread)."""
    with _one_torch_thread():
        yield


@pytest.fixture(scope="module")
def one_thread():
    """A whole module on one torch thread: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with _one_torch_thread():
        yield
