"""The files a training run owns in OUT, and the rules for starting, continuing and replacing one.

    OUT/ckpt_{step:07d}.pt   dardiag checkpoint (model, EMA, optimizer, training config) every K steps
    OUT/last.pt              the newest of them; a rerun continues from it
    OUT/loss.csv             step, loss, lr, seconds (wall clock since this process started)
    OUT/train_config.json    the TrainConfig, for people (the checkpoints carry their own copy)
    OUT/profile/             ``--profile-every`` rows, a dardiag.store run directory
    OUT/_replaced/           only while a ``--force`` run is unfinished: the run it replaces, put back
                             if the new run fails with an error, deleted when it completes

The rules (``plan``), as for ``dardiag profile``: the same command run again continues an unfinished
run (``--resume`` is accepted and changes nothing) and leaves a complete one alone; other settings are
refused unless ``--force``; ``--force`` sets the old run aside in ``OUT/_replaced`` until the new one
completes, and after Ctrl-C of a forced run the same command continues the new run. Everything else in
OUT is the user's and is never touched, not even by ``--force``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dardiag import replaced
from dardiag.atomic import atomic_write
from dardiag.errors import DardiagError

LAST = "last.pt"
LOSS_LOG = "loss.csv"
CONFIG_JSON = "train_config.json"
PROFILE_DIR = "profile"
REPLACED = replaced.REPLACED
LOSS_COLUMNS = ("step", "loss", "lr", "seconds")
_CKPT = re.compile(r"^ckpt_\d{7}\.pt$")
# atomic_write leaves temp files named ".{name}.<random>.tmp" beside the target
_TEMP = re.compile(r"^\.(last\.pt|ckpt_\d{7}\.pt|loss\.csv|train_config\.json)\..+$")
_PROFILE_OWN = re.compile(r"^(_run\.json|_figures|_work|part-.+\.parquet|\..+\.tmp)$")
_STAGING = replaced.STAGING


def ckpt_path(out: Path, step: int) -> Path:
    return out / f"ckpt_{step:07d}.pt"


def own_files(out: Path) -> list[Path]:
    """The entries of OUT that a training run wrote (what ``--force`` sets aside), ``_replaced`` aside."""
    if not out.is_dir():
        return []
    names = {LAST, LOSS_LOG, CONFIG_JSON}
    own = [p for p in out.iterdir() if p.name in names or _CKPT.match(p.name) or _TEMP.match(p.name)]
    prof = out / PROFILE_DIR
    if prof.is_dir() and (prof / "_run.json").exists():
        own.append(prof)
    return sorted(own)


def is_written_by_training(out: Path, path: Path) -> bool:
    """Whether ``path`` is (or will be) a file of the training run in ``out``: a checkpoint, the log, the
    config, anything under ``OUT/profile`` or ``OUT/_replaced``. ``--export`` must not land there."""
    out, path = out.resolve(), path.resolve()
    if path.parent == out:
        name = path.name
        return (name in {LAST, LOSS_LOG, CONFIG_JSON, PROFILE_DIR, REPLACED, _STAGING} or bool(_CKPT.match(name))
                or bool(_TEMP.match(name)))
    return any(path.is_relative_to(out / d) for d in (PROFILE_DIR, REPLACED, _STAGING))


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
        raise DardiagError(f"{flag} {path} is under {base}, which is a file, not a directory; choose another path")
    try:  # os.access says yes to root everywhere, also on read-only mounts and /sys: try it
        fd, probe = tempfile.mkstemp(prefix=".dardiag-write-test.", dir=base)
    except OSError as e:
        raise DardiagError(f"{flag} {path}: cannot write into {base} ({e.strerror or e}); choose a writable "
                           "location") from None
    os.close(fd)
    os.unlink(probe)


# ----------------------------------------------------------------------------- the plan


@dataclass
class Current:
    """What OUT (or ``OUT/_replaced``) holds: kind "none" | "stub" (files, no checkpoint) | "orphans"
    (ckpt_*.pt but no last.pt) | "run" (a readable last.pt) | "damaged" (an unreadable last.pt)."""

    kind: str
    files: list[Path] = field(default_factory=list)
    obj: dict | None = None  # the loaded last.pt
    config: dict | None = None  # its stored TrainConfig
    step: int = 0
    error: DardiagError | None = None

    @property
    def complete(self) -> bool:
        return self.kind == "run" and self.step >= int(self.config.get("steps", 0))


def _current(out: Path, read_last: Callable) -> Current:
    files = own_files(out)
    if not files:
        return Current("none")
    if not (out / LAST).exists():
        kind = "orphans" if any(_CKPT.match(p.name) for p in files) else "stub"
        return Current(kind, files)
    try:
        obj, config, step = read_last(out / LAST)
    except DardiagError as e:
        return Current("damaged", files, error=e)
    return Current("run", files, obj, config, step)


@dataclass
class Plan:
    """What a ``train`` call does with OUT; ``plan`` decides it, ``apply`` carries it out."""

    out: Path
    resume_from: Path | None = None  # OUT/last.pt when the run continues
    stored: dict | None = None  # the loaded last.pt
    step: int = 0  # its step (0: a fresh run)
    complete: bool = False  # the run in OUT already has --steps steps: nothing to do
    replacing: bool = False  # OUT/_replaced holds the run this one replaces
    delete: list[Path] = field(default_factory=list)  # own files of a run given up (apply)
    set_aside: list[Path] = field(default_factory=list)  # own files of the run --force replaces (apply)


def plan(out: Path, config, *, read_last: Callable, diff: Callable[[dict], list[str]]) -> Plan:
    """Decide what to do with ``out`` for ``config`` (``.steps``, ``.force``, ``.resume``).

    ``read_last(path) -> (checkpoint dict, stored config dict, step)`` raises DardiagError for a
    damaged file; ``diff(stored config) -> ["--lr: stored 0.001, now 0.002", ...]``. Nothing in OUT
    changes here, except that the run an interrupted ``--force`` replaced is put back when the forced
    run never reached a checkpoint and this command does not force (it was nothing to continue).
    """
    check_writable(out, "--out", directory=True)
    keep = out / REPLACED
    replacing = keep.is_dir()
    cur = _current(out, read_last)
    if config.force:
        if cur.kind == "run" and replacing and not diff(cur.config) and cur.step < config.steps:
            # the same --force command after Ctrl-C: continue the new run, keep the old one aside
            return Plan(out, out / LAST, cur.obj, cur.step, replacing=True)
        if cur.kind == "none":
            return Plan(out, replacing=replacing)
        if replacing and not cur.complete:  # an unfinished forced run: give it up, keep the older one
            return Plan(out, replacing=True, delete=cur.files)
        # (a complete run beside _replaced: its finish was interrupted; the older run can go)
        return Plan(out, replacing=True, set_aside=cur.files,
                    delete=[keep] if replacing else [])

    if replacing and cur.kind in ("none", "stub"):
        _put_back(out, cur.files)  # Ctrl-C of a --force run before its first checkpoint
        replacing, cur = False, _current(out, read_last)
    if cur.kind == "none":
        return Plan(out, replacing=replacing)
    if cur.kind == "stub":  # killed or failed before its first checkpoint: nothing to continue
        return Plan(out, replacing=replacing, delete=cur.files)
    if cur.kind == "orphans":
        shown = ", ".join(p.name for p in cur.files if _CKPT.match(p.name))
        raise DardiagError(f"{out} holds checkpoints ({_short(shown)}) but no {LAST}; copy the newest ckpt_*.pt "
                           f"to {out / LAST} to continue from it, or pass --force to start over")
    if cur.kind == "damaged":
        raise cur.error
    differ = diff(cur.config)
    if differ:
        shown = "; ".join(differ[:4]) + (f"; and {len(differ) - 4} more" if len(differ) > 4 else "")
        if replacing:
            raise DardiagError(
                f"{out} holds an unfinished --force run (step {cur.step} of {cur.config.get('steps')}) with other "
                f"settings ({shown}); the run it replaces waits in {keep} (put back if the new run fails, deleted "
                "when it completes): pass the same settings to continue the new run, or move the files in "
                f"{keep} back into {out} to keep the old one")
        what = (f"cannot resume {out}: settings differ from the stored run" if config.resume else
                f"{out} holds " + ("a complete" if cur.complete else
                                   f"an unfinished (step {cur.step} of {cur.config.get('steps')})")
                + " training run with other settings")
        same = "" if cur.complete else "pass the same settings to continue it, "
        raise DardiagError(f"{what} ({shown}); {same}pass --force to start over (the old run is kept until the "
                           "new one completes), or choose another --out")
    complete = cur.step >= config.steps
    return Plan(out, None if complete else out / LAST, cur.obj, cur.step, complete=complete, replacing=replacing)


def apply(p: Plan) -> None:
    """Carry out ``p``: delete what it gives up, move the replaced run into ``OUT/_replaced``, create OUT."""
    for f in p.delete:
        _remove(f)
    if p.set_aside:
        for f in p.set_aside:
            if _TEMP.match(f.name):
                f.unlink(missing_ok=True)
        replaced.set_aside(p.out, [f for f in p.set_aside if not _TEMP.match(f.name)], move=_move)
    try:
        p.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DardiagError(f"cannot create {p.out}: {e.strerror or e}; choose a writable directory for --out") from None


def finish(p: Plan) -> None:
    """The run completed: the run it replaced is deleted only now."""
    replaced.discard(p.out)


def put_back(p: Plan) -> bool:
    """The run failed with an error: drop its files and restore the run it replaced, if any."""
    if not p.replacing or not (p.out / REPLACED).is_dir():
        return False
    _put_back(p.out, own_files(p.out))
    return True


def _put_back(out: Path, current: list[Path]) -> None:
    replaced.put_back(out, current, vouching=LAST, remove=_remove, move=_move)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _move(src: Path, dest: Path) -> None:
    """Move a file, or OUT/profile (only the store's own entries: a user's files there stay)."""
    if src.is_dir() and src.name == PROFILE_DIR:
        dest.mkdir(exist_ok=True)
        for q in src.iterdir():
            if _PROFILE_OWN.match(q.name):
                os.replace(q, dest / q.name)
        if not any(src.iterdir()):
            src.rmdir()
    else:
        os.replace(src, dest)


def _remove(p: Path) -> None:
    if p.name == PROFILE_DIR and p.is_dir():  # OUT/profile: only the store's own entries, then the folder
        for q in p.iterdir():
            if _PROFILE_OWN.match(q.name):
                replaced.remove_tree(q)
        if not any(p.iterdir()):
            p.rmdir()
    else:
        replaced.remove_tree(p)


def write_config(out: Path, config: dict) -> None:
    _atomic_text(out / CONFIG_JSON, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


class LossLog:
    """Appends one CSV row per logged step; on resume it first drops rows past the restored step, so
    the log of a resumed run reads like the log of an uninterrupted one."""

    def __init__(self, out: Path, *, keep_until: int):
        self.path = out / LOSS_LOG
        rows = []
        if keep_until > 0 and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        lines = [",".join(LOSS_COLUMNS)] + [",".join(r[c] for c in LOSS_COLUMNS) for r in rows]
        _atomic_text(self.path, "\n".join(lines) + "\n")
        self._f = open(self.path, "a", newline="")

    def write(self, step: int, loss: float, lr: float, seconds: float) -> None:
        self._f.write(f"{step},{loss:.6g},{lr:.6g},{seconds:.3f}\n")
        self._f.flush()  # a killed run keeps every step it finished

    def close(self) -> None:
        self._f.close()
