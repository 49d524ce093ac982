"""``dardiag calibrate RUN --method ...``: a caching method's configuration for this model, from a pipeline's
trajectory run (``profile --trajectory`` on a diffusers pipeline), with uncertainty over the run's prompts.

The run holds, per sampler step, guidance branch and sample, what the methods compare between steps
(``dardiag.savings.pipeline_trajectory``): ``mag_ratio``, ``first_block_change``, ``modulated_input_change``
and ``output_change``. Each method below turns them into the keyword arguments of its configuration
(``config``: ``MagCacheConfig(**config)`` works for diffusers' classes), with standard errors over prompts:

* **magcache**: ``mag_ratios`` = 1.0, then the mean ratio of every later step, exactly the quantity
  diffusers' ``MagCacheConfig(calibrate=True)`` prints (mean over tokens of |r_i| / |r_{i-1}|, r = the
  block stack's output minus its input), averaged over prompts; ``num_inference_steps`` beside them (without
  it diffusers resamples to 28 steps). ``--steps N`` resamples to another step count the way diffusers
  does (nearest step, ``round(i (S - 1) / (N - 1))``).
* **firstblock**: the first block's relative residual change per step (what ``FirstBlockCacheConfig``'s
  ``threshold`` is compared with) and the threshold at which, on these prompts, ``--computed K`` steps are
  computed in full: each prompt's decisions are replayed with the change since the last computed step
  taken as the sum of the step-to-step changes since (the trajectory holds consecutive steps only), so
  the count is an estimate; ``dardiag cache-eval`` measures it.
* **teacache**: the degree-``--degree`` polynomial mapping the modulated-input change of the first block
  to the output change (TeaCache's rescaling, for the forks that take ``coefficients``), fitted on every
  (prompt, step) pair, its R^2 and the held-out R^2 over prompt folds; ``rel_l1_thresh`` for ``--computed``
  steps by replaying TeaCache's accumulation rule on each prompt.
* **taylorseer**, **pab**, **fastercache**: interval and timestep-range suggestions read off the output
  change curve (computed in full while it is above its median, reused in between), with the curve.

Legend: S sampler steps, P prompts.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from dardiag.errors import DardiagError
from dardiag.savings.summary import one_model_rows

METHODS = ("magcache", "firstblock", "teacache", "taylorseer", "pab", "fastercache")
CLASSES = {"magcache": "MagCacheConfig", "firstblock": "FirstBlockCacheConfig", "teacache": "TeaCache",
           "taylorseer": "TaylorSeerCacheConfig", "pab": "PyramidAttentionBroadcastConfig",
           "fastercache": "FasterCacheConfig"}
NEEDS = {"magcache": "mag_ratio", "firstblock": "first_block_change", "teacache": "modulated_input_change",
         "taylorseer": "output_change", "pab": "output_change", "fastercache": "output_change"}


#################################################################################
#                         The run's curves, per branch                          #
#################################################################################


def _rows(df: pd.DataFrame, metric: str, model: str | None, branch: str | None) -> tuple[str, str | None, pd.DataFrame]:
    model, rows = one_model_rows(df, metric, model,
                                 f"the run has no {metric} rows: calibrate reads a pipeline's trajectory; run "
                                 "`dardiag profile PIPELINE --trajectory --prompts P.txt` first")
    branches = sorted(b for b in rows["branch"].dropna().unique()) if "branch" in rows.columns else []
    if branch is None:
        branch = "cond" if "cond" in branches else (branches[0] if branches else None)
    elif branch not in branches:
        raise DardiagError(f"--branch {branch}: the run's trajectory has {', '.join(branches) or 'no'} branches")
    if branch is not None:
        rows = rows[rows["branch"] == branch]
    return model, branch, rows.sort_values("sampler_step")


def per_sample(rows: pd.DataFrame) -> np.ndarray:
    """[P, S] per-sample values of steps 1..S-1 (column i-1: step i), from ``sample_values``."""
    lists = [np.asarray(v, dtype=float) for v in rows["sample_values"]]
    if not lists or any(len(v) != len(lists[0]) for v in lists):
        raise DardiagError("the run's per-sample values are incomplete; run its trajectory again")
    return np.stack(lists, axis=1)


def resample(values: Sequence[float], n: int) -> list[float]:
    """``values`` (S) at ``n`` steps by the nearest step, as diffusers' MagCache resamples its ratios."""
    s = len(values)
    if n == 1:
        return [float(values[-1])]
    scale = (s - 1) / (n - 1)
    return [float(values[int(round(i * scale))]) for i in range(n)]


def _source(df: pd.DataFrame, model: str, rows: pd.DataFrame) -> dict:
    meta = df.attrs.get("dardiag") or {}
    models = {m.get("name"): m for m in (meta.get("config") or {}).get("models", [])}
    sampler = ((models.get(model) or {}).get("detected") or {}).get("sampler") or {}
    return {"run": meta.get("run_id"), "model": model, "pipeline": sampler.get("pipeline"),
            "prompts": sampler.get("prompts"), "steps": int(rows["sampler_step"].max()) + 1,
            "guidance": sampler.get("guidance_used"), "samples": int(rows["n_samples"].max())}


