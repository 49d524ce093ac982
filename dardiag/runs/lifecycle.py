"""One lifecycle for every run directory: start, continue, replace with ``--force``, finish, abandon.

A ``Kind`` says what a run of one kind owns in OUT (``dardiag.runs.layout``) and how to read its record
(``_run.json`` of a profile run, ``last.pt`` of a training run). Everything else is common:

* :func:`plan` looks at OUT and decides, changing nothing: a **fresh** run, **continue** the run there
  (the same settings: the same command after Ctrl-C or a crash), or the run there is **complete**.
  Other settings are refused with a short diff unless ``--force``.
* ``--force`` sets the old run aside in ``OUT/_replaced`` (one rename of a staging folder, so it
  appears whole or not at all) until the new run completes; the same ``--force`` command after Ctrl-C
  continues the new run; a second ``--force`` keeps the older complete run aside.
* :func:`apply` carries a plan out; :func:`finish` deletes the replaced run once its successor
  completed; :func:`abandon` after an error puts the replaced run back (its record moved last, so an
  interrupted restore never looks like a whole run) or drops a run that finished nothing.
* A run that finished nothing (a stub: the record with no progress, or scratch without a record) is
  simply started over by the next command; results without a record (orphans) are never deleted.

Nothing here knows what a unit, a part or a checkpoint is; see ``profile_run`` and ``dardiag.train``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dardiag.errors import DardiagError
from dardiag.runs.layout import LOCK, REPLACED, STAGING


@dataclass(frozen=True)
class Record:
    """What a kind's reader says about the run in OUT."""

    config: Any  # the stored settings, compared by the kind's diff
    progress: int  # finished units or steps; 0: nothing to continue
    complete: bool
    describe: str  # for messages: "an unfinished (step 4 of 6) training run"
    data: Any = None  # whatever the kind needs next (the loaded last.pt, the run state)


@dataclass(frozen=True)
class Kind:
    record: str  # the file that makes OUT a run; restored last
    own: re.Pattern  # names of the entries of OUT that the run writes (record included)
    results: re.Pattern  # own entries that are results: never deleted while there is no record
    exclusive: bool  # OUT may hold nothing else (a profile: pandas.read_parquet(OUT) reads every part)
    read: Callable[[Path], Record]  # the record file -> Record; DardiagError when it is damaged
    orphans_hint: str  # what to do with results that lost their record
    nested: tuple[tuple[str, "Kind"], ...] = ()  # own sub-directories that are runs of another kind

    def nested_kind(self, name: str) -> "Kind | None":
        return dict(self.nested).get(name)


def own_entries(out: Path, kind: Kind) -> list[Path]:
    """The entries of OUT the run wrote (what --force sets aside), lifecycle files aside."""
    if not out.is_dir():
        return []
    own = []
    for p in sorted(out.iterdir()):
        if p.name in (REPLACED, STAGING, LOCK) or not kind.own.match(p.name):
            continue
        sub = kind.nested_kind(p.name)
        if sub is not None and not (p.is_dir() and (p / sub.record).exists()):
            continue  # e.g. a user's own folder named "profile"
        own.append(p)
    return own


@dataclass
class Found:
    """What OUT holds: state "none" | "stub" (nothing to continue) | "orphans" (results without their
    record) | "run" | "damaged" (an unreadable record)."""

    state: str
    files: list[Path] = field(default_factory=list)
    record: Record | None = None
    error: DardiagError | None = None

    @property
    def complete(self) -> bool:
        return self.record is not None and self.record.complete


def find(out: Path, kind: Kind) -> Found:
    files = own_entries(out, kind)
    if not files:
        return Found("none")
    if not (out / kind.record).exists():
        state = "orphans" if any(kind.results.match(p.name) for p in files) else "stub"
        return Found(state, files)
    try:
        record = kind.read(out / kind.record)
    except DardiagError as e:
        return Found("damaged", files, error=e)
    stub = record.progress == 0 and not record.complete
    return Found("stub" if stub else "run", files, record)


# ----------------------------------------------------------------------------- writable paths


