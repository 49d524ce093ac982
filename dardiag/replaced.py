"""``--force`` without loss: the run being replaced waits in ``OUT/_replaced`` until its successor completes.

Shared by ``dardiag profile`` (``store.RunDir``) and ``dardiag train`` (``train.outdir``); each says
which entries of OUT are its own and how to move or remove them. The set-aside is one rename of a
staging folder, so ``_replaced`` appears complete or not at all; restoring moves the vouching file
(``_run.json``, ``last.pt``) last, so an interrupted restore never looks like a whole run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

REPLACED = "_replaced"
STAGING = f".{REPLACED}.tmp"

Move = Callable[[Path, Path], None]


def remove_tree(p: Path) -> None:
    """Delete a file, a link or a folder tree (a link to a folder: the link only)."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def set_aside(out: Path, entries: Iterable[Path], *, move: Move = os.replace) -> None:
    """Move ``entries`` (the old run's own files in ``out``) into ``out/_replaced``."""
    staging = out / STAGING
    remove_tree(staging)
    staging.mkdir()
    for p in entries:
        move(p, staging / p.name)
    os.replace(staging, out / REPLACED)


def put_back(out: Path, current: Iterable[Path], *, vouching: str, remove: Callable[[Path], None] = remove_tree,
             move: Move = os.replace) -> None:
    """Drop the failed run's ``current`` entries and move the replaced run back, ``vouching`` last."""
    keep = out / REPLACED
    for p in current:
        remove(p)
    for p in sorted(keep.iterdir(), key=lambda p: p.name == vouching):
        move(p, out / p.name)
    remove_tree(keep)


def discard(out: Path) -> None:
    """The successor completed: the replaced run goes."""
    remove_tree(out / REPLACED)
