"""One process at a time in a run directory: an OS lock on ``OUT/.dardiag.lock``.

``flock`` belongs to the open file, so it dies with its process: a run killed with SIGKILL never blocks
the next one, and no stale-file check is needed. The file also says who holds the lock (pid, host,
since when) so that a second process can stop at once with one line naming the holder, touching
nothing. The holder deletes the file when it lets go (after checking, on acquiring, that the file it
locked is still the one at that path: a releasing holder may have unlinked it in between).

Where the filesystem cannot lock (some network mounts; platforms without ``fcntl``), dardiag says so
in one line and goes on unlocked. Locks are re-entrant within a process (``train`` holds OUT while its
periodic profile writes ``OUT/profile``), and under torchrun only rank 0 takes them.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from dardiag.atomic import write_failed
from dardiag.errors import DardiagError
from dardiag.runs.layout import LOCK

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_held: dict[str, "Claim"] = {}  # resolved OUT -> the claim this process holds on it
_CANNOT_LOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class Claim:
    """This process' hold on OUT. ``keep()``: the run began, so OUT stays even if it ends up empty."""

    def __init__(self, out: Path, created: bool):
        self.out, self.created, self.kept, self.fd = out, created, False, None

    def keep(self) -> None:
        self.kept = True


def _holder_text(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        h = json.loads(os.read(fd, 4096) or b"{}")
        return f"pid {h['pid']} on {h['host']}, since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is just starting"


def _acquire(out: Path) -> int | None:
    path = out / LOCK
    if fcntl is None:
        warnings.warn(f"{out}: this platform has no file locks; going on unlocked (start one command per --out)")
        return None
    for _ in range(50):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DardiagError(f"cannot write into {out}: {e.strerror or e}; choose a writable directory for --out")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise DardiagError(f"{out} is in use by another dardiag command ({holder}); wait for it to finish, "
                               "or choose another --out") from None
        except OSError as e:
            os.close(fd)
            if e.errno not in _CANNOT_LOCK:
                raise
            path.unlink(missing_ok=True)
            warnings.warn(f"{out}: this filesystem cannot lock files ({e.strerror}); going on unlocked "
                          "(start one command per --out)")
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # we locked a file its last holder had just unlinked: take the one at the path now
    else:  # pragma: no cover - 50 handovers in a row
        raise DardiagError(f"{out}: could not take the lock; try again")
    since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since,
                       "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))})
    try:
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
    except OSError as e:  # a full disk: nothing of the run could be written either
        path.unlink(missing_ok=True)  # still holding it: nobody can lock it in between
        os.close(fd)
        raise write_failed(path, e) from None
    return fd


def _release(claim: Claim) -> None:
    if claim.fd is not None:
        try:
            (claim.out / LOCK).unlink(missing_ok=True)  # still holding it: nobody can lock it in between
        finally:
            os.close(claim.fd)
    if claim.created and not claim.kept:  # nothing began here: leave no empty directory behind
        try:
            claim.out.rmdir()
        except OSError:
            pass


@contextmanager
def claim(out: str | os.PathLike, *, enabled: bool = True) -> Iterator[Claim]:
    """Hold OUT (creating it) for the duration of the block; ``enabled=False`` (other ranks) is a no-op."""
    out = Path(out)
    key = os.path.realpath(out)
    if not enabled or key in _held:
        yield _held.get(key) or Claim(out, created=False)
        return
    created = not out.exists()
    if out.exists() and not out.is_dir():
        raise DardiagError(f"{out} exists and is not a directory; choose a directory path for --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DardiagError(f"cannot create {out}: {e.strerror or e}; choose a writable directory for --out") from None
    hold = Claim(out, created)
    try:
        hold.fd = _acquire(out)
    except BaseException:
        _release(hold)
        raise
    _held[key] = hold
    try:
        yield hold
    finally:
        del _held[key]
        _release(hold)
