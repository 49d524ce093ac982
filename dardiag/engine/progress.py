"""What a long profile tells whoever watches it, as one small protocol the CLI and the API share.

The sweep counts **minibatches** (one forward+backward of ``batch_size`` images: the work that takes
time), not noise levels; it announces its totals once (``begin``), then reports every finished
minibatch (``step``) and every finished unit (``unit``: a noise level of one model, or its timestep
probe; what is written to OUT). Loading a checkpoint is a step of its own (``loading``), before the
totals are known. Every method is a no-op here, so a watcher implements only what it shows.

A plain callable (``progress=print``: the public form of ``dardiag.profile``) gets one line per
finished unit, as it always did.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


class Progress:
    """The watcher's side; subclass and override what you show (see the module docstring)."""

    @contextmanager
    def loading(self, what: str) -> Iterator[None]:
        """Around opening one checkpoint (``what``: its path)."""
        yield

    def note(self, line: str) -> None:
        """A line to show now (decisions, warnings) without breaking a live display."""

    def begin(self, *, total: int, done: int, images_per_step: int, units: str) -> None:
        """``total`` minibatches in the run, ``done`` of them already finished (a continued run);
        ``units`` says what the run's units are, for people ("16 noise levels + the timestep probe")."""

    def describe(self, text: str) -> None:
        """What runs now ("DiT-XL-2 noise level 0.933 (3/16)")."""

    def step(self, images: int) -> None:
        """One minibatch of ``images`` images finished."""

    def unit(self, text: str) -> None:
        """One unit finished (and was written)."""


class _Lines(Progress):
    def __init__(self, fn: Callable[[str], None]):
        self.fn = fn

    def unit(self, text: str) -> None:
        self.fn(text)


_SILENT = Progress()


def as_progress(p) -> Progress:
    """None -> a silent watcher; a ``Progress`` as is; a callable -> one line per finished unit."""
    if p is None:
        return _SILENT
    if isinstance(p, Progress):
        return p
    if callable(p):
        return _Lines(p)
    raise TypeError(f"progress must be a dardiag.engine.progress.Progress or a callable, not {type(p).__name__}")
