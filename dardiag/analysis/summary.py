"""Summaries of the long-form table, with their standard errors (diagnostics.md section 8). Pure pandas.

* :func:`symptom_summary`: one line per model and noise level: magnitude growth = act_rms(last block) /
  act_rms(block 1); gradient decay = grad_rms(block 1) / grad_rms(last block); mean adjacent cosine and
  mean adjacent CKA over blocks 1..D; the last block's top-1% channel share; the loss.
* :func:`compare_models`: two models cell by cell (noise level x block): difference and ratio with
  their standard errors, and whether the two differ by more than 2 combined standard errors.
* :func:`compare_runs`: every model of one or several runs against a baseline, per metric: the cells
  beyond 2 combined standard errors, the median |z| and the largest differences, over the cells the
  two can be compared at (:mod:`dardiag.analysis.comparability`), with the sanity notices
  (:mod:`dardiag.analysis.sanity`).

How the errors combine (documented choices, all from the per-cell ``stderr``):

* a ratio of two cells (growth, decay) uses the delta method treating the two as independent. Both
  come from the same images and are positively correlated, which makes the true error smaller: the
  figure is conservative;
* a mean over blocks (adjacent cosine, adjacent CKA) takes the mean of the blocks' errors, the bound
  for perfectly correlated blocks (again conservative);
* two models: sqrt(se_a^2 + se_b^2), as for independent estimates. Profiled on the same inputs, their
  errors are positively correlated too, so "beyond 2 combined standard errors" is a cautious claim.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from dardiag.analysis.comparability import levels_text, differences, match_depth, match_levels, merge_runs, model_facts
from dardiag.analysis.rows import latest_checkpoint
from dardiag.analysis.rows import stderr_of as _stderr
from dardiag.analysis.sanity import sanity_notices
from dardiag.errors import DardiagError
from dardiag.runs import read_profile

SIGNIFICANT = 2.0  # differences beyond this many combined standard errors are marked


def _ratio_se(ratio, num, num_se, den, den_se):
    """Delta-method standard error of ``ratio = num / den`` for independent estimates (arrays or floats)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(ratio) * np.sqrt((num_se / num) ** 2 + (den_se / den) ** 2)


