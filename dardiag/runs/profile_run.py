"""A profile run directory: one parquet part per finished unit of work, and ``read_profile``.

``RunDir`` keeps ``OUT/_run.json`` (metadata, status, completed units) and writes each unit's rows as
one atomic part; its start, continue, ``--force`` and abandon follow the one lifecycle of
:mod:`dardiag.runs.lifecycle`. Layout: :mod:`dardiag.runs.layout`. Torch-free.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa

from dardiag.atomic import atomic_write
from dardiag.errors import DardiagError
from dardiag.runs import lifecycle
from dardiag.runs.layout import (
    FIGURES_DIRNAME,
    INPUTS_DIRNAME,
    PARTIAL_PREFIX,
    PART_PREFIX,
    PART_SUFFIX,
    PROFILE_OWN,
    PROFILE_RESULTS,
    PROFILE_TEMP,
    RUN_FILE,
    WORK_DIRNAME,
)
from dardiag.analysis.sanity import attach_notices
from dardiag.store import METADATA_KEY, conform, dumps, read_parts, to_pandas, to_table, write_part
from dardiag.store.parquet import check_name, metadata_of

_RUN_FORMAT = "dardiag-run"
_RUN_VERSION = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: dict) -> None:
    text = dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()), overwrite=True)


def _read_run_json(path: Path) -> dict:
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:  # binary garbage (a disk error, another program's file): not text at all
        raise DardiagError(f"{path} is damaged (not text: it holds binary data); restore it from a copy, or "
                           "start the run over with `dardiag profile ... --force`") from None
    except (OSError, ValueError) as e:
        raise DardiagError(f"{path} is not a readable dardiag run file: {e}") from None
    if not isinstance(state, dict) or state.get("format") != _RUN_FORMAT:
        raise DardiagError(f"{path} is not a dardiag run file (format is not {_RUN_FORMAT!r})")
    if not isinstance(state.get("metadata"), dict) or not isinstance(state.get("completed"), list):
        raise DardiagError(f"{path} is damaged: 'metadata' or 'completed' missing")
    return state


def _damage(part: Path) -> str | None:
    """What is wrong with a part file, or None when it reads in full."""
    try:
        read_parts([part])
    except DardiagError as e:
        return str(e).removeprefix(f"cannot read {part}: ")
    return None


def _of_training(metadata: dict) -> bool:
    """``OUT/profile`` of ``train --profile-every``: a step trained past cannot be profiled again."""
    return metadata.get("source") == "dardiag train --profile-every"


def _repair(metadata: dict) -> str:
    if _of_training(metadata):
        return "delete it to read the other steps (that step's rows are lost)"
    return ("run the command that made the run again (`dardiag profile` or `demo`, the same arguments): it "
            "computes damaged parts again")


def _partial_levels(out: Path) -> int:
    """Work kept outside finished units: units stopped part-way, generated inputs already drawn."""
    return len(list((out / WORK_DIRNAME).glob(f"{PARTIAL_PREFIX}*.pt"))) + len(list((out / INPUTS_DIRNAME).glob("*.pt")))


def _record(path: Path) -> lifecycle.Record:
    state = _read_run_json(path)
    done, complete = len(state["completed"]), state.get("status") == "complete"
    # a unit stopped part-way (OUT/_work/partial-*.pt) and drawn inputs are progress too: continued, not dropped
    half = _partial_levels(path.parent) if not complete else 0
    describe = "a complete profile run" if complete else f"an unfinished profile run ({done} units finished)"
    return lifecycle.Record(state["metadata"].get("config"), done + half, complete, describe, data=state)


PROFILE = lifecycle.Kind(
    record=RUN_FILE, own=PROFILE_OWN, results=PROFILE_RESULTS, exclusive=True,
    read=_record, orphans_hint="read them with dardiag.read_profile, then move them away",
)


def _part_name(unit: str) -> str:
    """File stem of a unit's shard: ``part-<unit>`` (unit names must be file-name safe)."""
    check_name(unit, "unit name")
    return PART_PREFIX + unit


