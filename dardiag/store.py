"""The one table dardiag writes: a long-form parquet schema, atomic parts and run directories.

Every number the profiler measures is one row of :data:`SCHEMA`: *which* model and checkpoint, *which*
metric at *which* site / block / sublayer / source / noise level, the ``value`` and how many images it
averages. Plots pivot from this table; nothing else is stored (no pickles, no ad-hoc dicts). This
module never imports torch.

Index conventions (docs: ``/work/shared/design/diagnostics.md``):

- ``block`` k in 0..D: the state ``z_k`` that enters block k+1; ``0`` is the token embedding.
- ``sublayer`` l in 1..2D: sublayer input ``h_l`` / output ``v_l``; ``2D + 1`` is the final aggregator.
- ``source`` i in 0..2D: routing source; ``0`` is the embedding, i >= 1 the output of sublayer i.
- ``noise_level`` in [0, 1], **1 = pure noise**; ``t_native`` is the family's own timestep.
- ``site``: ``"z"`` block state, ``"h"`` sublayer input, ``"v"`` sublayer output, ``"x_t"`` the raw
  noisy input, ``"alpha"`` the DAR router.

Metric names (the ``metric`` column) and the index columns each one fills:

==================  ===========================  =================================================
metric              filled index columns         meaning
==================  ===========================  =================================================
act_rms             site z, block, noise_level   mean over (image, token) of the channel RMS of z_k
grad_rms            site z, block, noise_level   same statistic of dL/dz_k (scales with 1/B: see
                                                 ``batch_size``)
cos_prev            site z, block, noise_level   mean over (image, token) of cos(z_{k-1}, z_k), k>=1
cka                 site z, block, other_block,  unbiased minibatch linear CKA(z_block, z_other)
                    noise_level, cka_rows        (Nguyen et al. 2021); may be negative; cka_rows says
                                                 whether tokens or images were the examples
h_rms               site h, sublayer,            channel RMS of the sublayer input h_l
                    noise_level
v_rms               site v, sublayer,            channel RMS of the (gated) sublayer output v_l
                    noise_level
route_alpha         site alpha, sublayer,        DAR weight alpha_{source -> sublayer}, mean over
                    source, noise_level          images and tokens
route_entropy       site alpha, sublayer,        entropy (nats) of the DAR weights over sources
                    noise_level
route_importance    site h, sublayer, source,    residual models: counterfactual gate gradient
                    noise_level                  dL/dg_{source -> sublayer} (signed)
probe_r2            site z + block, or site h +  held-out R^2 of a ridge probe predicting the noise
                    sublayer, or site x_t alone  level from the mean-pooled state; noise_level null
token_act_rms       site z, block, noise_level   per-token act_rms map in ``token_values``
                                                 (``value`` = its mean)
token_grad_rms      site z, block, noise_level   per-token grad_rms map in ``token_values``
loss                noise_level                  the family's simple denoising loss (mean MSE)
==================  ===========================  =================================================

Run directory layout (``OUT/``)::

    OUT/_run.json            run metadata, status "running" | "complete", completed units
    OUT/part-<unit>.parquet  one shard per completed unit of work, all in SCHEMA
    OUT/_figures/            rendered figures (the "_" keeps pyarrow from reading them as data)
    OUT/_work/               the sweep's scratch files (kept on resume, removed by force)
    OUT/_replaced/           only while a --force run is unfinished: the run it replaces, restored
                             if the new run fails, deleted when it completes

pyarrow skips names starting with ``_`` or ``.``, so ``pandas.read_parquet(OUT)`` returns the whole
table. Temporary files start with ``.`` and are renamed into place only once fsynced.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dardiag import replaced
from dardiag.atomic import atomic_write
from dardiag.errors import DardiagError

__all__ = [
    "SCHEMA",
    "METADATA_KEY",
    "METRICS",
    "REQUIRED_COLUMNS",
    "RUN_FILE",
    "FIGURES_DIRNAME",
    "WORK_DIRNAME",
    "to_table",
    "write_part",
    "read_profile",
    "RunDir",
]

# ============================================================================ schema

SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # display name
        pa.field("routing", pa.string(), nullable=False),  # "residual", "dar-static_t-c4", ...
        pa.field("family", pa.string(), nullable=False),  # "dit", "sit", "repa", "diffusers-..."
        pa.field("checkpoint", pa.string(), nullable=False),  # path or name
        pa.field("step", pa.int64(), nullable=True),  # training step
        pa.field("metric", pa.string(), nullable=False),
        pa.field("site", pa.string(), nullable=True),  # "z", "h", "v", "x_t", "alpha"
        pa.field("block", pa.int64(), nullable=True),  # 0..D, 0 = embedding
        pa.field("other_block", pa.int64(), nullable=True),  # pairwise metrics (cka)
        pa.field("sublayer", pa.int64(), nullable=True),  # 1..2D, 2D+1 = final aggregator
        pa.field("source", pa.int64(), nullable=True),  # 0..2D routing source
        pa.field("noise_level", pa.float64(), nullable=True),  # 1 = pure noise
        pa.field("t_native", pa.float64(), nullable=True),
        pa.field("value", pa.float64(), nullable=False),  # NaN allowed, null not
        pa.field("n_samples", pa.int64(), nullable=False),  # images averaged
        pa.field("batch_size", pa.int64(), nullable=False),
        pa.field("token_values", pa.list_(pa.float32()), nullable=True),  # per-token map, flattened (T,)
        pa.field("cka_rows", pa.string(), nullable=True),  # cka only: "tokens" or "images" as examples
    ]
)

METADATA_KEY = b"dardiag"
REQUIRED_COLUMNS = tuple(f.name for f in SCHEMA if not f.nullable)

METRICS = {
    "act_rms": "mean over (image, token) of the channel RMS of z_k",
    "grad_rms": "mean over (image, token) of the channel RMS of dL/dz_k (scales with 1/B)",
    "cos_prev": "mean over (image, token) of cos(z_{k-1}, z_k)",
    "cka": "unbiased minibatch linear CKA(z_block, z_other_block)",
    "h_rms": "channel RMS of the sublayer input h_l",
    "v_rms": "channel RMS of the gated sublayer output v_l",
    "route_alpha": "DAR routing weight alpha_{source -> sublayer}",
    "route_entropy": "entropy (nats) of the DAR routing weights of a sublayer",
    "route_importance": "counterfactual gate gradient dL/dg_{source -> sublayer} (residual models)",
    "probe_r2": "held-out R^2 of a ridge probe predicting the noise level",
    "token_act_rms": "per-token act_rms map (token_values)",
    "token_grad_rms": "per-token grad_rms map (token_values)",
    "loss": "the family's simple denoising loss at the noise level",
}

RUN_FILE = "_run.json"
FIGURES_DIRNAME = "_figures"
WORK_DIRNAME = "_work"  # the sweep's scratch (e.g. cached probe features); dardiag's own
REPLACED_DIRNAME = replaced.REPLACED  # the previous run while --force builds its replacement
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
_RUN_FORMAT = "dardiag-run"
_RUN_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+,@-]*$")


# ============================================================================ rows -> table


def _column_to_array(name: str, field: pa.Field, col: pd.Series) -> pa.Array:
    """Convert one pandas column to an arrow array of ``field.type``; ValueError names the column."""
    t = field.type
    try:
        if pa.types.is_int64(t):
            return pa.array(_as_nullable_int(name, col), type=t, from_pandas=True)
        if pa.types.is_float64(t):
            if col.dtype == bool or (col.dtype == object and col.map(lambda v: isinstance(v, bool)).any()):
                raise ValueError(f"column {name!r} must be float64, got booleans")
            if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
                bad = col[col.map(lambda v: isinstance(v, (str, bytes)))]
                if len(bad):
                    raise ValueError(f"column {name!r} must be float64, got {bad.iloc[0]!r}")
            # `value` keeps NaN (a defined "not a number" result); nullable columns turn NaN into null.
            return pa.array(col, type=t, from_pandas=field.nullable)
        if pa.types.is_string(t):
            return pa.array(col, type=t, from_pandas=True)
        if pa.types.is_list(t):
            return pa.array([_as_token_list(v) for v in col.tolist()], type=t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError) as e:
        if isinstance(e, ValueError) and str(e).startswith("column "):
            raise
        raise ValueError(f"column {name!r} cannot be stored as {t}: {e}") from None
    raise AssertionError(f"unhandled type {t}")  # pragma: no cover - SCHEMA is fixed


def _as_nullable_int(name: str, col: pd.Series) -> pd.Series:
    """Integers with missing values arrive as float (NaN) or object columns: accept only whole numbers."""
    if pd.api.types.is_bool_dtype(col.dtype):
        raise ValueError(f"column {name!r} must be int64, got booleans")
    if pd.api.types.is_integer_dtype(col.dtype):
        return col.astype("Int64")
    if pd.api.types.is_float_dtype(col.dtype):
        vals = col.to_numpy(dtype=float, na_value=np.nan)
        finite = vals[~np.isnan(vals)]
        if not np.all(np.isfinite(finite)) or np.any(finite != np.round(finite)):
            bad = finite[(finite != np.round(finite)) | ~np.isfinite(finite)][0]
            raise ValueError(f"column {name!r} must be int64, got non-integer {bad!r}")
        return col.astype("Int64")
    out = []
    for v in col.tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif isinstance(v, (bool, np.bool_)):
            raise ValueError(f"column {name!r} must be int64, got boolean {v!r}")
        elif isinstance(v, (int, np.integer)):
            out.append(int(v))
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out.append(int(v))
        else:
            raise ValueError(f"column {name!r} must be int64, got {v!r} ({type(v).__name__})")
    return pd.Series(out, index=col.index, dtype="Int64")


def _as_token_list(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (str, bytes)):
        raise TypeError(f"expected a list of floats, got {v!r}")
    return np.asarray(v, dtype=np.float32).ravel()


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"metadata value {o!r} ({type(o).__name__}) is not JSON-serialisable")


def _dumps(obj: Any, **kw: Any) -> str:
    try:
        return json.dumps(obj, default=_json_default, **kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata is not JSON-serialisable: {e}") from None


def to_table(rows: pd.DataFrame | list[dict], metadata: dict) -> pa.Table:
    """Validate long-form rows and return them as a :data:`SCHEMA` table carrying ``metadata``.

    Missing nullable columns are filled with nulls; a missing required column, an unknown column or
    a value of the wrong type raises ``ValueError`` naming the column. NaN in a nullable numeric
    column means null; NaN in ``value`` is kept as NaN. ``metadata`` is stored as JSON under the
    schema metadata key ``b"dardiag"``.
    """
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if len(df) == 0 and len(df.columns) == 0:
        df = pd.DataFrame({name: [] for name in SCHEMA.names})
    unknown = [c for c in df.columns if c not in SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; the schema has {SCHEMA.names}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"required column(s) {missing} missing")
    df = df.reset_index(drop=True)
    arrays = []
    for field in SCHEMA:
        if field.name in df.columns:
            arr = _column_to_array(field.name, field, df[field.name])
            if not field.nullable and arr.null_count:
                raise ValueError(f"column {field.name!r} is required but has {arr.null_count} null value(s)")
        else:
            arr = pa.nulls(len(df), type=field.type)
        arrays.append(arr)
    meta = {METADATA_KEY: _dumps(metadata, sort_keys=True).encode()}
    return pa.Table.from_arrays(arrays, schema=SCHEMA.with_metadata(meta))


def _conform(table: pa.Table) -> pa.Table:
    """Check a table is in SCHEMA (ignoring metadata); raise ValueError saying how it differs."""
    if table.schema.names != SCHEMA.names:
        raise ValueError(f"table columns {table.schema.names} differ from SCHEMA {SCHEMA.names}; use to_table()")
    for got, want in zip(table.schema, SCHEMA):
        if got.type != want.type:
            raise ValueError(f"column {got.name!r} has type {got.type}, SCHEMA says {want.type}; use to_table()")
    return table


# ============================================================================ atomic files


def _check_name(name: str) -> None:
    if not _SAFE_NAME.match(name) or "/" in name or "\\" in name:
        raise ValueError(
            f"invalid part name {name!r}: use letters, digits and ._=+,@- and do not start with '.' or '_'"
        )




def write_part(out_dir: str | os.PathLike, name: str, table: pa.Table, *, overwrite: bool = False) -> Path:
    """Atomically write ``out_dir/{name}.parquet`` and return its path.

    The data goes to a temp file named ``.{name}.parquet.*.tmp`` in the same directory (readers skip
    names starting with "."), is fsynced, then renamed into place. An existing part is never replaced
    unless ``overwrite=True``; otherwise :class:`DardiagError` is raised.
    """
    _check_name(name)
    _conform(table)
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise DardiagError(f"{out_dir} is not a directory")
    dest = out_dir / f"{name}{PART_SUFFIX}"
    if dest.exists() and not overwrite:
        raise DardiagError(f"{dest} already exists; refusing to overwrite it")
    return atomic_write(dest, lambda f: pq.write_table(table, f), overwrite=overwrite)


def _write_json(path: Path, obj: dict) -> None:
    text = _dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()), overwrite=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ============================================================================ run directory


def _part_name(unit: str) -> str:
    """File stem of a unit's shard: ``part-<unit>`` (unit names must be file-name safe)."""
    if not isinstance(unit, str) or not _SAFE_NAME.match(unit):
        raise ValueError(
            f"invalid unit name {unit!r}: use letters, digits and ._=+,@- (no '/'), starting with a letter or digit"
        )
    return PART_PREFIX + unit


