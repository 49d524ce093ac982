"""Shared, generic fixtures. Module-specific helpers live in the test module that uses them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest


def _fixtures_path() -> Path:
    env = os.environ.get("DARDIAG_FIXTURES")
    if env:
        return Path(env)
    # /work/<checkout>/tests/conftest.py -> /work/shared/fixtures
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared fixture folder (env DARDIAG_FIXTURES overrides); tests needing it skip if absent."""
    path = _fixtures_path()
    if not path.is_dir():
        pytest.skip(f"fixture folder {path} not found; set DARDIAG_FIXTURES")
    return path


@pytest.fixture(scope="session")
def official_ckpt(fixtures_dir) -> Path:
    """A bare DiT state dict written by the official code (fixtures/README.md: depth 6, width 128, 4 heads)."""
    path = fixtures_dir / "dit_tiny_official.pt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def official_reference(fixtures_dir) -> dict:
    """Inputs ``x, t, y`` and the official model's ``out`` for the checkpoint above."""
    import torch

    path = fixtures_dir / "dit_tiny_official_reference.pt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return torch.load(path, map_location="cpu", weights_only=True)


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
