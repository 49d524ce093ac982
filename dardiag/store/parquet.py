"""Parquet files of the table: one atomic writer, one strict reader (which tolerates added columns).

A run directory (``dardiag.runs``) is a folder of such parts; ``pandas.read_parquet(folder)`` reads
them all because pyarrow skips names starting with ``_`` or ``.`` (run metadata, figures, temp files).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dardiag.atomic import atomic_write
from dardiag.errors import DardiagError
from dardiag.store.schema import METADATA_KEY, SCHEMA, conform

SUFFIX = ".parquet"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+,@-]*$")
# Columns added after the first release: older parts lack them and read as null.
ADDED_COLUMNS = ("stderr", "channel_values", "inputs", "sampler_step", "branch", "sample_values")


def check_name(name: str, what: str = "part name") -> None:
    if not isinstance(name, str) or not SAFE_NAME.match(name) or "/" in name or "\\" in name:
        raise ValueError(
            f"invalid {what} {name!r}: use letters, digits and ._=+,@- and do not start with '.' or '_'"
        )


def write_part(out_dir: str | os.PathLike, name: str, table: pa.Table, *, overwrite: bool = False) -> Path:
    """Atomically write ``out_dir/{name}.parquet`` and return its path.

    The data goes to a temp file named ``.{name}.parquet.*.tmp`` in the same directory (readers skip
    names starting with "."), is fsynced, then renamed into place. An existing part is never replaced
    unless ``overwrite=True``; otherwise :class:`DardiagError` is raised.
    """
    check_name(name)
    conform(table)
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise DardiagError(f"{out_dir} is not a directory")
    dest = out_dir / f"{name}{SUFFIX}"
    if dest.exists() and not overwrite:
        raise DardiagError(f"{dest} already exists; refusing to overwrite it")
    return atomic_write(dest, lambda f: pq.write_table(table, f), overwrite=overwrite)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas with nullable ints (``Int64``) so ids stay integers next to nulls."""
    mapping = {pa.int64(): pd.Int64Dtype()}
    return table.to_pandas(types_mapper=mapping.get)


def metadata_of(schema: pa.Schema) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {}


def read_parts(files: Iterable[Path]) -> pa.Table:
    """The parts as one SCHEMA table; one-line errors for unreadable or foreign files."""
    tables = []
    for f in files:
        try:
            t = pq.read_table(f)
        except (OSError, pa.ArrowException) as e:
            raise DardiagError(f"cannot read {f}: {str(e).splitlines()[0]}") from None
        missing = [n for n in SCHEMA.names if n not in t.schema.names and n not in ADDED_COLUMNS]
        if missing:
            raise DardiagError(f"{f} is not a dardiag profile: column(s) {missing} missing")
        for name in ADDED_COLUMNS:  # written before the column existed
            if name not in t.schema.names:
                t = t.append_column(SCHEMA.field(name), pa.nulls(t.num_rows, SCHEMA.field(name).type))
        try:
            tables.append(t.select(SCHEMA.names).cast(SCHEMA.with_metadata(t.schema.metadata)))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise DardiagError(f"{f} does not match the dardiag schema: {str(e).splitlines()[0]}") from None
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables)
