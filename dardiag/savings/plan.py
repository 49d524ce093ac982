"""``dardiag cache-plan RUN --tolerance TAU``: from a ``--trajectory`` run, which (block, step) cells may
reuse their previous output, what that saves, and what it measurably does to the samples.

* :func:`plan_schedule`: the cells whose measured ``cache_error`` (the relative change of the model's
  prediction at step i when block k reuses its contribution of step i - 1; mean over the run's images)
  is below TAU. Each cell was measured alone, with every other block computed; reusing several cells
  at once compounds, and a block reused at consecutive steps carries an older contribution, which is
  why the schedule's effect is measured rather than predicted.
* :func:`evaluate_schedule`: the model's sampler run twice from the same noise, uncached and with the
  schedule applied for real (``dardiag.savings.schedule.CachedForward``): the relative error of the final
  samples (per image, mean with its standard error), the block evaluations saved, the wall time of
  both runs, and on the bundled digit models the sample score the trainer computes
  (``dardiag.train.score``: classifier accuracy and Frechet distance).

TAU = 0 selects no cell, so it reproduces the uncached sampler exactly (a test pins that).
Legend: N images, C channels, H/W latent side.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import torch

from dardiag.adapters.open import open_subject
from dardiag.adapters.options import LoadOptions
from dardiag.savings.schedule import CachedForward, CacheSchedule
from dardiag.engine.collector import mean_and_stderr
from dardiag.engine.config import SAMPLER_CFG
from dardiag.errors import DardiagError
from dardiag.savings.pipeline_cache import evaluate as pipeline_evaluate
from dardiag.savings.summary import one_model_rows
from dardiag.pipelines.options import PipelineOptions, attach_pipelines
from dardiag.metrics import relative_change
from dardiag.subject import Subject
from dardiag.train.score import digit_score

DIGITS = ((1, 16, 16), 10)  # input shape and classes of the bundled digit models: they get a sample score


def plan_schedule(df: pd.DataFrame, tolerance: float, *, model: str | None = None) -> CacheSchedule:
    """The cells of ``model`` (the run's only one by default) whose cache_error is below ``tolerance``."""
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise DardiagError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    model, rows = one_model_rows(df, "cache_error", model,
                                 "the run has no cache_error rows; profile with --trajectory first")
    settings = (df.attrs.get("dardiag") or {}).get("settings") or {}
    steps = int(settings.get("trajectory_steps") or int(rows["sampler_step"].max()) + 1)
    depth = int(rows["block"].max())
    # a pipeline's guidance branches: a cell is reused in both, so it must be harmless in both
    worst = rows.assign(value=rows["value"].astype(float)).groupby(["block", "sampler_step"])["value"].max().reset_index()
    pick = worst[worst["value"] < tolerance]
    cells = frozenset(zip(pick["block"].astype(int), pick["sampler_step"].astype(int)))
    meta = {"model": model, "tolerance": float(tolerance), "run_id": str(rows["run_id"].iloc[0]),
            "checkpoint": str(rows["checkpoint"].iloc[0]),
            "cfg": SAMPLER_CFG if settings.get("generate_cfg") is None else settings["generate_cfg"]}
    models = ((df.attrs.get("dardiag") or {}).get("config") or {}).get("models") or []
    sha = next((m.get("sha256") for m in models if m.get("name") == model), None)
    if sha:  # the file the cells were measured on: `dardiag sample --cache-schedule` checks it
        meta["sha256"] = sha
    return CacheSchedule(depth, steps, cells, meta)


def open_model_of(df: pd.DataFrame, model: str, *, checkpoint: str | None = None, device="cpu") -> Subject:
    """The run's model opened again from its checkpoint (``checkpoint`` overrides the stored path); the
    file must still hold the weights the run measured (sha256)."""
    meta = df.attrs.get("dardiag") or {}
    cfg = meta.get("config") or {}
    stored = {m.get("name"): m for m in cfg.get("models", [])}
    paths = dict(zip([m.get("name") for m in cfg.get("models", [])], (meta.get("paths") or {}).get("checkpoints", [])))
    path = checkpoint or paths.get(model)
    if not path:
        raise DardiagError(f"the run does not say where {model!r} was read from; pass --checkpoint")
    if not Path(path).exists():
        raise DardiagError(f"{path} (the checkpoint of {model!r}) does not exist; pass --checkpoint")
    load = LoadOptions(**{k: cfg[k] for k in ("family", "num_heads", "input_size", "frames", "text_tokens")
                          if cfg.get(k) is not None})
    subject = open_subject(str(path), load, device=device, name=model)
    want = (stored.get(model) or {}).get("sha256")
    if want and subject.info.get("sha256") and subject.info["sha256"] != want:
        raise DardiagError(f"{path} no longer holds the weights the run measured for {model!r} (sha256 differs)")
    sampler = ((stored.get(model) or {}).get("detected") or {}).get("sampler")
    if sampler:  # the run sampled with the model's pipeline: the same pipeline, prompts, sizes and seeds again
        folder = dict(zip([m.get("name") for m in cfg.get("models", [])],
                          (meta.get("paths") or {}).get("pipelines") or [])).get(model) or subject.info.get("pipeline")
        if not folder or not Path(folder).is_dir():
            raise DardiagError(f"the pipeline folder {folder} the run sampled {model!r} with is not there")
        options = PipelineOptions(pipeline=str(folder), prompts=tuple(sampler["prompt_texts"]),
                                  height=sampler.get("height"), width=sampler.get("width"),
                                  num_frames=sampler.get("num_frames"), call=sampler.get("extra") or {})
        attach_pipelines([subject], options, needed=True, seed=int(sampler.get("seed", 0)), steps=sampler.get("steps"),
                         guidance=sampler.get("guidance"), device=device, dtype=torch.float32)
    return subject


def _timed_sample(subject: Subject, y, steps: int, cfg: float, seed: int, forward=None):
    start = time.perf_counter()
    x = subject.sample(y, steps, cfg, seed, forward=forward)  # (N, C, H, W)
    return x, time.perf_counter() - start


def evaluate_schedule(subject: Subject, schedule: CacheSchedule, *, samples: int | None = None, seed: int = 0,
                      cfg: float | None = None) -> dict:
    """Sample ``samples`` images (balanced classes; default 360) uncached and cached from the same noise and
    compare; a model sampled by its pipeline runs the pipeline itself (``dardiag.savings.pipeline_cache``: its
    prompts and seeds, by default one sample per prompt)."""
    if subject.pipeline is not None:
        return pipeline_evaluate(subject, schedule, samples=samples or len(subject.pipeline.prompts))
    samples = 360 if samples is None else samples
    if subject.sample is None:
        raise DardiagError(f"{subject.name} has no sampler of dardiag's; a schedule cannot be applied to it")
    if samples < 2:
        raise DardiagError(f"--samples must be at least 2, got {samples}")
    cfg = float(schedule.meta.get("cfg", 1.0) if cfg is None else cfg)
    y = torch.arange(samples) % max(subject.num_classes, 1)  # (N,)
    x_ref, t_ref = _timed_sample(subject, y, schedule.steps, cfg, seed)
    fwd = CachedForward(subject, schedule)
    x_c, t_c = _timed_sample(subject, y, schedule.steps, cfg, seed, forward=fwd)
    rel = relative_change(x_c.float(), x_ref.float())  # (N,)
    err, err_se = mean_and_stderr(torch.stack([rel.sum(), rel.square().sum(), torch.tensor(float(rel.numel()))]))
    out = {"model": subject.name, "tolerance": schedule.meta.get("tolerance"), "cells": len(schedule.cells),
           "saved_fraction": schedule.saved_fraction,
           "evaluations_saved": fwd.reused / max(fwd.reused + fwd.computed, 1),
           "rel_error": err, "rel_error_se": err_se, "samples": samples, "steps": schedule.steps, "cfg": cfg,
           "seconds_uncached": t_ref, "seconds_cached": t_c, "identical": bool(torch.equal(x_c, x_ref))}
    if (tuple(subject.input_shape), subject.num_classes) == DIGITS:
        out["score_uncached"] = digit_score(x_ref, y)
        out["score_cached"] = digit_score(x_c, y)
    return out
