"""Synthetic long-form tables built directly with the schema's columns (no profiling: milliseconds).

:func:`profile_table` writes every metric a figure draws for models of any depth and any noise grid,
with smooth made-up values and standard errors, so figure and comparison tests can run at the sizes
users meet (28 blocks, 16 levels) in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

LEVELS16 = [float(v) for v in np.linspace(0, 1, 16)]


def _model_rows(name: str, depth: int, levels, *, routing: str, family: str, batch_size: int, inputs: str,
                step: int | None, grow: float, seed: int, channels: int, savings: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    dar = routing != "residual"
    base = dict(run_id=f"run-{name}", model=name, routing=routing, family=family, checkpoint=f"{name}.pt", step=step,
                n_samples=64, batch_size=batch_size, inputs=inputs, cka_rows=None, token_values=None,
                channel_values=None, other_block=None, sublayer=None, source=None, site="z", block=None)
    rows: list[dict] = []

    def add(metric, value, stderr=np.nan, **kw):
        rows.append({**base, "metric": metric, "value": float(value), "stderr": float(stderr), **kw})

    for li, lvl in enumerate(levels):
        t = dict(noise_level=float(lvl), t_native=float(lvl) * 999)
        for k in range(depth + 1):
            rel = k / depth
            act = (1 + lvl) * grow ** (rel * 4)
            add("act_rms", act, act * 0.01, block=k, **t)
            grad = 1e-5 * (1 + lvl) * (0.2 + rel) / batch_size
            add("grad_rms", grad, grad * 0.02, block=k, **t)
            if k:
                add("cos_prev", 0.9 + 0.09 * rel - 0.02 * lvl, 0.001, block=k, **t)
            for j in range(k + 1):
                add("cka", 1.0 if j == k else max(-0.05, 1 - 0.6 * abs(k - j) / depth - 0.1 * lvl), 0.01,
                    block=k, other_block=j, **t)
            for metric, v in (("channel_top_share", 0.05 + 0.2 * rel), ("token_top_share", 0.02 + 0.01 * rel),
                              ("act_kurtosis", 3 + 6 * rel * (1 - lvl)), ("act_absmax", 5 * act)):
                add(metric, v, block=k, **t)
            spectrum = np.sort(np.abs(rng.standard_normal(channels)) * act)[::-1].astype(np.float32)
            spectrum[:2] *= 1 + 5 * rel
            rows.append({**base, "metric": "channel_act_rms", "value": act, "stderr": np.nan, "block": k,
                         "channel_values": spectrum.tolist(), **t})
        for sl in range(1, 2 * depth + 1):
            add("h_rms", (1 + lvl) * (1 + sl / depth), 0.01, sublayer=sl, site="h", **t)
            add("v_rms", 0.5 * (1 + lvl) * (1 + sl / depth), 0.01, sublayer=sl, site="v", **t)
        final = 2 * depth + 1
        for sl in range(1, final + (1 if dar else 0)):
            sources = range(sl)
            if dar:
                w = np.exp(-0.3 * (sl - 1 - np.arange(sl)) * (1 + lvl))
                w /= w.sum()
                for i in sources:
                    add("route_alpha", w[i], 0.001, sublayer=sl, source=i, site="alpha", **t)
                add("route_entropy", float(-(w * np.log(w)).sum()), 0.001, sublayer=sl, site="alpha", **t)
            else:
                for i in sources:
                    add("route_importance", 1e-6 * (1 + lvl) * math.cos(i) / (1 + sl - i), 1e-8,
                        sublayer=sl, source=i, site="h", **t)
        add("loss", 0.5 + 0.5 * (1 - lvl), 0.01, site=None, **t)
        for k in range(1, depth + 1) if savings else ():  # --ablation: block k skipped
            rel = k / depth
            add("ablate_dloss", (0.3 - rel) * (1 - lvl) * 3, 0.01, block=k, **t)  # some blocks help when skipped
            add("ablate_rel_out", 0.02 * 10 ** (2 * (1 - rel) * (1 - lvl)), 0.001, block=k, **t)
    for i in range(1, savings):  # --trajectory: sampler steps 1..savings-1 from noise 1 to 0
        lvl = 1 - i / (savings - 1)
        t = dict(noise_level=lvl, t_native=lvl * 999, sampler_step=i)
        for k in range(1, depth + 1):
            change = 1e-3 * 10 ** (2 * (1 - lvl)) * (1 + k / depth)
            add("step_rel_change", change, change * 0.05, block=k, **t)
            add("delta_rel_change", 2 * change * (1 + (k % 3)), change * 0.1, block=k, **t)
            add("cache_error", 0.3 * change, change * 0.02, block=k, **t)
    for k in range(depth + 1):
        add("probe_r2", 0.99 + 0.009 * min(1, k / 3) + (0.0009 if dar else 0), 0.0004, block=k, noise_level=None)
    add("probe_r2", 0.78, 0.06, site="x_t", noise_level=None)
    return rows


def profile_table(models: dict[str, int] | None = None, levels=LEVELS16, *, routings: dict[str, str] | None = None,
                  family: str = "sit", batch_size: int | dict = 16, inputs: str = "file digits.pt",
                  steps=(None,), channels: int = 64, savings: int = 0) -> pd.DataFrame:
    """Rows of every metric for ``models`` (name -> depth D), at ``levels``; routing default: a name
    containing "DAR" is DAR. ``steps``: one table per training step (a series) when several.
    ``savings``: also the --ablation metrics and --trajectory metrics over that many sampler steps."""
    models = models or {"residual": 28, "DAR": 28}
    rows = []
    for i, (name, depth) in enumerate(models.items()):
        routing = (routings or {}).get(name, "dar-static_t-c4" if "DAR" in name else "residual")
        bs = batch_size[name] if isinstance(batch_size, dict) else batch_size
        for si, step in enumerate(steps):
            rows += _model_rows(name, depth, levels, routing=routing, family=family, batch_size=bs, inputs=inputs,
                                step=step, grow=1.0 if "DAR" in name else 2.0 + 0.1 * si, seed=i * 10 + si,
                                channels=channels, savings=savings)
    df = pd.DataFrame(rows)
    if steps != (None,):
        df["checkpoint"] = df["model"] + "-" + df["step"].astype(str) + ".pt"
    if "sampler_step" not in df.columns:
        df["sampler_step"] = None
    for c in ("block", "other_block", "sublayer", "source", "step", "sampler_step"):
        df[c] = df[c].astype("Int64")
    return df
