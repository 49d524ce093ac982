"""Row selections of the long-form table that summaries, sanity notices and plots share (pure pandas)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def latest_checkpoint(df: pd.DataFrame) -> pd.DataFrame:
    """Per model, keep only the rows of its latest checkpoint (largest ``step``).

    Per-checkpoint figures must not average over a series of checkpoints; the series itself is
    what :func:`dardiag.plots.training.plot_metric_vs_step` shows.
    """
    if "checkpoint" not in df.columns or df.empty:
        return df
    keep = []
    for _, g in df.groupby("model", sort=False):  # the table's order of models is kept (panels follow it)
        ckpts = g["checkpoint"].dropna().unique()
        if len(ckpts) <= 1:
            keep.append(g)
            continue
        if "step" in g.columns and g["step"].notna().any():
            last = g.loc[g["step"].astype("Float64").idxmax(), "checkpoint"]
        else:
            last = sorted(ckpts)[-1]
        keep.append(g[g["checkpoint"] == last])
    return pd.concat(keep) if keep else df


def stderr_of(d: pd.DataFrame) -> pd.Series:
    """The rows' ``stderr`` as floats (NaN for tables written before the column existed)."""
    return (d["stderr"] if "stderr" in d.columns else pd.Series(np.nan, index=d.index)).astype(float)