def _is_own_entry(name: str) -> bool:
    """Names dardiag writes in a run directory (and only those may be deleted)."""
    return (
        name == RUN_FILE
        or name in (FIGURES_DIRNAME, WORK_DIRNAME, REPLACED_DIRNAME)
        or (name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX))
        or _is_own_temp(name)
    )


def _is_own_temp(name: str) -> bool:
    return name.endswith(".tmp") and (
        name.startswith("." + PART_PREFIX) or name.startswith("." + RUN_FILE) or name == replaced.STAGING
    )


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _config_diff(stored: Any, given: Any, prefix: str = "config") -> list[str]:
    if isinstance(stored, dict) and isinstance(given, dict):
        out = []
        for k in sorted(set(stored) | set(given), key=str):
            if k not in given:
                out.append(f"{prefix}.{k} is missing now (stored {_short_repr(stored[k])})")
            elif k not in stored:
                out.append(f"{prefix}.{k} is new (now {_short_repr(given[k])})")
            else:
                out += _config_diff(stored[k], given[k], f"{prefix}.{k}")
        return out
    if isinstance(stored, list) and isinstance(given, list) and len(stored) == len(given):
        return [d for i, (a, b) in enumerate(zip(stored, given)) for d in _config_diff(a, b, f"{prefix}[{i}]")]
    return [] if stored == given else [f"{prefix}: stored {_short_repr(stored)}, now {_short_repr(given)}"]


