"""The files a training run owns in OUT, and the rules for starting, replacing and resuming one.

    OUT/ckpt_{step:07d}.pt   dardiag checkpoint (model, EMA, optimizer, training config) every K steps
    OUT/last.pt              the newest of them; ``--resume`` continues from it
    OUT/loss.csv             step, loss, lr, seconds (wall clock since this process started)
    OUT/train_config.json    the TrainConfig, for people (the checkpoints carry their own copy)
    OUT/profile/             ``--profile-every`` rows, a dardiag.store run directory

Everything else in OUT is the user's and is never touched, not even by ``--force``.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

from dardiag.atomic import atomic_write
from dardiag.errors import DardiagError

LAST = "last.pt"
LOSS_LOG = "loss.csv"
CONFIG_JSON = "train_config.json"
PROFILE_DIR = "profile"
LOSS_COLUMNS = ("step", "loss", "lr", "seconds")
_CKPT = re.compile(r"^ckpt_\d{7}\.pt$")
# atomic_write leaves temp files named ".{name}.<random>.tmp" beside the target
_TEMP = re.compile(r"^\.(last\.pt|ckpt_\d{7}\.pt|loss\.csv|train_config\.json)\..+$")
_PROFILE_OWN = re.compile(r"^(_run\.json|_figures|part-.+\.parquet|\..+\.tmp)$")


def ckpt_path(out: Path, step: int) -> Path:
    return out / f"ckpt_{step:07d}.pt"


def own_files(out: Path) -> list[Path]:
    """The entries of OUT that a training run wrote (what ``--force`` may delete)."""
    if not out.is_dir():
        return []
    names = {LAST, LOSS_LOG, CONFIG_JSON}
    own = [p for p in out.iterdir() if p.name in names or _CKPT.match(p.name) or _TEMP.match(p.name)]
    prof = out / PROFILE_DIR
    if prof.is_dir() and (prof / "_run.json").exists():
        own.append(prof)
    return sorted(own)


def prepare(out: Path, *, resume: bool, force: bool) -> Path | None:
    """Make OUT ready; return ``OUT/last.pt`` when a run should resume from it, else None.

    A run already in OUT is an error unless ``resume`` (continue it) or ``force`` (delete only its files).
    ``resume`` with nothing to resume starts a fresh run, so one command works before and after a kill.
    """
    if out.exists() and not out.is_dir():
        raise DardiagError(f"{out} exists and is not a directory")
    existing = own_files(out)
    if existing and not (resume or force):
        shown = ", ".join(p.name for p in existing[:3])
        raise DardiagError(
            f"{out} already holds a training run ({shown}); pass --resume to continue it or --force to replace it"
        )
    if force:
        for p in existing:
            _remove(p)
    out.mkdir(parents=True, exist_ok=True)
    last = out / LAST
    if resume and last.exists():
        return last
    if resume and existing:
        # files but no last.pt: a run killed before its first save; nothing to continue, so start over
        for p in existing:
            _remove(p)
    return None


def _remove(p: Path) -> None:
    if p.is_dir():  # OUT/profile: only the store's own entries, then the folder if that emptied it
        for q in p.iterdir():
            if _PROFILE_OWN.match(q.name):
                shutil.rmtree(q) if q.is_dir() else q.unlink()
        if not any(p.iterdir()):
            p.rmdir()
    else:
        p.unlink(missing_ok=True)


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