def _cells(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of ``metric`` at the block states, indexed by block: columns value, stderr."""
    d = df[df["metric"] == metric]
    if "site" in d.columns:
        d = d[d["site"].isna() | (d["site"] == "z")]
    if d.empty:
        return pd.DataFrame(columns=["value", "stderr"], dtype=float)
    return pd.DataFrame({"value": d["value"].astype(float).to_numpy(), "stderr": _stderr(d).to_numpy()},
                        index=d["block"].astype(int).to_numpy()).sort_index()


def ratio_with_se(num: float, num_se: float, den: float, den_se: float) -> tuple[float, float]:
    """num / den and its delta-method standard error for independent estimates; NaN when undefined
    (a zero gradient at an untrained model's last block), silently."""
    if den == 0 or not np.isfinite(den):
        return np.nan, np.nan
    r = num / den
    if num == 0:
        return r, np.nan
    return r, float(_ratio_se(r, num, num_se, den, den_se))


def symptom_summary(df: pd.DataFrame, levels: str = "extremes") -> pd.DataFrame:
    """Rows per (model, noise level); ``levels="extremes"`` keeps the noisiest and cleanest level.

    Each number ``x`` comes with ``x_se`` (NaN where the table has no error for it).
    """
    out = []
    df = latest_checkpoint(df)  # a training series: its last checkpoint (figures show the series)
    if "sampler_step" in df.columns:  # trajectory rows sit at the sampler's noise levels, not the sweep's
        df = df[df["sampler_step"].isna()]
    for model, dm in df[df["noise_level"].notna()].groupby("model", sort=False):
        lv = sorted(dm["noise_level"].unique())
        chosen = [lv[-1], lv[0]] if levels == "extremes" and len(lv) > 1 else lv
        for level in chosen:
            d = dm[dm["noise_level"] == level]
            row = {"model": model, "routing": d["routing"].iloc[0], "noise_level": level}
            if "inputs" in d.columns and d["inputs"].notna().any():
                row["inputs"] = d["inputs"].dropna().iloc[0]
            act, grad, cos = _cells(d, "act_rms"), _cells(d, "grad_rms"), _cells(d, "cos_prev")
            if len(act) > 1 and 1 in act.index:
                first, last = act.loc[1], act.iloc[-1]
                row["act_growth"], row["act_growth_se"] = ratio_with_se(last.value, last.stderr, first.value,
                                                                        first.stderr)
            if len(grad) > 1 and 1 in grad.index:
                first, last = grad.loc[1], grad.iloc[-1]
                row["grad_decay"], row["grad_decay_se"] = ratio_with_se(first.value, first.stderr, last.value,
                                                                        last.stderr)
            if len(cos):
                row["mean_cos_prev"], row["mean_cos_prev_se"] = cos.value.mean(), cos.stderr.mean()
            cka = d[(d["metric"] == "cka") & (d["other_block"] == d["block"] - 1)]
            if len(cka):
                row["mean_adjacent_cka"], row["mean_adjacent_cka_se"] = cka["value"].mean(), _stderr(cka).mean()
            share = _cells(d, "channel_top_share")
            if len(share):
                row["last_channel_top_share"] = share.value.iloc[-1]
            loss = d[d["metric"] == "loss"]
            if len(loss):
                row["loss"] = loss["value"].iloc[0]
                row["loss_se"] = _stderr(loss).iloc[0]
            out.append(row)
    return pd.DataFrame(out)


def _default_pair(df: pd.DataFrame) -> tuple[str, str]:
    """(a, b) for two models: b is the DAR model when one of them is residual (b / a = DAR / residual)."""
    models = sorted(df["model"].dropna().unique())
    if len(models) != 2:
        raise ValueError(f"pass a= and b=: the table holds {len(models)} models ({', '.join(models)})")
    a, b = models
    routing = df.groupby("model")["routing"].first() if "routing" in df.columns else {}
    if routing.get(b) == "residual" and routing.get(a) != "residual":
        a, b = b, a
    return a, b


def compare_models(df: pd.DataFrame, metric: str, a: str | None = None, b: str | None = None) -> pd.DataFrame:
    """``metric`` of models ``a`` and ``b`` cell by cell, with errors (see the module docstring).

    One row per (noise level, block or sublayer[, other_block, source]) that both models have:
    ``value_a, stderr_a, value_b, stderr_b, diff`` (= b - a) ``, diff_se, ratio`` (= b / a) ``,
    ratio_se, z`` (= diff / diff_se) and ``significant`` (|diff| > 2 diff_se; False where no error is
    known). With two models in the table, a and b default to residual and DAR.
    """
    d = latest_checkpoint(df[df["metric"] == metric])
    if d.empty:
        raise ValueError(f"no rows for metric {metric!r}")
    if a is None or b is None:
        a, b = _default_pair(d)
    keys = [c for c in ("site", "noise_level", "block", "other_block", "sublayer", "source")
            if c in d.columns and d[c].notna().any()]
    cols = keys + ["value"] + (["stderr"] if "stderr" in d.columns else [])  # absent: NaN below
    sides = []
    for name, tag in ((a, "a"), (b, "b")):
        side = d.loc[d["model"] == name, cols]
        if side.empty:
            raise ValueError(f"model {name!r} has no {metric!r} rows")
        side = side.assign(stderr=_stderr(side))
        sides.append(side.rename(columns={"value": f"value_{tag}", "stderr": f"stderr_{tag}"}))
    key = {k: object for k in keys}
    m = sides[0].astype(key).merge(sides[1].astype(key), on=keys, how="inner")
    va, vb = m["value_a"].astype(float), m["value_b"].astype(float)
    sa, sb = m["stderr_a"].astype(float), m["stderr_b"].astype(float)
    m["diff"] = vb - va
    m["diff_se"] = np.sqrt(sa ** 2 + sb ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        m["ratio"] = np.where(va != 0, vb / va, np.nan)
        m["z"] = m["diff"] / m["diff_se"]
    m["ratio_se"] = _ratio_se(m["ratio"], vb, sb, va, sa)
    m["significant"] = (m["diff"].abs() > SIGNIFICANT * m["diff_se"]).fillna(False)
    m.insert(0, "model_b", b)
    m.insert(0, "model_a", a)
    m.insert(0, "metric", metric)
    return m.reset_index(drop=True)


# ============================================================================ compare_runs

COMPARED_METRICS = ("act_rms", "grad_rms", "cos_prev", "cka", "loss")
GRADIENT_METRICS = ("grad_rms", "loss")  # objectives of the family: not compared across families
TOP_CELLS = 3  # the largest differences listed per metric


def _state_rows(d: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric``'s rows at the block states (adjacent blocks for cka), latest checkpoint."""
    r = d[d["metric"] == metric]
    if "site" in r.columns:
        r = r[r["site"].isna() | (r["site"] == "z")]
    if metric == "cka":
        r = r[r["other_block"].astype(float) == r["block"].astype(float) - 1]
    return r[r["noise_level"].notna()]


def _side(rows: pd.DataFrame, levels: dict[float, float], blocks: dict[int, int] | None, scale: bool) -> pd.DataFrame:
    """One model's cells keyed by the baseline's (level, block); ``scale``: B x value."""
    r = rows.assign(value=rows["value"].astype(float), stderr=_stderr(rows))
    if scale:  # grad_rms scales with 1/B: B x grad_rms is independent of B
        b = r["batch_size"].astype(float)
        r = r.assign(value=r["value"] * b, stderr=r["stderr"] * b)
    lv = r["noise_level"].astype(float).map(
        lambda v: next((y for x, y in levels.items() if abs(x - v) <= 1e-9), np.nan))
    out = pd.DataFrame({"noise_level": r["noise_level"].astype(float).to_numpy(), "key_level": lv.to_numpy(),
                        "value": r["value"].to_numpy(), "stderr": r["stderr"].to_numpy()})
    if blocks is not None:
        k = r["block"].astype(int).to_numpy()
        out["block"] = k
        out["key_block"] = [blocks.get(int(x), -1) for x in k]
        out = out[out["key_block"] >= 0]
    return out[out["key_level"].notna()]


def _largest(m: pd.DataFrame, top: int) -> list[dict]:
    """The ``top`` cells of largest |z| (|log ratio| where no error is known)."""
    rank = m["z"].abs().where(np.isfinite(m["z"]), np.nan)
    if not rank.notna().any():
        with np.errstate(divide="ignore", invalid="ignore"):
            rank = np.log(m["ratio"].abs()).abs()
    order = rank.fillna(-1).sort_values(ascending=False).index[:top]
    cells = []
    for i in order:
        c = m.loc[i]
        cell = {"noise_level": float(c["noise_level"]), "noise_level_baseline": float(c["key_level"]),
                "value": float(c["value"]), "value_baseline": float(c["value_base"]),
                "ratio": float(c["ratio"]), "z": float(c["z"]), "significant": bool(c["significant"])}
        if "block" in m.columns:
            cell.update(block=int(c["block"]), block_baseline=int(c["key_block"]))
        cells.append(cell)
    return cells


def _compare_pair(d: pd.DataFrame, model: str, baseline: str, metric: str, levels: dict[float, float],
                  blocks: dict[int, int] | None, scale: bool, top: int) -> dict | None:
    rows = _state_rows(d, metric)
    a, b = rows[rows["model"] == model], rows[rows["model"] == baseline]
    if a.empty or b.empty:
        return None
    per_block = metric != "loss"
    ident = {int(x): int(x) for x in b["block"].dropna()} if per_block else None
    sa = _side(a, levels, blocks if per_block else None, scale)
    sb = _side(b, {y: y for y in levels.values()}, ident, scale)
    keys = ["key_level"] + (["key_block"] if per_block else [])
    base = sb.rename(columns={"value": "value_base", "stderr": "stderr_base"})[keys + ["value_base", "stderr_base"]]
    m = sa.merge(base, on=keys, how="inner")
    if m.empty:
        return None
    m["diff"] = m["value"] - m["value_base"]
    m["diff_se"] = np.sqrt(m["stderr"] ** 2 + m["stderr_base"] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        m["ratio"] = np.where(m["value_base"] != 0, m["value"] / m["value_base"], np.nan)
        m["z"] = np.where(m["diff_se"] > 0, m["diff"] / m["diff_se"], np.nan)
    m["significant"] = (m["diff"].abs() > SIGNIFICANT * m["diff_se"]).fillna(False)
    known = np.isfinite(m["z"])
    cells = _largest(m, top)
    row = {"model": model, "baseline": baseline, "metric": metric, "cells": int(len(m)),
           "cells_with_se": int(known.sum()), "beyond": int(m.loc[known, "significant"].sum()),
           "median_abs_z": float(m.loc[known, "z"].abs().median()) if known.any() else np.nan,
           "scaled_by_batch": bool(scale), "largest": cells}
    first = cells[0] if cells else {}
    for k in ("noise_level", "block", "ratio", "z"):
        row[f"largest_{k}"] = first.get(k, np.nan)
    return row


def _order(df: pd.DataFrame, models: Sequence[str] | None) -> list[str]:
    have = [str(m) for m in pd.unique(df["model"].dropna())]
    if models is None:
        return have
    unknown = [m for m in models if m not in have]
    if unknown:
        raise DardiagError(f"no model named {', '.join(unknown)}; the runs hold: {', '.join(have)}")
    return list(dict.fromkeys(models))


def default_baseline(df: pd.DataFrame, models: Sequence[str]) -> str:
    """The baseline when none is named: the one residual model among others, else the first model."""
    routing = df.groupby("model")["routing"].first() if "routing" in df.columns else pd.Series(dtype=object)
    residual = [m for m in models if routing.get(m) == "residual"]
    return residual[0] if len(residual) == 1 and len(models) > 1 else models[0]


def compare_runs(runs, *, baseline: str | None = None, models: Sequence[str] | None = None,
                 metrics: Sequence[str] = COMPARED_METRICS, nearest: bool = False,
                 top: int = TOP_CELLS) -> pd.DataFrame:
    """Every model against ``baseline``, per metric: in how many (noise level, block) cells the two
    differ beyond 2 combined standard errors, the median |z| and the ``top`` largest differences
    (by |z|) with their levels and blocks; what ``dardiag compare`` and ``dardiag demo`` print.

    ``runs``: one table (e.g. a run, or :func:`dardiag.analysis.comparability.merge_runs` of several),
    or a sequence of run directories / tables (merged in that order). ``models``: which and in what order
    (default: the table's order); ``baseline`` default: the one residual model, else the first.
    Only the noise levels both models have are compared (``nearest``: mutual nearest levels), models
    of different depth at equal relative depth, batch sizes apart as B x grad_rms, families apart
    without loss and grad_rms (:mod:`dardiag.analysis.comparability`). Adjacent CKA: CKA(z_{k-1}, z_k).

    One row per (model, metric): ``model, baseline, metric, cells, cells_with_se, beyond,
    median_abs_z, scaled_by_batch, largest`` (a list of dicts: noise_level[_baseline], block[_baseline],
    value[_baseline], ratio = value / value_baseline, z, significant), and the first of them flat as
    ``largest_noise_level, largest_block, largest_ratio, largest_z``. ``df.attrs``: ``warnings`` (how
    the models were measured unlike the baseline), ``notices`` (:mod:`dardiag.analysis.sanity`),
    ``baseline``, ``models``. A model that shares no noise level with the baseline is not compared (a warning says
    so); :class:`DardiagError` when no model shares one.
    """
    if isinstance(runs, pd.DataFrame):
        df = runs
    else:
        frames = [r if isinstance(r, pd.DataFrame) else read_profile(r) for r in runs]
        df = merge_runs(frames, [str(r) if not isinstance(r, pd.DataFrame) else None for r in runs]
                        if all(not isinstance(r, pd.DataFrame) for r in runs) else None)
    order = _order(df, models)
    if len(order) < 2:
        raise DardiagError(f"compare needs at least two models; the table holds {', '.join(order) or 'none'}")
    baseline = default_baseline(df, order) if baseline is None else baseline
    if baseline not in order:
        raise DardiagError(f"no model named {baseline!r} to use as the baseline; models: {', '.join(order)}")
    d = latest_checkpoint(df[df["model"].isin(order)])
    facts = model_facts(d)
    diffs = differences(facts, baseline, nearest=nearest)
    out, unmatched = [], []
    for m in order:
        if m == baseline:
            continue
        fm, fb = facts[m], facts[baseline]
        levels = dict(match_levels(fm.levels, fb.levels, nearest))
        if not levels:
            unmatched.append(f"{m} vs {baseline}: no noise level in common ({levels_text(fm.levels)} vs "
                             f"{levels_text(fb.levels)}): not compared; --nearest (nearest=True) pairs the "
                             "nearest levels")
            continue
        blocks = None
        if fm.depth is not None and fb.depth is not None:
            blocks = dict(match_depth(fm.depth, fb.depth))
        for metric in metrics:
            if metric in GRADIENT_METRICS and fm.family != fb.family:
                continue
            scale = metric == "grad_rms" and fm.batch_sizes != fb.batch_sizes
            row = _compare_pair(d, m, baseline, metric, levels, blocks, scale, top)
            if row is not None:
                out.append(row)
    if len(unmatched) == len(order) - 1:  # nothing at all to compare: refuse
        raise DardiagError(unmatched[0] if len(unmatched) == 1 else "; ".join(unmatched))
    res = pd.DataFrame(out, columns=["model", "baseline", "metric", "cells", "cells_with_se", "beyond", "median_abs_z",
                                     "scaled_by_batch", "largest", "largest_noise_level", "largest_block",
                                     "largest_ratio", "largest_z"])
    res.attrs.update(warnings=[x.message for x in diffs] + unmatched, notices=[n.message for n in sanity_notices(d)],
                     baseline=baseline, models=order)
    return res