def check_writable(path: Path, flag: str, *, directory: bool) -> None:
    """One-line errors, before any work, for a path that cannot be written: under a regular file, a
    directory where a file is wanted (or the reverse), or in a directory this process may not write."""
    if directory and path.exists() and not path.is_dir():
        raise DardiagError(f"{flag} {path} exists and is not a directory; choose a directory path for {flag}")
    if not directory and path.is_dir():
        raise DardiagError(f"{flag} {path} is a directory; pass a file name such as {path / 'ema.pt'}")
    base = path if directory and path.is_dir() else path.parent
    while not base.exists() and base != base.parent:
        if base.is_symlink():
            raise DardiagError(f"{flag} {path}: {base} is a broken symbolic link; choose another path")
        base = base.parent
    if not base.is_dir():
        raise DardiagError(f"cannot create {flag} {path}: {base} is a file, not a directory; choose a writable "
                           f"directory for {flag}")
    try:  # os.access says yes to root everywhere, also on read-only mounts and /sys: try it
        fd, probe = tempfile.mkstemp(prefix=".dardiag-write-test.", dir=base)
    except OSError as e:
        raise DardiagError(f"{flag} {path}: cannot write into {base} ({e.strerror or e}); choose a writable "
                           "location") from None
    os.close(fd)
    os.unlink(probe)


# ----------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """What a command does with OUT; :func:`plan` decides it, :func:`apply` carries it out."""

    out: Path
    kind: Kind
    action: str  # "fresh" | "continue" | "complete"
    found: Found
    replacing: bool = False  # OUT/_replaced holds the run this one replaces
    delete: list[Path] = field(default_factory=list)  # own entries of a run given up
    set_aside: list[Path] = field(default_factory=list)  # own entries of the run --force replaces
    drop_replaced: bool = False  # an older OUT/_replaced goes first (its successor completed)

    @property
    def record(self) -> Record | None:
        return self.found.record if self.action != "fresh" else None


def _refusal(out: Path, found: Found, diff: list[str], *, resume: bool, replacing: bool) -> DardiagError:
    shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
    head = f"cannot resume {out} (settings differ)" if resume else f"will not overwrite {out}"
    kept = (f" (the run it replaces is kept in {out / REPLACED}, put back if this one fails)" if replacing else "")
    cont = "" if found.complete else "pass the same settings to continue it, "
    return DardiagError(f"{head}: it holds {found.record.describe} with other settings ({shown}){kept}; {cont}pass "
                        "--force to start over (the old run is kept until the new one completes), or choose "
                        "another --out")


def plan(out: Path, kind: Kind, *, diff: Callable[[Any], list[str]], force: bool = False,
         resume: bool = False, flag: str = "--out") -> Plan:
    """Decide what to do with ``out`` (see the module docstring); ``diff(stored config)`` lists the
    settings that differ. Nothing in OUT changes here, except that the run an interrupted ``--force``
    replaced is put back when the forced run finished nothing and this command does not force."""
    if force and resume:
        raise DardiagError("pass either --force or --resume, not both")
    out = Path(out)
    check_writable(out, flag, directory=True)
    if kind.exclusive and out.is_dir() and not (out / kind.record).exists():
        foreign = [p.name for p in sorted(out.iterdir())
                   if p.name not in (REPLACED, STAGING, LOCK) and not kind.own.match(p.name)]
        if foreign:
            shown = ", ".join(repr(e) for e in foreign[:3])
            raise DardiagError(f"{out} is a non-empty directory that is not a dardiag run (it holds {shown}); "
                               f"choose a new or empty directory for {flag}")
    replacing = (out / REPLACED).is_dir()
    found = find(out, kind)
    if force:
        if (found.state == "run" and replacing and not found.complete and not diff(found.record.config)):
            return Plan(out, kind, "continue", found, replacing=True)  # the same --force after Ctrl-C
        if found.state == "none":
            return Plan(out, kind, "fresh", found, replacing=replacing)
        if replacing and not found.complete:  # an unfinished forced run: give it up, keep the older one aside
            return Plan(out, kind, "fresh", found, replacing=True, delete=found.files)
        # (a complete run beside _replaced: its finish was interrupted, so the older run can go)
        return Plan(out, kind, "fresh", found, replacing=True, set_aside=found.files, drop_replaced=replacing)

    if replacing and found.state in ("none", "stub"):
        put_back(out, kind, found.files)  # Ctrl-C of a --force run before it finished anything
        replacing, found = False, find(out, kind)
    if found.state == "none":
        return Plan(out, kind, "fresh", found, replacing=replacing)
    if found.state == "stub":  # killed or failed before it finished anything: nothing to continue
        return Plan(out, kind, "fresh", found, replacing=replacing, delete=found.files)
    if found.state == "orphans":
        shown = ", ".join(p.name for p in found.files if kind.results.match(p.name))
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise DardiagError(f"{out} holds results ({shown}) but no {kind.record}; {kind.orphans_hint}, "
                           "or pass --force to start over")
    if found.state == "damaged":
        raise found.error
    differ = diff(found.record.config)
    if differ:
        raise _refusal(out, found, differ, resume=resume, replacing=replacing)
    return Plan(out, kind, "complete" if found.complete else "continue", found, replacing=replacing)