class RunDir:
    """An output directory being filled with one parquet shard per completed unit of work.

    >>> run = RunDir.create(out, {"config": cfg}, resume=True)
    >>> for unit in units:
    ...     if unit not in run.completed:
    ...         run.mark_done(unit, to_table(rows, run.metadata))
    >>> run.finish()
    """

    def __init__(self, path: Path, state: dict):
        self.path = Path(path)
        self._state = state
        self.resumed_from: int | None = None  # units already done when an existing run was resumed

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
    def create(
        cls,
        out: str | os.PathLike,
        metadata: dict,
        *,
        force: bool = False,
        resume: bool = False,
    ) -> "RunDir":
        """Start (or resume) a run in ``out`` and return it; ``.completed`` lists the finished units.

        - ``out`` missing or empty: a fresh run.
        - ``out`` holds a run with the same ``metadata["config"]``: it is resumed (completed units are
          kept; a complete run has nothing left to do), with or without ``resume``.
        - ``out`` holds a run with another config: error unless ``force``. ``force`` moves dardiag's
          own files (part-*.parquet, _run.json, _figures/, _work/) into ``OUT/_replaced/``, where they
          stay until the new run :meth:`finish`-es (then deleted) or is :meth:`abandon`-ed (then
          restored); a new ``force`` while an earlier forced run is unfinished keeps the older
          ``_replaced`` and drops the unfinished one. Anything else in ``out`` is never touched.
        - ``out`` is a non-empty directory that is not a dardiag run: always refused.
        """
        if force and resume:
            raise DardiagError("pass either --force or --resume, not both")
        if not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
        metadata = json.loads(_dumps(metadata))  # normalise (tuples -> lists, Paths -> str)
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise DardiagError(f"{out} exists and is not a directory; choose a directory path for --out")
        entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        has_run = RUN_FILE in entries
        if entries and not has_run:
            foreign = [e for e in entries if not _is_own_entry(e)]
            if foreign or REPLACED_DIRNAME not in entries:
                shown = ", ".join(repr(e) for e in (foreign or entries)[:3])
                raise DardiagError(
                    f"{out} is a non-empty directory that is not a dardiag run (it holds {shown}); "
                    "choose a new or empty directory"
                )

        existing = cls._open(out) if has_run and not force else None
        if has_run and force:
            try:
                existing = cls._open(out)  # must at least be our format before moving anything
            except DardiagError as e:
                raise DardiagError(f"{e}; move it away or delete {out / RUN_FILE} yourself") from None
            if not (existing._replacing() and existing.status != "complete"
                    and not _config_diff(existing.metadata.get("config"), metadata.get("config"))):
                cls._set_aside(out, entries)
                existing = None
            # else: the same --force command after Ctrl-C continues the replacement it started
        if existing is not None:
            run = existing
            diff = _config_diff(run.metadata.get("config"), metadata.get("config"))
            if diff:
                what = "cannot resume" if resume else "will not overwrite"
                kept = f" (the run it replaces is kept in {out / REPLACED_DIRNAME})" if run._replacing() else ""
                raise DardiagError(
                    f"{what} {out}: it holds a run with another config{kept} ({'; '.join(diff[:3])}"
                    f"{'; ...' if len(diff) > 3 else ''}); pass --force to replace it, or choose another --out"
                )
            run._clean_for_resume()
            run.resumed_from = len(run.completed)
            run._state["status"] = "running" if run.status != "complete" else "complete"
            run._state["resumed"] = run._state.get("resumed", 0) + 1
            run._state["updated"] = _now()
            run._save()
            return run


        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DardiagError(f"cannot create {out}: {e.strerror or e}; choose a writable directory for --out") from None
        if not os.access(out, os.W_OK | os.X_OK):
            raise DardiagError(f"cannot write into {out}: permission denied; choose a writable directory for --out")
        state = {
            "format": _RUN_FORMAT,
            "version": _RUN_VERSION,
            "status": "running",
            "metadata": metadata,
            "completed": [],
            "parts": {},
            "created": _now(),
            "updated": _now(),
        }
        run = cls(out, state)
        run._save()
        return run

    @staticmethod
    def _set_aside(out: Path, entries: list[str]) -> None:
        """Move the run in ``out`` into ``out/_replaced`` (kept: an older one already there)."""
        own = [out / e for e in entries if _is_own_entry(e) and e not in (REPLACED_DIRNAME, replaced.STAGING)]
        if (out / REPLACED_DIRNAME).exists():  # an earlier --force never finished: it holds the last complete run
            for p in own:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            return
        replaced.set_aside(out, own)

    def _replacing(self) -> bool:
        """Whether this run is a ``force`` replacement still holding the run it replaces."""
        return (self.path / REPLACED_DIRNAME).is_dir()

    def abandon(self) -> None:
        """Give up an unfinished run after a failure: put back the run a ``force`` replaced, if any;
        else drop the run if it holds nothing yet (so a corrected command needs no ``force``)."""
        if self.status == "complete" or not (self._replacing() or not self._state["completed"]):
            return
        own = [p for p in self.path.iterdir() if _is_own_entry(p.name) and p.name != REPLACED_DIRNAME]
        if self._replacing():
            replaced.put_back(self.path, own, vouching=RUN_FILE)
        else:  # an empty directory is left: it is a valid --out for the next command
            for p in own:
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    @classmethod
    def _open(cls, out: Path) -> "RunDir":
        state = _read_run_json(out / RUN_FILE)
        return cls(out, state)

    def _clean_for_resume(self) -> None:
        """Forget units whose shard vanished; delete shards and temp files no unit claims (a crash
        between writing a shard and recording it) so the unit is simply recomputed."""
        parts = self._state.setdefault("parts", {})
        keep = [u for u in self._state["completed"] if (self.path / parts.get(u, _part_name(u) + PART_SUFFIX)).exists()]
        self._state["completed"] = keep
        self._state["parts"] = {u: parts.get(u, _part_name(u) + PART_SUFFIX) for u in keep}
        claimed = set(self._state["parts"].values())
        for p in self.path.iterdir():
            if (p.name.startswith(PART_PREFIX) and p.name.endswith(PART_SUFFIX) and p.name not in claimed) or _is_own_temp(
                p.name
            ):
                p.unlink()

    def _save(self) -> None:
        _write_json(self.path / RUN_FILE, self._state)

    # ------------------------------------------------------------------ progress
    def mark_done(self, unit: str, table: pa.Table | pd.DataFrame | list[dict]) -> Path:
        """Write ``unit``'s shard atomically, then record the unit as completed in ``_run.json``.

        ``table`` may be a SCHEMA table or rows for :func:`to_table`; its metadata is replaced by the
        run's so every shard carries the same metadata.
        """
        name = _part_name(unit)
        if unit in self._state["completed"]:
            raise DardiagError(f"unit {unit!r} is already completed in {self.path}")
        if not isinstance(table, pa.Table):
            table = to_table(table, self.metadata)
        table = _conform(table).replace_schema_metadata(
            {METADATA_KEY: _dumps(self.metadata, sort_keys=True).encode()}
        )
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
        """Mark the run complete; the run a ``force`` replaced is deleted only now."""
        self._state["status"] = "complete"
        self._state["updated"] = self._state["finished"] = _now()
        self._save()
        replaced.discard(self.path)