class RunDir:
    """An output directory being filled with one parquet shard per completed unit of work.

    >>> run = RunDir.create(out, {"config": cfg}, resume=True)
    >>> for unit in units:
    ...     if unit not in run.completed:
    ...         run.mark_done(unit, rows)
    >>> run.finish()
    """

    def __init__(self, path: Path, state: dict):
        self.path = Path(path)
        self._state = state
        self.resumed_from: int | None = None  # units already done when an existing run was resumed
        # what create() did with OUT: {"action": fresh | continue | complete, "dropped_empty": bool,
        # "replaced": the replaced run's description or None}
        self.started: dict | None = None

    # ------------------------------------------------------------------ properties
    @property
    def metadata(self) -> dict:
        return self._state["metadata"]

    @property
    def status(self) -> str:
        return self._state["status"]

    @property
    def completed(self) -> frozenset[str]:
        """Names of the units whose shard is on disk."""
        return frozenset(self._state["completed"])

    @property
    def figures_dir(self) -> Path:
        """Where figures for this run go (``OUT/_figures``; hidden from parquet readers)."""
        return self.path / FIGURES_DIRNAME

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, status={self.status!r}, completed={len(self.completed)})"

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, out: str | os.PathLike, metadata: dict, *, force: bool = False, resume: bool = False) -> "RunDir":
        """Start, continue or replace the run in ``out`` (the lifecycle's plan) and return it.

        The same ``metadata["config"]`` continues the run there (``.completed`` lists its finished
        units; a complete run has nothing left to do); another config is refused unless ``force``,
        which keeps the old run in ``OUT/_replaced`` until this one :meth:`finish`-es (or puts it back
        on :meth:`abandon`). A non-empty directory that is not a dardiag run is always refused.
        """
        if not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
        metadata = json.loads(dumps(metadata))  # normalise (tuples -> lists, Paths -> str)
        out = Path(out)
        p = lifecycle.plan(out, PROFILE, diff=lambda stored: lifecycle.config_diff(stored, metadata.get("config")),
                           force=force, resume=resume)
        lifecycle.apply(p)
        if p.action == "fresh":
            if not os.access(out, os.W_OK | os.X_OK):
                raise DardiagError(f"cannot write into {out}: permission denied; choose a writable directory for --out")
            run = cls(out, {"format": _RUN_FORMAT, "version": _RUN_VERSION, "status": "running",
                            "metadata": metadata, "completed": [], "parts": {}, "created": _now(), "updated": _now()})
        else:
            run = cls(out, p.record.data)
            if run._clean_for_resume() and p.action == "complete":
                p.action = "continue"  # a damaged part of a complete run: computed again now
            run.resumed_from = len(run.completed)
            run._state["resumed"] = run._state.get("resumed", 0) + 1
            run._state["updated"] = _now()
        replaced = p.found.record.describe if p.set_aside and p.found.record is not None else None
        run.started = {"action": p.action, "dropped_empty": p.action == "fresh" and p.found.state == "stub",
                       "replaced": replaced or ("a run" if p.set_aside else None)}
        run._save()
        return run

    def abandon(self) -> bool:
        """Give up an unfinished run after a failure: put back the run a ``force`` replaced, if any (True);
        else drop the run if it holds nothing yet (so a corrected command needs no ``force``)."""
        if self.status != "complete":
            return lifecycle.abandon(self.path, PROFILE,
                                     progress=len(self._state["completed"]) + _partial_levels(self.path))
        return False

    def _clean_for_resume(self) -> list[str]:
        """Forget units whose shard vanished or is damaged (a disk error, a copy cut short: it would fail
        every read of the run); delete shards and temp files no unit claims (a crash between writing a
        shard and recording it), so that those units are simply recomputed. -> the units forgotten."""
        parts = self._state.setdefault("parts", {})
        keep = []
        for u in self._state["completed"]:
            part = self.path / parts.get(u, _part_name(u) + PART_SUFFIX)
            damage = _damage(part) if part.exists() else "missing"
            if damage is None:
                keep.append(u)
            elif damage != "missing":
                then = "that step's rows are lost" if _of_training(self.metadata) else f"{u!r} is computed again"
                warnings.warn(f"{part} is damaged ({damage}); deleted, {then}", stacklevel=2)
        dropped = [u for u in self._state["completed"] if u not in keep]
        if len(keep) < len(self._state["completed"]):
            self._state["status"] = "running"
        self._state["completed"] = keep
        self._state["parts"] = {u: parts.get(u, _part_name(u) + PART_SUFFIX) for u in keep}
        claimed = set(self._state["parts"].values())
        for p in self.path.iterdir():
            orphan = PROFILE_RESULTS.match(p.name) and p.name not in claimed
            if orphan or PROFILE_TEMP.match(p.name):
                p.unlink()
        return dropped

    def _save(self) -> None:
        _write_json(self.path / RUN_FILE, self._state)

    # ------------------------------------------------------------------ progress
    def mark_done(self, unit: str, table: pa.Table | pd.DataFrame | list[dict]) -> Path:
        """Write ``unit``'s shard atomically, then record the unit as completed in ``_run.json``.

        ``table`` may be a SCHEMA table or rows for :func:`~dardiag.store.to_table`; its metadata is
        replaced by the run's so every shard carries the same metadata.
        """
        name = _part_name(unit)
        if unit in self._state["completed"]:
            raise DardiagError(f"unit {unit!r} is already completed in {self.path}")
        if not isinstance(table, pa.Table):
            table = to_table(table, self.metadata)
        table = conform(table).replace_schema_metadata({METADATA_KEY: dumps(self.metadata, sort_keys=True).encode()})
        path = write_part(self.path, name, table)
        self._state["completed"].append(unit)
        self._state.setdefault("parts", {})[unit] = path.name
        self._state["updated"] = _now()
        self._save()
        return path

    def forget(self, unit: str) -> None:
        """Drop a completed unit (its shard is deleted) so that it is computed again."""
        if unit not in self._state["completed"]:
            return
        self._state["completed"].remove(unit)
        name = self._state.setdefault("parts", {}).pop(unit, _part_name(unit) + PART_SUFFIX)
        self._state["status"] = "running"
        self._save()
        (self.path / name).unlink(missing_ok=True)

    def finish(self) -> None:
        """Mark the run complete; the run a ``force`` replaced is deleted only now, and the sweep's scratch
        (``OUT/_work``: probe features, generated inputs, half-done levels) too: nothing reads it again."""
        self._state["status"] = "complete"
        self._state["updated"] = self._state["finished"] = _now()
        self._save()
        lifecycle.finish(self.path)
        shutil.rmtree(self.path / WORK_DIRNAME, ignore_errors=True)


