"""The table: its schema and metric registry, and parquet parts (never imports torch).

Run directories (a folder of parts plus ``_run.json``) and :func:`read_profile` live in
:mod:`dardiag.runs`.
"""

from dardiag.store.parquet import read_parts, to_pandas, write_part
from dardiag.store.registry import METRICS, Metric, is_log, metric_label
from dardiag.store.schema import METADATA_KEY, REQUIRED_COLUMNS, SCHEMA, conform, dumps, to_table

__all__ = [
    "SCHEMA", "METADATA_KEY", "REQUIRED_COLUMNS", "METRICS", "Metric", "metric_label", "is_log",
    "to_table", "conform", "dumps", "write_part", "read_parts", "to_pandas",
]
