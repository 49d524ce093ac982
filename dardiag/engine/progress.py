"""What a long profile tells whoever watches it, as one small protocol the CLI and the API share.

The sweep counts **minibatches** (one forward+backward of ``batch_size`` images: the work that takes
time), not noise levels; it announces its totals once (``begin``), then reports every finished
minibatch (``step``) and every finished unit (``unit``: a noise level of one model, or its timestep
probe; what is written to OUT). Loading a checkpoint is a step of its own (``loading``), before the
totals are known. Every method is a no-op here, so a watcher implements only what it shows.

A plain callable (``progress=print``: the public form of ``dardiag.profile``) gets one line per
finished unit, as it always did. :class:`Pace` turns finished steps (minibatches, training steps) into
a rate and an ETA, for every watcher that shows one.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator


def clock(seconds: float) -> str:
    """``0:12:30``"""
    return str(timedelta(seconds=int(max(seconds, 0))))


class Pace:
    """Time per step in this process (steps a continued run had finished do not count: they took no
    time here), and what it says about the rest."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.here, self.images = total, done, 0, 0
        self.t0 = self.last = time.perf_counter()

    def step(self, images: int = 0) -> None:
        self.done, self.here, self.images = self.done + 1, self.here + 1, self.images + images
        self.last = time.perf_counter()

    def exclude(self, seconds: float) -> None:
        """``seconds`` of the time so far went to other work (a training run's periodic profile)."""
        self.t0 += seconds

    def per_step(self) -> float | None:
        return (self.last - self.t0) / self.here if self.here else None

    def seconds_left(self) -> float | None:
        """None until a step finished here; counts down while a long step runs."""
        if self.done >= self.total:
            return 0.0
        if not self.here:
            return None
        return max(self.per_step() * (self.total - self.done) - (time.perf_counter() - self.last), 0.0)

    def eta(self, what: str = "minibatch") -> str:
        left = self.seconds_left()
        return f"ETA after the first {what}" if left is None else f"ETA {clock(left)}"

    def rate(self) -> str:
        if self.here == 0:
            return ""
        per_image = (self.last - self.t0) / max(self.images, 1)
        return f"{1 / per_image:.2f} images/s" if per_image < 1 else f"{per_image:.1f} s/image"


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

    def end(self) -> None:
        """The work is over (a caller that runs several profiles in a row, as training does, says so)."""


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
