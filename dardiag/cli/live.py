"""What a long command shows while it works: a ``dardiag.engine.progress.Progress`` for the terminal.

* loading a checkpoint is a step of its own (a spinner with the time so far, then "loaded X in 81 s");
* then one bar over the run's **minibatches**, with what runs now, ``12/1024 minibatches``,
  throughput, time so far and ``ETA 0:12:30``. The display refreshes four times a second, so the
  clock moves and the ETA counts down while a long minibatch runs; the ETA is this process' time per
  minibatch times what is left (minibatches a continued run had finished do not count), and reads
  "ETA after the first minibatch" until there is one;
* every line printed while the bar is live goes through the bar's own console (:meth:`print`), above
  the bar, so none is overwritten.

Without a terminal (a log file, a pipe) there is no bar: one line per finished unit, with the same
count and ETA, goes to stderr, which is what a job scheduler's log can show. ``enabled=False``
(``--no-progress``) shows nothing but the lines printed through :meth:`print`.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress as RichProgress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from dardiag.engine.progress import Pace, Progress


def _size(path: str) -> str:
    p = Path(path)
    try:
        n = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    except OSError:
        return ""
    return f" ({n / 1e9:.1f} GB)" if n >= 1e8 else ""


class _PaceColumn(ProgressColumn):
    def __init__(self, live: "LiveProgress", what: str):
        super().__init__()
        self.live, self.what = live, what

    def render(self, task) -> Text:
        pace = self.live.pace
        if pace is None:
            return Text("")
        return Text(pace.eta() if self.what == "eta" else pace.rate(), style="progress.remaining")


class LiveProgress(Progress):
    """The CLI's watcher (see the module docstring); use it as a context manager."""

    def __init__(self, console: Console, enabled: bool | None = None, unit: str = "minibatches"):
        self.console = console  # where report lines go when no bar is live (stdout)
        self.terminal = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.lines = enabled is None and not sys.stderr.isatty()  # a log: one line per unit
        self.unit_name = unit
        self.pace: Pace | None = None
        self._bar: RichProgress | None = None
        self._task = None

    def __enter__(self) -> "LiveProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.end()

    # ------------------------------------------------------------------ lines
    def print(self, line: str) -> None:
        """A line above the live bar (or plainly, when none is live)."""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    note = print

    def alert(self, line: str) -> None:
        """A line on stderr (above the live bar when there is one): acknowledging a signal."""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ loading
    @contextmanager
    def loading(self, what: str) -> Iterator[None]:
        name, t0 = Path(what).name or what, time.perf_counter()
        text = f"loading {name}{_size(what)}"
        if self.terminal:  # a spinner and the time so far: a 2.7 GB file takes minutes on a slow disk
            with RichProgress(SpinnerColumn(), TextColumn(text, markup=False), TimeElapsedColumn(), console=Console(stderr=True),
                              transient=True, refresh_per_second=4) as spinner:
                spinner.add_task(text, total=None)
                yield
        else:
            yield
        self.print(f"loaded {name}{_size(what)} in {time.perf_counter() - t0:.0f} s")

    # ------------------------------------------------------------------ the bar
    def begin(self, *, total: int, done: int, images_per_step: int, units: str) -> None:
        self.end()
        self.pace = Pace(total, done)
        if self.lines and done < total:
            print(f"work: {total - done} of {total} {self.unit_name} of {images_per_step} images to run ({units})",
                  file=sys.stderr, flush=True)
        if not self.terminal or done >= total:
            return
        self._bar = RichProgress(
            TextColumn("{task.description}"), BarColumn(), TextColumn(f"{{task.completed}}/{{task.total}} {self.unit_name}"),
            _PaceColumn(self, "rate"), TimeElapsedColumn(), _PaceColumn(self, "eta"),
            console=Console(stderr=True), transient=True, refresh_per_second=4)
        self._bar.start()
        self._task = self._bar.add_task("starting", total=total, completed=done)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def step(self, images: int) -> None:
        if self.pace is not None:
            self.pace.step(images)
        if self._bar is not None:
            self._bar.update(self._task, advance=1)

    def unit(self, text: str) -> None:
        if self.lines and self.pace is not None:
            p = self.pace
            rate = f", {p.rate()}" if p.rate() else ""
            print(f"{text}: {p.done}/{p.total} {self.unit_name}{rate}, {p.eta()}", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