#################################################################################
#                                 The methods                                   #
#################################################################################


def _magcache(rows: pd.DataFrame, steps: int | None, source: dict) -> dict:
    S = source["steps"]
    ratios = [1.0] + rows["value"].astype(float).tolist()  # step 0 has nothing to compare with: 1.0
    errors = [0.0] + rows["stderr"].astype(float).tolist()
    if len(ratios) != S:
        raise DardiagError(f"the run's mag_ratio rows cover {len(ratios)} of its {S} steps; run its trajectory again")
    notes = []
    n = steps or S
    if n != S:
        ratios, errors = resample(ratios, n), resample(errors, n)
        notes.append(f"resampled from the run's {S} steps to {n}: step i takes the nearest measured step "
                     f"round(i ({S} - 1) / ({n} - 1)), as diffusers resamples mag_ratios")
    return {"config": {"mag_ratios": [round(r, 6) for r in ratios], "num_inference_steps": n},
            "stderr": {"mag_ratios": [None if not math.isfinite(e) else round(e, 6) for e in errors]}, "notes": notes}


def computed_steps(changes: np.ndarray, threshold: float, *, accumulate: np.ndarray | None = None) -> np.ndarray:
    """Per prompt (P,), the steps computed in full when a step is reused while the change accumulated since
    the last computed step (each step's ``changes``, or ``accumulate`` where given: TeaCache rescales)
    stays at or below ``threshold``; step 0 is always computed."""
    add = changes if accumulate is None else accumulate  # [P, S-1]
    out = np.ones(add.shape[0])
    acc = np.zeros(add.shape[0])
    for i in range(add.shape[1]):
        acc = acc + add[:, i]
        compute = acc > threshold
        out += compute
        acc = np.where(compute, 0.0, acc)
    return out


def threshold_for(add: np.ndarray, computed: int) -> tuple[float, np.ndarray]:
    """The largest threshold at which the prompts compute at least ``computed`` steps on average (bisection
    over the sorted candidate values), and the per-prompt counts there."""
    S = add.shape[1] + 1
    if not 1 <= computed <= S:
        raise DardiagError(f"--computed must be between 1 and the run's {S} steps, got {computed}")
    cum = np.cumsum(add, axis=1)
    candidates = np.unique(np.concatenate([[0.0], cum.ravel(), add.ravel()]))
    lo, hi = 0, len(candidates) - 1
    while lo < hi:  # counts fall as the threshold rises
        mid = (lo + hi + 1) // 2
        if computed_steps(add, candidates[mid]).mean() >= computed:
            lo = mid
        else:
            hi = mid - 1
    return float(candidates[lo]), computed_steps(add, candidates[lo])


