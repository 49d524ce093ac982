"""Atomic file writes: a hidden temp file beside the destination, fsync, then one rename.

A reader (or a crash) sees either the old file or the complete new one, never half of either.
Torch-free, so the store and the plots can use it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from dardiag.errors import DardiagError


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
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from group/other
        with os.fdopen(fd, mode) as f:
            write(f)
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
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
