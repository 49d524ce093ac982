"""Stopping a long command cleanly: the first Ctrl-C or SIGTERM asks, a second one insists.

A profile minibatch of a big model can run for minutes, and a job scheduler sends SIGTERM before it
kills. So a command that keeps its work in units (``profile``, ``demo``, ``train``, ``latents``) holds
``stop_on_signals()`` while it works:

* the first SIGINT or SIGTERM is acknowledged at once (one line: "stopping after this minibatch; run
  the same command to continue") and only sets a flag; the work checks it where it can stop without
  losing anything (:meth:`StopRequest.check`, after a minibatch, a step, a batch) and raises
  :class:`Stopped` there;
* outside such work (loading a checkpoint, sampling generated inputs: nothing there can be kept
  half-done) and at a second signal, :class:`Stopped` is raised at once: atomic writes and the
  run's lifecycle already make every moment a safe one to stop at, so the run stays resumable.

``Stopped`` is a ``KeyboardInterrupt``: everything that keeps finished work on Ctrl-C (the sweep, the
trainer, the lock's release) treats both signals alike, and the CLI exits with ``exit_code``, 130
after SIGINT and 143 after SIGTERM (128 + the signal number, as a shell reports a signal).

The engine only ever asks :func:`current` (a request that never fires when no command installed the
handlers: Python and Jupyter keep Ctrl-C's plain KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_last_exit_code: int | None = None


def last_exit_code() -> int | None:
    """The exit status of the last :class:`Stopped` raised in this process (None: none was)."""
    return _last_exit_code


class Stopped(KeyboardInterrupt):
    """The command stops at a signal; what it finished is kept. ``exit_code``: 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT):
        global _last_exit_code
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        _last_exit_code = self.exit_code  # typer turns any KeyboardInterrupt into exit code 130

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class StopRequest:
    """Whether a stop was asked for; ``deferred()`` marks the work that finishes before it stops."""

    def __init__(self, what: str = "this minibatch", notify: Callable[[str], None] | None = None):
        self.what = what  # "this minibatch", "this step", ...
        self.notify = notify or _stderr
        self.signum: int | None = None
        self._deferring = 0

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was asked for: call it where stopping loses nothing."""
        if self.signum is not None:
            raise Stopped(self.signum)

    @contextmanager
    def deferred(self, what: str | None = None) -> Iterator["StopRequest"]:
        """Inside, a first signal waits for the next :meth:`check` (the current minibatch finishes)."""
        before = self.what
        self.what = what or before
        self._deferring += 1
        try:
            yield self
        finally:
            self._deferring -= 1
            self.what = before

    def _handle(self, signum: int, frame) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.signum is not None or not self._deferring:
            first = self.signum is None
            self.signum = self.signum or signum
            if first:
                self.notify(f"{name}: stopping now (nothing to keep is under way); run the same command to continue")
            else:
                self.notify(f"{name} again: stopping now; what was finished is kept, the same command continues")
            raise Stopped(self.signum)
        self.signum = signum
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        self.notify(f"{name}: stopping after {self.what}; run the same command to continue "
                    f"({again} stops at once, still resumable)")


class _Never(StopRequest):
    """The request of code run without :func:`stop_on_signals` (the Python API): it never fires."""

    @contextmanager
    def deferred(self, what: str | None = None) -> Iterator[StopRequest]:
        yield self


_NEVER = _Never()
_current: StopRequest = _NEVER


def current() -> StopRequest:
    """The request of the command that is running (one that never fires outside a command)."""
    return _current


@contextmanager
def stop_on_signals(what: str = "this minibatch", notify: Callable[[str], None] | None = None
                    ) -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM as described in the module docstring for the duration of the block.

    Only the main thread can own signal handlers: elsewhere (and when nested) this is a no-op that
    yields the request in force. ``notify(line)`` prints the acknowledgement (default: stderr).
    """
    global _current
    if _current is not _NEVER or threading.current_thread() is not threading.main_thread():
        yield _current
        return
    req = StopRequest(what, notify)
    old = {s: signal.signal(s, req._handle) for s in SIGNALS}
    _current = req
    try:
        yield req
    finally:
        _current = _NEVER
        for s, h in old.items():
            signal.signal(s, h)