def _read_run_json(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DardiagError(f"{path} is not a readable dardiag run file: {e}") from None
    if not isinstance(state, dict) or state.get("format") != _RUN_FORMAT:
        raise DardiagError(f"{path} is not a dardiag run file (format is not {_RUN_FORMAT!r})")
    if not isinstance(state.get("metadata"), dict) or not isinstance(state.get("completed"), list):
        raise DardiagError(f"{path} is damaged: 'metadata' or 'completed' missing")
    return state


# ============================================================================ reading


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas with nullable ints (``Int64``) so ids stay integers next to nulls."""
    mapping = {pa.int64(): pd.Int64Dtype()}
    return table.to_pandas(types_mapper=mapping.get)


def _metadata_of(schema: pa.Schema) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {}


def _read_parquet_files(files: Iterable[Path]) -> pa.Table:
    tables = []
    for f in files:
        try:
            t = pq.read_table(f)
        except (OSError, pa.ArrowException) as e:
            raise DardiagError(f"cannot read {f}: {str(e).splitlines()[0]}") from None
        missing = [n for n in SCHEMA.names if n not in t.schema.names]
        if missing:
            raise DardiagError(f"{f} is not a dardiag profile: column(s) {missing} missing")
        try:
            tables.append(t.select(SCHEMA.names).cast(SCHEMA.with_metadata(t.schema.metadata)))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise DardiagError(f"{f} does not match the dardiag schema: {str(e).splitlines()[0]}") from None
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables)


def read_profile(path: str | os.PathLike) -> pd.DataFrame:
    """Read a run directory (or a single ``.parquet`` part) into one long-form DataFrame.

    ``df.attrs["dardiag"]`` holds the run metadata (from ``_run.json``, else the parquet schema
    metadata); ``df.attrs["dardiag_status"]`` the run status when known. Integer id columns are
    pandas ``Int64`` (nullable). Raises a one-line :class:`DardiagError` if ``path`` is missing, is
    not a run directory or holds no rows.
    """
    path = Path(path)
    status = None
    if not path.exists():
        raise DardiagError(f"{path} does not exist")
    if path.is_file():
        if path.suffix != PART_SUFFIX:
            raise DardiagError(f"{path} is not a .parquet file or a dardiag run directory")
        table = _read_parquet_files([path])
        metadata = _metadata_of(table.schema)
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
        table = _read_parquet_files(files)
        if metadata is None:
            metadata = _metadata_of(table.schema)
    if table.num_rows == 0:
        extra = f" (run status: {status})" if status else ""
        raise DardiagError(f"{path} holds no rows{extra}")
    df = _to_pandas(table.replace_schema_metadata(None))
    df.attrs["dardiag"] = metadata
    if status is not None:
        df.attrs["dardiag_status"] = status
    return df
