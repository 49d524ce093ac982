"""The one table dardiag writes: a long-form parquet schema and the rows -> table conversion.

Every number the profiler measures is one row of :data:`SCHEMA`: *which* model and checkpoint, *which*
metric at *which* site / block / sublayer / source / noise level, the ``value`` and how many images it
averages. Metric names and the index columns each fills are declared once, in
:mod:`dardiag.store.registry`; :func:`to_table` checks every row against it. Never imports torch.

Index conventions (``shared/design/diagnostics.md``):

- ``block`` k in 0..D: the state ``z_k`` that enters block k+1; ``0`` is the token embedding.
- ``sublayer`` l in 1..2D: sublayer input ``h_l`` / output ``v_l``; ``2D + 1`` is the final aggregator.
- ``source`` i in 0..2D: routing source; ``0`` is the embedding, i >= 1 the output of sublayer i.
- ``noise_level`` in [0, 1], **1 = pure noise**; ``t_native`` is the family's own timestep.
- ``sampler_step`` i: the step of the model's own sampler (0 = the noisiest) a trajectory row was measured
  at (its ``noise_level`` is that step's); ``step`` stays the *training* step of the checkpoint.
- ``branch``: on trajectory rows of a diffusers pipeline, which guidance branch the rows were measured
  in ("cond", "uncond": caching methods treat them apart); null where the sampler's guidance rows are
  averaged per image (dardiag's own sampler) and on every other row.
- ``site``: ``"z"`` block state, ``"h"`` sublayer input, ``"v"`` sublayer output, ``"x_t"`` the raw
  noisy input, ``"alpha"`` the DAR router.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dardiag.store.registry import METRICS

SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # display name
        pa.field("routing", pa.string(), nullable=False),  # "residual", "dar-static_t-c4", ...
        pa.field("family", pa.string(), nullable=False),  # "dit", "sit", "repa", "diffusers-..."
        pa.field("checkpoint", pa.string(), nullable=False),  # path or name
        pa.field("step", pa.int64(), nullable=True),  # training step
        pa.field("metric", pa.string(), nullable=False),  # a name of dardiag.store.registry.METRICS
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
        # ---- added after the first release (older parts read them as null)
        pa.field("stderr", pa.float64(), nullable=True),  # standard error of value; NaN where undefined
        pa.field("channel_values", pa.list_(pa.float32()), nullable=True),  # per-channel map (D,)
        pa.field("inputs", pa.string(), nullable=True),  # what the model looked at: synthetic, a file, ...
        pa.field("sampler_step", pa.int64(), nullable=True),  # step i of the model's sampler (0 = noisiest)
        pa.field("branch", pa.string(), nullable=True),  # trajectory rows of a pipeline: "cond" / "uncond" guidance
        pa.field("sample_values", pa.list_(pa.float64()), nullable=True),  # per-sample values, in sample order
    ]
)

METADATA_KEY = b"dardiag"
REQUIRED_COLUMNS = tuple(f.name for f in SCHEMA if not f.nullable)



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


def dumps(obj: Any, **kw: Any) -> str:
    try:
        return json.dumps(obj, default=_json_default, **kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata is not JSON-serialisable: {e}") from None


def check_metrics(df: pd.DataFrame) -> None:
    """Every row names a registered metric and fills the index columns the registry gives it."""
    names = df["metric"]
    if not names.map(lambda v: isinstance(v, str)).all():
        bad = names[~names.map(lambda v: isinstance(v, str))].iloc[0]
        raise ValueError(f"column 'metric' must hold metric names (str), got {bad!r}")
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise ValueError(f"column 'metric': unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    for name, rows in df.groupby("metric", sort=False):
        m = METRICS[name]
        for key in m.keys:
            if key not in df.columns or rows[key].isna().any():
                raise ValueError(f"column {key!r}: every {name} row must fill it")
        if m.depth:
            has = pd.Series(False, index=rows.index)
            for c in ("block", "sublayer"):
                if c in df.columns:
                    has |= rows[c].notna()
            if not has.all():
                raise ValueError(f"column 'block' or 'sublayer': every {name} row must fill one of them")


def to_table(rows: pd.DataFrame | list[dict], metadata: dict) -> pa.Table:
    """Validate long-form rows and return them as a :data:`SCHEMA` table carrying ``metadata``.

    Missing nullable columns are filled with nulls; a missing required column, an unknown column,
    an unregistered metric, an index column its metric needs left empty, or a value of the wrong type
    raises ``ValueError`` naming the column. NaN in a nullable numeric column means null; NaN in
    ``value`` is kept as NaN. ``metadata`` is stored as JSON under the schema metadata key ``b"dardiag"``.
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
    if len(df):
        check_metrics(df)
    meta = {METADATA_KEY: dumps(metadata, sort_keys=True).encode()}
    return pa.Table.from_arrays(arrays, schema=SCHEMA.with_metadata(meta))


def conform(table: pa.Table) -> pa.Table:
    """Check a table is in SCHEMA (ignoring metadata); raise ValueError saying how it differs."""
    if table.schema.names != SCHEMA.names:
        raise ValueError(f"table columns {table.schema.names} differ from SCHEMA {SCHEMA.names}; use to_table()")
    for got, want in zip(table.schema, SCHEMA):
        if got.type != want.type:
            raise ValueError(f"column {got.name!r} has type {got.type}, SCHEMA says {want.type}; use to_table()")
    return table
