"""Atomic file writes: a hidden temp file beside the destination, fsync, then one rename.

A reader (or a crash) sees either the old file or the complete new one, never half of either.
A write the system refuses (a full disk, a quota, a read-only mount) is one line,
:class:`WriteFailed`, with the temp file gone and the destination as it was.
Torch-free, so the store and the plots can use it too.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

from dardiag.errors import DardiagError

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class WriteFailed(DardiagError):
    """The system refused a write (disk full, quota, read-only, permission); the old file is intact."""


def write_failed(dest: Path, e: OSError) -> WriteFailed:
    if e.errno in _FULL:
        return WriteFailed(f"cannot write {dest}: the disk is full ({e.strerror or e}); free some space or "
                           "choose another location, then run the same command again (finished work is kept)")
    return WriteFailed(f"cannot write {dest}: {e.strerror or e}; choose a writable location, then run the same "
                       "command again")


def _refusal(e: BaseException) -> OSError | None:
    """The system's refusal behind ``e``, if any. torch.save's zip writer turns a failed ``write`` of its
    file object into ``RuntimeError: ... unexpected pos`` raised while the ``OSError`` is handled: the
    refusal survives only as the error's context."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(dest: str | os.PathLike, write: Callable, *, overwrite: bool = True, mode: str = "wb") -> Path:
    """``write(fileobj)`` into ``dest`` atomically; with ``overwrite=False`` an existing ``dest`` is an error."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as e:
        raise write_failed(dest, e) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from group/other
        with os.fdopen(fd, mode) as f:
            try:
                write(f)
            except DardiagError:
                raise
            except Exception as e:
                refusal = _refusal(e)
                if refusal is None:
                    raise
                raise refusal from None  # a full disk is one line below, whatever the writer made of it
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)  # atomic, and fails if dest exists
            except FileExistsError:
                raise DardiagError(f"{dest} already exists; refusing to overwrite it") from None
            except OSError:  # filesystems without hard links
                if dest.exists():
                    raise DardiagError(f"{dest} already exists; refusing to overwrite it") from None
                os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as e:  # ENOSPC from write, flush or fsync (delayed allocation), EROFS, EDQUOT, ...
        raise write_failed(dest, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