def apply(p: Plan) -> None:
    """Carry out ``p``: drop what it gives up, move the replaced run into ``OUT/_replaced``, create OUT."""
    if p.drop_replaced:
        remove_tree(p.out / REPLACED)
    for f in p.delete:
        remove(f, p.kind)
    if p.set_aside:
        staging = p.out / STAGING
        remove_tree(staging)
        staging.mkdir()
        for f in p.set_aside:
            move(f, staging / f.name, p.kind)
        os.replace(staging, p.out / REPLACED)
    try:
        p.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DardiagError(f"cannot create {p.out}: {e.strerror or e}; choose a writable directory for --out") from None


def finish(out: Path) -> None:
    """The run completed: the run it replaced goes now."""
    remove_tree(Path(out) / REPLACED)


def abandon(out: Path, kind: Kind, *, progress: int) -> bool:
    """After an error: put back the run a ``--force`` replaced (True), else drop a run that finished
    nothing (``progress`` 0), so that a corrected command needs no ``--force``. OUT itself stays."""
    out = Path(out)
    if (out / REPLACED).is_dir():
        put_back(out, kind, own_entries(out, kind))
        return True
    if progress == 0:
        for f in own_entries(out, kind):
            remove(f, kind)
    return False


def put_back(out: Path, kind: Kind, current: list[Path]) -> None:
    """Drop ``current`` (the failed run's entries) and move the replaced run back, its record last."""
    keep = out / REPLACED
    for p in current:
        remove(p, kind)
    for p in sorted(keep.iterdir(), key=lambda p: p.name == kind.record):
        move(p, out / p.name, kind)
    remove_tree(keep)


# ----------------------------------------------------------------------------- moving files


def remove_tree(p: Path) -> None:
    """Delete a file, a link or a folder tree (a link to a folder: the link only)."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _nested(p: Path, kind: Kind) -> Kind | None:
    sub = kind.nested_kind(p.name)
    return sub if sub is not None and p.is_dir() and not p.is_symlink() else None


def move(src: Path, dest: Path, kind: Kind) -> None:
    """Move an own entry; a nested run directory moves only its own entries (a user's files there stay)."""
    sub = _nested(src, kind)
    if sub is None:
        os.replace(src, dest)
        return
    dest.mkdir(exist_ok=True)
    for q in src.iterdir():
        if sub.own.match(q.name):
            os.replace(q, dest / q.name)
    if not any(src.iterdir()):
        src.rmdir()


def remove(p: Path, kind: Kind) -> None:
    """Delete an own entry; of a nested run directory only its own entries (then the folder, if empty)."""
    sub = _nested(p, kind)
    if sub is None:
        remove_tree(p)
        return
    for q in p.iterdir():
        if sub.own.match(q.name):
            remove_tree(q)
    if not any(p.iterdir()):
        p.rmdir()


# ----------------------------------------------------------------------------- config diffs


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def config_diff(stored: Any, given: Any, prefix: str = "config") -> list[str]:
    """Where two JSON-like configs differ, one short line per leaf: ``config.batch_size: stored 4, now 8``."""
    if isinstance(stored, dict) and isinstance(given, dict):
        out = []
        for k in sorted(set(stored) | set(given), key=str):
            if k not in given:
                out.append(f"{prefix}.{k} is missing now (stored {_short_repr(stored[k])})")
            elif k not in stored:
                out.append(f"{prefix}.{k} is new (now {_short_repr(given[k])})")
            else:
                out += config_diff(stored[k], given[k], f"{prefix}.{k}")
        return out
    if isinstance(stored, list) and isinstance(given, list) and len(stored) == len(given):
        return [d for i, (a, b) in enumerate(zip(stored, given)) for d in config_diff(a, b, f"{prefix}[{i}]")]
    return [] if stored == given else [f"{prefix}: stored {_short_repr(stored)}, now {_short_repr(given)}"]