# ============================================================================ reading


def read_profile(path: str | os.PathLike) -> pd.DataFrame:
    """Read a run directory (or a single ``.parquet`` part) into one long-form DataFrame.

    ``df.attrs["dardiag"]`` holds the run metadata (from ``_run.json``, else the parquet schema
    metadata); ``df.attrs["dardiag_status"]`` the run status when known; ``df.attrs["dardiag_notices"]``
    the sanity notices (:mod:`dardiag.analysis.sanity`). Integer id columns are pandas ``Int64`` (nullable).
    Raises a one-line :class:`DardiagError` if ``path`` is missing, is not a run directory or holds no
    rows.
    """
    path = Path(path)
    status = None
    if not path.exists():
        raise DardiagError(f"{path} does not exist")
    if path.is_file():
        if path.suffix != PART_SUFFIX:
            raise DardiagError(f"{path} is not a .parquet file or a dardiag run directory")
        table = read_parts([path])
        metadata = metadata_of(table.schema)
    else:
        run_file = path / RUN_FILE
        if run_file.exists():
            state = _read_run_json(run_file)
            parts = state.get("parts") or {}
            files = [path / parts.get(u, _part_name(u) + PART_SUFFIX) for u in state["completed"]]
            lost = [f.name for f in files if not f.exists()]
            if lost:
                raise DardiagError(f"{path} is damaged: recorded part(s) {lost[:3]} are missing")
            metadata, status = state["metadata"], state.get("status")
        else:
            files = sorted(path.glob(f"{PART_PREFIX}*{PART_SUFFIX}"))
            if not files:
                raise DardiagError(f"{path} is not a dardiag run directory (no {RUN_FILE} and no part files)")
            metadata = None
        try:
            table = read_parts(files)
        except DardiagError as e:
            if metadata is None:
                raise
            raise DardiagError(f"{e}; this part of the run is damaged: {_repair(metadata)}") from None
        if metadata is None:
            metadata = metadata_of(table.schema)
    if table.num_rows == 0:
        extra = f" (run status: {status})" if status else ""
        raise DardiagError(f"{path} holds no rows{extra}")
    df = to_pandas(table.replace_schema_metadata(None))
    df.attrs["dardiag"] = metadata
    if status is not None:
        df.attrs["dardiag_status"] = status
    return attach_notices(df)  # df.attrs["dardiag_notices"]: what says the model is broken or untrained