def _firstblock(rows: pd.DataFrame, computed: int | None, source: dict) -> dict:
    changes = per_sample(rows)  # [P, S-1]
    computed = computed or max(1, source["steps"] // 2)
    tau, counts = threshold_for(changes, computed)
    se = counts.std(ddof=1) / math.sqrt(len(counts)) if len(counts) > 1 else float("nan")
    return {"config": {"threshold": round(tau, 6)},
            "stderr": {"computed_steps": None if not math.isfinite(se) else round(float(se), 4)},
            "computed_steps": round(float(counts.mean()), 3),
            "notes": [f"threshold {tau:.4g}: {counts.mean():.2f} of {source['steps']} steps computed in full on "
                      f"these prompts (asked {computed}; the change since the last computed step is taken as the sum "
                      "of step-to-step changes: measure the real count with dardiag cache-eval)"]}


def fit_poly(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares polynomial coefficients, highest degree first (numpy.poly1d's order)."""
    if len(x) <= degree:
        raise DardiagError(f"{len(x)} (prompt, step) pairs are too few for a degree-{degree} polynomial; "
                           "lower --degree or run more prompts or steps")
    return np.polyfit(x, y, degree)


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else float("nan")


def _teacache(rows_in: pd.DataFrame, rows_out: pd.DataFrame, degree: int, folds: int, computed: int | None,
              source: dict) -> dict:
    x, y = per_sample(rows_in), per_sample(rows_out)  # [P, S-1] each, the same samples and steps
    coef = fit_poly(x.ravel(), y.ravel(), degree)
    P = x.shape[0]
    k = min(folds, P)
    held = []
    if k >= 2 and (P - -(-P // k)) * x.shape[1] > degree:  # each fold of prompts predicted by a fit on the others
        pred = np.empty_like(y)
        for f in range(k):
            test = np.arange(P) % k == f
            c = fit_poly(x[~test].ravel(), y[~test].ravel(), degree)
            pred[test] = np.polyval(c, x[test])
        held = [r2(y.ravel(), pred.ravel())]
    rescaled = np.clip(np.polyval(coef, x), 0, None)  # TeaCache accumulates the rescaled change
    computed = computed or max(1, source["steps"] // 2)
    tau, counts = threshold_for(rescaled, computed)
    return {"config": {"coefficients": [float(c) for c in coef], "rel_l1_thresh": round(tau, 6)},
            "stderr": {}, "r2": r2(y.ravel(), np.polyval(coef, x.ravel())),
            "r2_held_out": held[0] if held else float("nan"), "folds": k, "computed_steps": round(float(counts.mean()), 3),
            "notes": [f"degree {degree} on {x.size} (prompt, step) pairs; held-out R^2 over {k} prompt folds"
                      + ("" if held else " (not enough prompts left to fit once a fold is held out)"),
                      f"rel_l1_thresh {tau:.4g}: {counts.mean():.2f} of {source['steps']} steps computed on these "
                      f"prompts (asked {computed})"]}


def phases(rows: pd.DataFrame) -> tuple[int, int | None, float]:
    """(the first step from which the output change stays at or below its median, the last such step
    before it rises above it again at the end (None: it does not), the median change)."""
    v = rows["value"].astype(float).to_numpy()
    steps = rows["sampler_step"].astype(int).to_numpy()
    med = float(np.median(v))
    calm = v <= med
    # from the first step that begins three calm steps in a row (or the calm rest of the run)
    start = next((int(steps[i]) for i in range(len(v)) if calm[i:i + 3].all()), int(steps[-1]))
    end = None
    if not calm[-1]:  # the final steps change more again (detail): compute them
        last_calm = max((i for i in range(len(v)) if calm[i]), default=None)
        end = int(steps[last_calm]) if last_calm is not None else None
    return start, end, med


def _intervals(method: str, rows: pd.DataFrame, source: dict) -> dict:
    start, end, med = phases(rows)
    v = rows["value"].astype(float)
    middle = v[(rows["sampler_step"] >= start) & ((rows["sampler_step"] <= end) if end is not None else True)]
    budget = float(v.max())  # reuse while the accumulated change stays under the largest single step's
    interval = max(1, int(budget // max(float(middle.mean()) if len(middle) else med, 1e-12)))
    t = dict(zip(rows["sampler_step"].astype(int), rows["t_native"].astype(float)))
    lo = t.get(end, min(t.values())) if end is not None else -1
    hi = t.get(start, max(t.values()))
    if method == "taylorseer":
        config = {"cache_interval": interval, "disable_cache_before_step": start, "disable_cache_after_step": end}
    else:  # PAB and FasterCache: reuse attention every `interval` steps inside the calm timestep range
        config = {"spatial_attention_block_skip_range": interval,
                  "spatial_attention_timestep_skip_range": [round(lo, 3), round(hi, 3)]}
    return {"config": config, "stderr": {}, "suggestion": True,
            "curve": {"sampler_step": rows["sampler_step"].astype(int).tolist(),
                      "t_native": [round(x, 3) for x in rows["t_native"].astype(float)],
                      "output_change": [round(x, 6) for x in v], "stderr": [round(x, 6) for x in rows["stderr"].astype(float)]},
            "notes": [f"a suggestion: steps {start}..{end if end is not None else 'the end'} change the output by at "
                      f"most the median {med:.3g} per step (computed in full outside them); reusing every {interval} "
                      f"steps keeps the accumulated change under the largest single step's {budget:.3g}"]}


def calibrate(df: pd.DataFrame, method: str, *, model: str | None = None, branch: str | None = None,
              steps: int | None = None, computed: int | None = None, degree: int = 4, folds: int = 4) -> dict:
    """One method's configuration for ``model`` (the run's only one by default) in ``branch`` (default "cond")."""
    if method not in METHODS:
        raise DardiagError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise DardiagError(f"--steps must be a positive integer, got {steps!r}")
    model, branch, rows = _rows(df, NEEDS[method], model, branch)
    source = _source(df, model, rows)
    if method == "magcache":
        out = _magcache(rows, steps, source)
    elif method == "firstblock":
        out = _firstblock(rows, computed, source)
    elif method == "teacache":
        _, _, outputs = _rows(df, "output_change", model, branch)
        out = _teacache(rows, outputs, degree, folds, computed, source)
    else:
        out = _intervals(method, rows, source)
    return jsonable({"method": method, "class": CLASSES[method], **out, "branch": branch, "source": source})


def jsonable(value):
    """``value`` as plain JSON: numpy numbers as Python ones, NaN and infinities as null."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def python_line(result: dict) -> str:
    """The configuration as a line to paste."""
    args = ", ".join(f"{k}={v!r}" for k, v in result["config"].items())
    if result["method"] == "teacache":
        return f"coefficients = {result['config']['coefficients']!r}; rel_l1_thresh = {result['config']['rel_l1_thresh']!r}"
    return f"from diffusers import {result['class']}; config = {result['class']}({args})"
