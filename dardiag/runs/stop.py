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

A command whose output cannot be continued (``sample``: one grid from every sampler step) passes
``keeps``, what a stop leaves behind ("nothing was written to g.png"), and updates it as it goes: every
line then says that instead of "run the same command to continue".

Under torchrun every worker has its own request; the sweep makes them agree (:meth:`StopRequest.adopt`,
``dardiag.engine.sweep``) so that all stop after the same minibatch, and there every first signal waits
for that agreement (one process leaving at once would strand the others in a collective).

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
_last: "Stopped | None" = None


def last_exit_code() -> int | None:
    """The exit status of the last :class:`Stopped` raised in this process (None: none was)."""
    return _last.exit_code if _last is not None else None


def last_keeps() -> str | None:
    """What the last :class:`Stopped` left behind, for a command that cannot continue (None: it can)."""
    return _last.keeps if _last is not None else None


class Stopped(KeyboardInterrupt):
    """The command stops at a signal; what it finished is kept. ``exit_code``: 130 (SIGINT) or 143 (SIGTERM);
    ``keeps``: what is left, when the command cannot continue (None: the same command continues)."""

    def __init__(self, signum: int = signal.SIGINT, keeps: str | None = None):
        global _last
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.keeps = keeps
        _last = self  # typer turns any KeyboardInterrupt into exit code 130: the CLI asks here

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopRequest:
    """Whether a stop was asked for; ``deferred()`` marks the work that finishes before it stops.

    ``keeps``: None for a command the same command continues; else what a stop now leaves behind, said
    in every line (the command sets it again once it has written something).
    """

    listening = True  # signals reach this request (False: the Python API, where none ever does)

    def __init__(self, what: str = "this minibatch", notify: Callable[[str], None] | None = None,
                 keeps: str | None = None):
        self.what = what  # "this minibatch", "this step", ...
        self.notify = notify or _stderr
        self.keeps = keeps
        self.then: str | None = None  # what a stop after `what` leaves (commands with `keeps`)
        self.signum: int | None = None
        self.agreed = False  # under torchrun: every process stops here (set by the sweep)
        self.leaving = False  # the stop is settled everywhere; later signals change nothing
        self._deferring = 0

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was asked for: call it where stopping loses nothing."""
        if self.signum is not None:
            raise Stopped(self.signum, self.keeps)

    def adopt(self, signum: int, say: bool = True) -> None:
        """Stop with another process of a torchrun run, which was asked to (this one may not have been)."""
        if self.signum is None:
            self.signum = signum
            if say:
                self.notify(f"{_name(signum)} on another process: every process stops after {self.what}; "
                            "run the same command to continue")

    @contextmanager
    def deferred(self, what: str | None = None, then: str | None = None) -> Iterator["StopRequest"]:
        """Inside, a first signal waits for the next :meth:`check` (the current minibatch finishes).
        ``then``: what stopping after ``what`` leaves, said in the acknowledgement (with ``keeps``)."""
        before = self.what, self.then
        self.what, self.then = what or before[0], then or before[1]
        self._deferring += 1
        try:
            yield self
        finally:
            self._deferring -= 1
            self.what, self.then = before

    def _handle(self, signum: int, frame) -> None:
        if self.leaving:  # torchrun stopping the workers still on their way out
            return
        name = _name(signum)
        if self.signum is not None or not self._deferring:
            first = self.signum is None
            self.signum = self.signum or signum
            if self.keeps is not None:
                self.notify(f"{name}{'' if first else ' again'}: stopping now; {self.keeps}")
            elif first:
                self.notify(f"{name}: stopping now (nothing to keep is under way); run the same command to continue")
            else:
                self.notify(f"{name} again: stopping now; what was finished is kept, the same command continues")
            raise Stopped(self.signum, self.keeps)
        self.signum = signum
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        if self.keeps is not None:
            self.notify(f"{name}: stopping after {self.what}; {self.then or self.keeps} ({again} stops at once)")
        else:
            self.notify(f"{name}: stopping after {self.what}; run the same command to continue "
                        f"({again} stops at once, still resumable)")


class _Never(StopRequest):
    """The request of code run without :func:`stop_on_signals` (the Python API): it never fires."""

    listening = False

    @contextmanager
    def deferred(self, what: str | None = None, then: str | None = None) -> Iterator[StopRequest]:
        yield self


_NEVER = _Never()
_current: StopRequest = _NEVER


def current() -> StopRequest:
    """The request of the command that is running (one that never fires outside a command)."""
    return _current


@contextmanager
def stop_on_signals(what: str = "this minibatch", notify: Callable[[str], None] | None = None,
                    keeps: str | None = None) -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM as described in the module docstring for the duration of the block.

    Only the main thread can own signal handlers: elsewhere (and when nested) this is a no-op that
    yields the request in force. ``notify(line)`` prints the acknowledgement (default: stderr);
    ``keeps``: see :class:`StopRequest`.
    """
    global _current, _last
    if _current is not _NEVER or threading.current_thread() is not threading.main_thread():
        yield _current
        return
    _last = None  # an earlier command's stop (in the same Python process) says nothing about this one
    req = StopRequest(what, notify, keeps)
    old = {s: signal.signal(s, req._handle) for s in SIGNALS}
    _current = req
    try:
        yield req
    finally:
        _current = _NEVER
        for s, h in old.items():
            # a settled torchrun stop: the process is on its way out, and torchrun sends SIGTERM to the
            # workers still running when one exits; ignored, it cannot turn exit 130 / 143 into a kill
            signal.signal(s, signal.SIG_IGN if req.leaving else h)
