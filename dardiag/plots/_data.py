"""Selecting and pivoting rows of the long-form table for the plot functions (no drawing here)."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from dardiag.analysis.rows import latest_checkpoint  # noqa: F401 (plots select with it)

INDEX_COLUMNS = ("site", "block", "other_block", "sublayer", "source")


def check_frame(df: pd.DataFrame, columns: Sequence[str] = ("model", "metric", "value")) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"the table lacks column(s) {missing}; read it with dardiag.store.read_profile")


OPTIONAL_COLUMNS = ("checkpoint", "step", "noise_level", "batch_size") + INDEX_COLUMNS


def with_optional_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add absent optional columns as all-missing, so hand-built tables plot like stored ones."""
    missing = [c for c in OPTIONAL_COLUMNS if c not in df.columns]
    if not missing:
        return df
    return df.assign(**{c: pd.Series(pd.NA, index=df.index, dtype="object") for c in missing})


def metric_rows(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one metric; ValueError listing the metrics present when there are none."""
    check_frame(df)
    sub = df[df["metric"] == metric]
    if sub.empty:
        present = sorted(df["metric"].dropna().unique().tolist())
        raise ValueError(f"no rows for metric {metric!r}; the table has {present}")
    return sub


def has(df: pd.DataFrame, column: str) -> bool:
    """Whether ``column`` exists and holds at least one non-null value."""
    return column in df.columns and bool(df[column].notna().any())


def levels_of(df: pd.DataFrame) -> list[float]:
    if not has(df, "noise_level"):
        return []
    return sorted(float(v) for v in df["noise_level"].dropna().unique())


def spread(values: Sequence[float], n: int) -> list[float]:
    """At most ``n`` values spread evenly over the sorted ``values`` (ends included)."""
    values = sorted(values)
    if len(values) <= n:
        return values
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, n)).astype(int))
    return [values[i] for i in idx]


def nearest(available: Sequence[float], requested: Iterable[float]) -> list[float]:
    """The available noise level nearest to each requested one (sorted, no duplicates)."""
    if not len(available):
        raise ValueError("the rows have no noise levels")
    avail = np.asarray(sorted(available), dtype=float)
    out = {float(avail[np.argmin(np.abs(avail - float(r)))]) for r in requested}
    return sorted(out)


def select_level(df: pd.DataFrame, level: float | None) -> pd.DataFrame:
    """Rows at the available noise level nearest to ``level`` (``None``: rows without a level)."""
    if level is None:
        return df[df["noise_level"].isna()] if "noise_level" in df.columns else df
    (lvl,) = nearest(levels_of(df), [level])
    return df[np.isclose(df["noise_level"].astype(float), lvl)]


def depth_column(sub: pd.DataFrame) -> str:
    """``"block"`` when the rows are indexed by block, else ``"sublayer"``."""
    if has(sub, "block"):
        return "block"
    if has(sub, "sublayer"):
        return "sublayer"
    raise ValueError("the rows have neither a block nor a sublayer index")


def single_valued(sub: pd.DataFrame, what: str, ignore: Iterable[str] = ()) -> None:
    """Raise if the rows still mix several sites / blocks / ... that the caller did not select."""
    for col in INDEX_COLUMNS:
        if col in ignore or col not in sub.columns:
            continue
        vals = sub[col].dropna().unique()
        if len(vals) > 1:
            shown = sorted(vals.tolist())[:6]
            raise ValueError(f"{what}: the rows mix several values of {col!r} ({shown}...); select one with {col}=")


def stderr_of(sub: pd.DataFrame) -> pd.Series:
    """The rows' ``stderr`` as float (NaN where undefined or when the table has no such column)."""
    if "stderr" not in sub.columns:
        return pd.Series(np.nan, index=sub.index, dtype=float)
    return pd.Series(sub["stderr"].to_numpy(dtype=float, na_value=np.nan), index=sub.index)


def collapse(sub: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per ``keys``: the mean ``value`` and its standard error ``stderr``.

    A cell is normally one row already (one number per model, level and depth). Where several rows
    share a cell their mean's error is sqrt(sum se^2) / n (independent estimates); NaN when any of
    them has no error. Rows missing a key are dropped; sorted by the keys.
    """
    keys = list(keys)
    out = sub[keys].copy()
    out["value"] = sub["value"].to_numpy(dtype=float, na_value=np.nan)
    out["stderr"] = stderr_of(sub).to_numpy()
    out = out[out[keys].notna().all(axis=1)]
    if out.duplicated(keys).any():  # several rows per cell (e.g. runs of one model): combine them
        se = out["stderr"]
        out = (
            out.assign(se2=se**2, nan=se.isna())
            .groupby(keys, sort=True)
            .agg(value=("value", "mean"), se2=("se2", "sum"), nan=("nan", "any"), n=("value", "size"))
            .reset_index()
        )
        out["stderr"] = np.where(out["nan"], np.nan, np.sqrt(out["se2"]) / out["n"])
    return out.sort_values(keys).reset_index(drop=True)[keys + ["value", "stderr"]]


def pivot(sub: pd.DataFrame, index: str, columns: str, values: str = "value") -> pd.DataFrame:
    """Mean ``value`` (or its ``stderr``: ``values="stderr"``) per (index, columns) cell, both axes
    sorted, float64, missing cells NaN."""
    cells = collapse(sub, [index, columns])
    p = cells.pivot(index=index, columns=columns, values=values)
    p = p.sort_index().sort_index(axis=1)
    p.index = p.index.astype(float) if index == "noise_level" else p.index.astype(int)
    p.columns = p.columns.astype(float) if columns == "noise_level" else p.columns.astype(int)
    p.index.name, p.columns.name = index, columns
    return p.astype(float)


def prefer_site(sub: pd.DataFrame, site: str | None, prefer: str = "z") -> pd.DataFrame:
    """Rows at ``site``; with ``site=None`` and several sites (outlier metrics exist at z, h and v),
    those at ``prefer``. ValueError naming the sites when ``site`` has no rows."""
    if "site" not in sub.columns:
        return sub
    sites = sorted(str(s) for s in sub["site"].dropna().unique())
    if site is None:
        if len(sites) <= 1 or prefer not in sites:
            return sub
        site = prefer
    out = sub[sub["site"] == site]
    if out.empty:
        raise ValueError(f"no rows at site {site!r}; sites: {sites}")
    return out


def edges(centres: Sequence[float], *, clip: tuple[float, float] | None = None) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; ends mirrored), optionally clipped."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        half = 0.5 if clip is None else 0.05
        e = np.array([c[0] - half, c[0] + half])
    else:
        mid = (c[1:] + c[:-1]) / 2
        e = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    if clip is not None:
        e = np.clip(e, *clip)
    return e
