"""Summaries of the long-form table, with their standard errors (diagnostics.md section 8). Pure pandas.

* :func:`symptom_summary`: one line per model and noise level: magnitude growth = act_rms(last block) /
  act_rms(block 1); gradient decay = grad_rms(block 1) / grad_rms(last block); mean adjacent cosine and
  mean adjacent CKA over blocks 1..D; the last block's top-1% channel share; the loss.
* :func:`compare_models`: two models cell by cell (noise level x block): difference and ratio with
  their standard errors, and whether the two differ by more than 2 combined standard errors.

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

import numpy as np
import pandas as pd

SIGNIFICANT = 2.0  # differences beyond this many combined standard errors are marked


def latest_checkpoint(df: pd.DataFrame) -> pd.DataFrame:
    """Per model, keep only the rows of its latest checkpoint (largest ``step``).

    Per-checkpoint figures must not average over a series of checkpoints; the series itself is
    what :func:`dardiag.plots.training.plot_metric_vs_step` shows.
    """
    if "checkpoint" not in df.columns or df.empty:
        return df
    keep = []
    for _, g in df.groupby("model", sort=True):
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


def _stderr(d: pd.DataFrame) -> pd.Series:
    """The rows' ``stderr`` as floats (NaN for tables written before the column existed)."""
    return (d["stderr"] if "stderr" in d.columns else pd.Series(np.nan, index=d.index)).astype(float)


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


def probe_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Probe R^2 per model: raw x_t and blocks (wide)."""
    d = latest_checkpoint(df[(df["metric"] == "probe_r2")])
    if d.empty:
        return d
    d = d.assign(where=np.where(d["site"] == "x_t", "x_t", "z_" + d["block"].astype("string")))
    return d[d["site"].isin(["x_t", "z"])].pivot_table(index="model", columns="where", values="value", sort=False)


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
