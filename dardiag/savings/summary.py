"""Where compute could be saved, summarised from the table (pure pandas): does "looks redundant" agree
with "is removable" (``--ablation``), and does the caching signal agree with the causal cache error
(``--trajectory``)? Both as Spearman rank correlations over cells.

* :func:`ablation_summary`: per model, over its (block, noise level) cells, the rank correlation of
  cos_prev (how little block k turns the state: high = looks redundant) with ablate_dloss and with
  ablate_rel_out (what removing it costs). Negative = the redundant-looking blocks are the cheap ones.
* :func:`trajectory_summary`: per model, over its (block, sampler step) cells, the rank correlation of
  the signals caching methods threshold (step_rel_change of z_k, delta_rel_change of the block's
  contribution) with cache_error, and the cache_error's median and range.

``rho_se`` is the large-sample standard error of Spearman's rho through Fisher's transform (Fieller et al.
1957: var(atanh rho) = 1.06 / (n - 3)), back on the rho scale: (1 - rho^2) sqrt(1.06 / (n - 3)). It
treats the cells as independent, which neighbouring blocks and levels are not: read it as a lower bound.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dardiag.analysis.summary import latest_checkpoint
from dardiag.errors import DardiagError


def one_model_rows(df: pd.DataFrame, metric: str, model: str | None, missing: str) -> tuple[str, pd.DataFrame]:
    """``model``'s rows of ``metric`` (the run's only model with them by default); ``missing``: the line
    said when the run has none."""
    rows = df[df["metric"] == metric]
    if rows.empty:
        raise DardiagError(missing)
    models = sorted(rows["model"].unique().tolist())
    if model is None:
        if len(models) > 1:
            raise DardiagError(f"the run holds {len(models)} models ({', '.join(models)}); choose one with --model")
        model = models[0]
    if model not in models:
        raise DardiagError(f"model {model!r} has no {metric} rows; models with them: {', '.join(models)}")
    return model, rows[rows["model"] == model]


def _cells(df: pd.DataFrame, metric: str, keys: list[str]) -> pd.Series:
    d = df[df["metric"] == metric]
    if "site" in d.columns:
        d = d[d["site"].isna() | (d["site"] == "z")]
    return d.assign(**{k: d[k].astype(float) for k in keys if k != "branch"}).groupby(keys)["value"].mean().astype(float)


def rank_correlation(a: pd.Series, b: pd.Series) -> tuple[float, float, int]:
    """(Spearman rho, its approximate standard error, cells) over the index both series share."""
    j = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    n = len(j)
    if n < 4 or j["a"].nunique() < 2 or j["b"].nunique() < 2:
        return np.nan, np.nan, n
    rho = float(j["a"].rank().corr(j["b"].rank()))
    return rho, float((1 - rho ** 2) * np.sqrt(1.06 / (n - 3))), n


def ablation_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model with ablation rows: rho(cos_prev, ablate_dloss), rho(cos_prev, ablate_rel_out),
    their standard errors, the number of cells, and the block whose removal costs the most / least."""
    out = []
    df = latest_checkpoint(df)
    keys = ["block", "noise_level"]
    for model, d in df[df["metric"].isin(["ablate_dloss", "ablate_rel_out"])].groupby("model", sort=True):
        whole = df[df["model"] == model]
        cos = _cells(whole, "cos_prev", keys)
        row = {"model": model, "routing": d["routing"].iloc[0]}
        for metric, tag in (("ablate_dloss", "dloss"), ("ablate_rel_out", "rel_out")):
            cells = _cells(whole, metric, keys)
            row[f"rho_{tag}"], row[f"rho_{tag}_se"], row["cells"] = rank_correlation(cos, cells)
        per_block = _cells(whole, "ablate_dloss", keys).groupby(level="block").mean()
        if len(per_block):
            row["costliest_block"], row["cheapest_block"] = int(per_block.idxmax()), int(per_block.idxmin())
            row["max_dloss"], row["min_dloss"] = float(per_block.max()), float(per_block.min())
        out.append(row)
    return pd.DataFrame(out)


def trajectory_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model with cache_error rows: rho(step_rel_change, cache_error), rho(delta_rel_change,
    cache_error) with standard errors, and the cache_error's median, minimum and maximum over cells."""
    out = []
    df = latest_checkpoint(df)
    for model, d in df[df["metric"] == "cache_error"].groupby("model", sort=True):
        whole = df[df["model"] == model]
        # a pipeline's guidance branches are cells of their own
        keys = ["block", "sampler_step"] + (["branch"] if "branch" in d.columns and d["branch"].notna().any() else [])
        err = _cells(whole, "cache_error", keys)
        row = {"model": model, "routing": d["routing"].iloc[0], "cells": len(err),
               "median_error": float(err.median()), "min_error": float(err.min()), "max_error": float(err.max())}
        for metric, tag in (("step_rel_change", "state"), ("delta_rel_change", "delta")):
            row[f"rho_{tag}"], row[f"rho_{tag}_se"], _ = rank_correlation(_cells(whole, metric, keys), err)
        out.append(row)
    return pd.DataFrame(out)
