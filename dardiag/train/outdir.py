"""What a training run keeps in OUT (names: ``dardiag.runs.layout``) and how ``train`` uses the one
run-directory lifecycle (``dardiag.runs.lifecycle``).

As for ``dardiag profile``: the same command run again continues an unfinished run (``--resume`` is
accepted and changes nothing) and leaves a complete one alone; other settings are refused unless
``--force``; ``--force`` sets the old run aside in ``OUT/_replaced`` until the new one completes, and
after Ctrl-C of a forced run the same command continues the new run. Everything else in OUT is the
user's and is never touched, not even by ``--force``. A training run's record is ``last.pt``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

from dardiag.atomic import atomic_write, write_failed
from dardiag.errors import DardiagError
from dardiag.runs import lifecycle
from dardiag.runs.layout import (
    CKPT,
    CONFIG_JSON,
    LAST,
    LOSS_LOG,
    PROFILE_DIR,
    REPLACED,
    RUN_FILE,
    STAGING,
    TRAIN_OWN,
    TRAIN_TEMP,
    ckpt_name,
)
from dardiag.runs.profile_run import PROFILE

LOSS_COLUMNS = ("step", "loss", "lr", "seconds")
check_writable = lifecycle.check_writable


def ckpt_path(out: Path, step: int) -> Path:
    return out / ckpt_name(step)


def is_written_by_training(out: Path, path: Path) -> bool:
    """Whether ``path`` is (or will be) a file of the training run in ``out``: a checkpoint, the log, the
    config, anything under ``OUT/profile`` or ``OUT/_replaced``. ``--export`` must not land there."""
    out, path = out.resolve(), path.resolve()
    if path.parent == out:
        name = path.name
        return (name in {LAST, LOSS_LOG, CONFIG_JSON, PROFILE_DIR, REPLACED, STAGING} or bool(CKPT.match(name))
                or bool(TRAIN_TEMP.match(name)))
    return any(path.is_relative_to(out / d) for d in (PROFILE_DIR, REPLACED, STAGING))


def kind(steps: int, read_last: Callable) -> lifecycle.Kind:
    """The training kind of run, complete once its last.pt reached ``steps``.

    ``read_last(path) -> (checkpoint dict, stored config dict, step)`` raises DardiagError for a
    damaged file."""
    def read(path: Path) -> lifecycle.Record:
        obj, stored, step = read_last(path)
        complete = step >= steps
        describe = ("a complete training run" if complete else
                    f"an unfinished (step {step} of {stored.get('steps')}) training run")
        return lifecycle.Record(stored, step, complete, describe, data=obj)

    return lifecycle.Kind(
        record=LAST, own=TRAIN_OWN, results=CKPT, exclusive=False, read=read,
        orphans_hint=f"copy the newest ckpt_*.pt to {LAST} to continue from it", nested=((PROFILE_DIR, PROFILE),),
    )


def plan(out: Path, config, *, read_last: Callable, diff: Callable[[dict], list[str]]) -> lifecycle.Plan:
    """Decide what ``train(config)`` does with ``out`` (``config``: ``.steps``, ``.force``, ``.resume``)."""
    if (Path(out) / RUN_FILE).exists():  # checkpoints beside its parts would end both runs (not even --force)
        raise DardiagError(f"--out {out} is a profile run (it holds {RUN_FILE}); a training run needs a directory "
                           "of its own: choose another --out")
    return lifecycle.plan(out, kind(config.steps, read_last), diff=diff, force=config.force, resume=config.resume)


apply = lifecycle.apply


def finish(p: lifecycle.Plan) -> None:
    """The run completed: the run it replaced is deleted only now."""
    lifecycle.finish(p.out)


def put_back(p: lifecycle.Plan, *, step: int) -> bool:
    """The run failed with an error after reaching checkpoint ``step`` (0: none): restore the run it
    replaced, if any (True), else drop a run that saved nothing."""
    return lifecycle.abandon(p.out, p.kind, progress=step)


def write_config(out: Path, config: dict) -> None:
    _atomic_text(out / CONFIG_JSON, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def _whole_row(row: dict) -> bool:
    """A row written in full (a full disk or a kill can cut the last one short)."""
    return all(row.get(c) for c in LOSS_COLUMNS) and row["step"].isdigit() and None not in row


class LossLog:
    """Appends one CSV row per logged step; on resume it first drops rows past the restored step, so
    the log of a resumed run reads like the log of an uninterrupted one."""

    def __init__(self, out: Path, *, keep_until: int):
        self.path = out / LOSS_LOG
        rows = []
        if keep_until > 0 and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if _whole_row(r) and int(r["step"]) <= keep_until]
        lines = [",".join(LOSS_COLUMNS)] + [",".join(r[c] for c in LOSS_COLUMNS) for r in rows]
        _atomic_text(self.path, "\n".join(lines) + "\n")
        self._f = open(self.path, "a", newline="")

    def write(self, step: int, loss: float, lr: float, seconds: float) -> None:
        try:
            self._f.write(f"{step},{loss:.6g},{lr:.6g},{seconds:.3f}\n")
            self._f.flush()  # a killed run keeps every step it finished
        except OSError as e:  # a full disk: the checkpoints so far are intact, the log is cut back on resume
            raise write_failed(self.path, e) from None

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:  # a row that could not be flushed: already said by write(), and resume rewrites the log
            pass
