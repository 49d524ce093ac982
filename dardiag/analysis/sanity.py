"""Sanity notices: what in a profile says the numbers describe a broken or untrained model, not a design.

Pure pandas over the long-form table (each model's latest checkpoint), so a stored run, a merged
comparison and an in-memory profile are checked alike. Three findings (issue 22):

* ``identical_states``: every block leaves the state as it was (cos(z_{k-1}, z_k) = 1 at every block
  and level; act_rms equal too when the state is the embedding itself). A DiT's adaLN-Zero gates
  start at 0, so a random-init or wrongly loaded checkpoint makes every block the identity;
  ``zero_gradients``: grad_rms = 0 at every block (the zero-initialised final layer ignores the state).
* ``non_finite``: NaN or Inf in a state statistic (act_rms, grad_rms, max |z|) or in the loss.
* ``loss_scale``: on real inputs (not synthetic latents), a loss far above what predicting zero scores
  for the family: E[eps^2] = 1 for epsilon prediction, E[(x0 - eps)^2] = E[x0^2] + 1, about 2 for
  unit-variance latents, for velocity prediction. A trained model scores below it; three times it
  means the wrong family, the wrong weights or latents scaled unlike the model's VAE.

Each finding is a :class:`Notice`; :func:`sanity_notices` lists them, :func:`attach_notices` stores
their messages in ``df.attrs["dardiag_notices"]`` (the table's metadata beside ``df.attrs["dardiag"]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dardiag.analysis.rows import latest_checkpoint

NOTICES_ATTR = "dardiag_notices"
COS_ONE = 1e-6  # cos(z_{k-1}, z_k) within this of 1: the block did not turn the state (float32 rounding)
RMS_SAME = 1e-6  # act_rms(z_k) within this relative distance of act_rms(z_0): the same state
# the loss of predicting zero, per family (prediction target): eps -> E[eps^2] = 1; velocity -> E[x0^2] + 1
ZERO_PREDICTION_LOSS = {"dit": 1.0, "sit": 2.0, "repa": 2.0, "flow1000": 2.0, "flow1000-anchor": 2.0}
LOSS_FAR = 3.0  # "far above": this many times the zero-prediction loss
FINITE_METRICS = ("act_rms", "grad_rms", "act_absmax", "loss")


@dataclass(frozen=True)
class Notice:
    model: str
    kind: str  # identical_states | zero_gradients | non_finite | loss_scale
    message: str


def _z_rows(d: pd.DataFrame, metric: str) -> pd.DataFrame:
    r = d[d["metric"] == metric]
    if "site" in r.columns:
        r = r[r["site"].isna() | (r["site"] == "z")]
    return r[r["block"].notna()] if "block" in r.columns else r.iloc[:0]


def _values(r: pd.DataFrame) -> np.ndarray:
    return r["value"].to_numpy(dtype=float, na_value=np.nan)


def _identical(model: str, d: pd.DataFrame) -> list[Notice]:
    cos = _z_rows(d, "cos_prev")
    cos = cos[cos["block"].astype(float) >= 1]
    out = []
    c = _values(cos)
    if c.size and np.isfinite(c).all() and (np.abs(1.0 - c) <= COS_ONE).all():
        act = _z_rows(d, "act_rms")
        same = False
        if len(act) and "noise_level" in act.columns:
            rel = []
            for _, g in act.groupby("noise_level"):
                v = _values(g.sort_values("block"))
                if v.size > 1 and np.isfinite(v).all() and v[0] > 0:
                    rel.append(np.abs(v / v[0] - 1).max())
            same = bool(rel) and max(rel) <= RMS_SAME
        what = ("all block states are identical (cos(z_k-1, z_k) = 1 and act_rms equal at every block and level)"
                if same else "every block state points the way the one before it does (cos(z_k-1, z_k) = 1 at "
                "every block and level)")
        out.append(Notice(model, "identical_states", f"{model}: {what}: the blocks do nothing, as with zero "
                          "adaLN gates; an untrained checkpoint or the wrong weights?"))
    g = _values(_z_rows(d, "grad_rms"))
    if g.size and np.isfinite(g).all() and (g == 0).all():
        out.append(Notice(model, "zero_gradients", f"{model}: grad_rms is 0 at every block and level: the loss "
                          "does not depend on the block states (a zero-initialised final layer: untrained?)"))
    return out


def _where(row: pd.Series) -> str:
    parts = []
    if pd.notna(row.get("noise_level")):
        parts.append(f"noise {float(row['noise_level']):.3g}")
    for col, name in (("block", "block"), ("sublayer", "sublayer")):
        if col in row.index and pd.notna(row[col]):
            parts.append(f"{name} {int(row[col])}")
    return ", ".join(parts)


def _non_finite(model: str, d: pd.DataFrame) -> list[Notice]:
    r = d[d["metric"].isin(FINITE_METRICS)]
    bad = r[~np.isfinite(_values(r))]
    if bad.empty:
        return []
    first = bad.sort_values([c for c in ("noise_level", "block", "sublayer") if c in bad.columns]).iloc[0]
    kinds = "/".join(sorted({"NaN" if np.isnan(v) else "Inf" for v in _values(bad)}))
    metrics = ", ".join(sorted(bad["metric"].unique()))
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return [Notice(model, "non_finite", f"{model}: {kinds} in {metrics}: first at {first['metric']} "
                   f"{_where(first)}{more}; the state overflowed (try --dtype float32) or the weights hold NaN")]


def _real_inputs(d: pd.DataFrame) -> bool:
    if "inputs" not in d.columns:
        return False
    labels = d["inputs"].dropna().astype(str)
    return bool(len(labels)) and not labels.str.startswith("synthetic").any()


def _loss_scale(model: str, d: pd.DataFrame) -> list[Notice]:
    fam = str(d["family"].dropna().iloc[0]) if "family" in d.columns and d["family"].notna().any() else ""
    scale = ZERO_PREDICTION_LOSS.get(fam)
    loss = d[d["metric"] == "loss"]
    if scale is None or loss.empty or not _real_inputs(d):
        return []
    v = _values(loss)
    ok = np.isfinite(v)
    if not ok.any() or v[ok].max() <= LOSS_FAR * scale:
        return []
    worst = loss[ok].iloc[int(np.argmax(v[ok]))]
    return [Notice(model, "loss_scale", f"{model}: loss {float(worst['value']):.3g} at {_where(worst)} on real "
                   f"inputs, over {LOSS_FAR:g}x what predicting zero scores for family {fam} ({scale:g}): the "
                   "wrong family, weights, or latents scaled unlike the model's VAE?")]


def sanity_notices(df: pd.DataFrame) -> list[Notice]:
    """The notices for every model of ``df`` (its latest checkpoint), in the table's model order."""
    if df is None or df.empty or not {"model", "metric", "value"} <= set(df.columns):
        return []
    out: list[Notice] = []
    d = latest_checkpoint(df)
    for model in pd.unique(d["model"].dropna()):
        dm = d[d["model"] == model]
        out += _identical(str(model), dm) + _non_finite(str(model), dm) + _loss_scale(str(model), dm)
    return out


def attach_notices(df: pd.DataFrame) -> pd.DataFrame:
    """Store the notices' messages in ``df.attrs["dardiag_notices"]`` (in place) and return ``df``."""
    df.attrs[NOTICES_ATTR] = [n.message for n in sanity_notices(df)]
    return df
