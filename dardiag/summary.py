"""The closing symptom table: one line per model and noise level, straight from the long-form table.

Magnitude growth = act_rms(last block) / act_rms(block 1); gradient decay = grad_rms(block 1) /
grad_rms(last block); mean adjacent cosine and mean adjacent CKA over blocks 1..D. Pure pandas.
"""

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


def _at(df: pd.DataFrame, metric: str) -> pd.Series:
    d = df[df["metric"] == metric]
    return d.set_index("block")["value"].sort_index() if len(d) else pd.Series(dtype=float)


def _ratio(num: float, den: float) -> float:
    """num / den, NaN when undefined (a zero gradient at an untrained model's last block), silently."""
    return float(num) / float(den) if den != 0 and np.isfinite(den) else np.nan


def symptom_summary(df: pd.DataFrame, levels: str = "extremes") -> pd.DataFrame:
    """Rows per (model, noise level); ``levels="extremes"`` keeps the noisiest and cleanest level."""
    out = []
    df = latest_checkpoint(df)  # a training series: its last checkpoint (figures show the series)
    for model, dm in df[df["noise_level"].notna()].groupby("model", sort=False):
        lv = sorted(dm["noise_level"].unique())
        chosen = [lv[-1], lv[0]] if levels == "extremes" and len(lv) > 1 else lv
        for level in chosen:
            d = dm[dm["noise_level"] == level]
            act, grad, cos = _at(d, "act_rms"), _at(d, "grad_rms"), _at(d, "cos_prev")
            row = {"model": model, "routing": d["routing"].iloc[0], "noise_level": level}
            if len(act) > 1:
                row["act_growth"] = _ratio(act.iloc[-1], act.loc[1]) if 1 in act.index else np.nan
            if len(grad) > 1:
                row["grad_decay"] = _ratio(grad.loc[1], grad.iloc[-1]) if 1 in grad.index else np.nan
            if len(cos):
                row["mean_cos_prev"] = cos.mean()
            cka = d[(d["metric"] == "cka") & (d["other_block"] == d["block"] - 1)]
            if len(cka):
                row["mean_adjacent_cka"] = cka["value"].mean()
            loss = d[d["metric"] == "loss"]["value"]
            if len(loss):
                row["loss"] = loss.iloc[0]
            out.append(row)
    return pd.DataFrame(out)


def probe_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Probe R^2 per model: raw x_t and blocks (wide)."""
    d = latest_checkpoint(df[(df["metric"] == "probe_r2")])
    if d.empty:
        return d
    d = d.assign(where=np.where(d["site"] == "x_t", "x_t", "z_" + d["block"].astype("string")))
    return d[d["site"].isin(["x_t", "z"])].pivot_table(index="model", columns="where", values="value", sort=False)
