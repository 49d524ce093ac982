"""A cache schedule applied inside a pipeline's own loop, and what it measurably does to its outputs.

:class:`CachedCalls` is the pipeline-side counterpart of ``dardiag.savings.schedule.CachedForward``: around every
transformer call of the pipeline (``dardiag.pipelines.sampler.intercept``), at sampler step i the blocks
the schedule names for step i reuse the contribution they made at the last step they were computed, in
the same call position of the step (the same guidance branch); step 0 computes everything. Editing is
by hooks on the image stream (``dardiag.hooks.edits.tap_editing``), so the block still runs: this
measures what the reuse does, not the time it would save.

:func:`evaluate` runs the pipeline for each sample uncached and with the schedule, from the same seed
(sample j: prompt j mod P, generator seed + j), and compares the final latents (relative error per
sample) and, where the pipeline has a VAE, the decoded images (relative error and PSNR), as means with
standard errors over the samples.
"""

from __future__ import annotations

import math
import time

import torch

from dardiag.engine.collector import mean_and_stderr
from dardiag.errors import DardiagError
from dardiag.hooks.edits import BlockEdit
from dardiag.hooks.recorder import Keep, record
from dardiag.metrics import relative_change
from dardiag.pipelines.door import bind
from dardiag.pipelines.sampler import PipelineSampler, StepClock, call_parameters, intercept
from dardiag.subject import Subject


class CachedCalls:
    """``around`` of :func:`intercept` applying a schedule (see the module docstring); counts block evaluations."""

    def __init__(self, subject: Subject, schedule):
        if subject.editing is None:
            raise DardiagError(f"{subject.name} has no block editing; it cannot be sampled with a cache")
        if schedule.depth != subject.spec.depth:
            raise DardiagError(f"the schedule is for {schedule.depth} blocks, {subject.name} has {subject.spec.depth}")
        self.s, self.schedule = subject, schedule
        self.clock = StepClock(subject.pipeline.map.time_key)
        self.taps = [tp for tp in subject.spec.taps if tp.name.startswith("z_")]
        self.parts: dict[int, dict[int, tuple]] = {}  # call position -> block k -> its last computed contribution
        self.computed = self.reused = 0

    @torch.no_grad()
    def __call__(self, run, args, kwargs):
        s, D = self.s, self.s.spec.depth
        i, slot = self.clock.tick(bind(s.model, args, kwargs))
        last = self.parts.setdefault(slot, {})
        edits = {k: BlockEdit(reuse=last[k]) for k in (self.schedule.reused_at(i) if i > 0 else []) if k in last}
        keep = Keep()
        with s.editing.edit(edits), record(s.model, self.taps, keep, grads=False):  # edits first (tap_editing)
            out = run(*args, **kwargs)
        for k in range(1, D + 1):
            if k not in edits:
                last[k] = s.editing.parts(keep.seen, k)
        self.computed += D - len(edits)
        self.reused += len(edits)
        return out


def final_outputs(ps: PipelineSampler, j: int, steps: int, around=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(final latents, decoded images or None) of sample j's pipeline call, its transformer calls run through
    ``around`` when given (:func:`intercept`); with a VAE the call decodes ("pt") and a step callback keeps the
    final latents."""
    params = call_parameters(ps.pipe)
    kept: list[torch.Tensor] = []
    more: dict = {}
    if getattr(ps.pipe, "vae", None) is not None:
        if "callback_on_step_end" in params:
            def on_end(pipe, i, t, kwargs):
                kept.append(kwargs["latents"].detach().clone())
                return {}
            more = {"callback_on_step_end": on_end, "callback_on_step_end_tensor_inputs": ["latents"],
                    "output_type": "pt"}
        elif "callback" in params and "callback_steps" in params:
            more = {"callback": lambda i, t, latents: kept.append(latents.detach().clone()), "callback_steps": 1,
                    "output_type": "pt"}
    if around is not None:
        with intercept(ps.subject.model, around):
            out = ps.call([j], steps, **more)
    else:
        out = ps.call([j], steps, **more)
    if more:
        return kept[-1].float().cpu(), out.float().cpu()
    return out.float().cpu(), None


def _stat(values: list[float]) -> tuple[float, float]:
    v = torch.tensor(values, dtype=torch.float64)
    return mean_and_stderr(torch.stack([v.sum(), v.square().sum(), torch.tensor(float(len(values)))]))


def evaluate(subject: Subject, schedule, *, samples: int) -> dict:
    """The schedule applied in the pipeline's own loop, samples 0..samples-1 uncached and cached."""
    ps: PipelineSampler = subject.pipeline
    if samples < 2:
        raise DardiagError(f"--samples must be at least 2 (a standard error needs two), got {samples}")
    lat, img, psnr, identical = [], [], [], True
    t_ref = t_c = 0.0
    computed = reused = 0
    for j in range(samples):
        start = time.perf_counter()
        ref, ref_img = final_outputs(ps, j, schedule.steps)
        middle = time.perf_counter()
        calls = CachedCalls(subject, schedule)
        got, got_img = final_outputs(ps, j, schedule.steps, calls)
        s0, s1 = middle - start, time.perf_counter() - middle
        computed, reused = computed + calls.computed, reused + calls.reused
        t_ref, t_c = t_ref + s0, t_c + s1
        lat.append(float(relative_change(got[None].flatten(1), ref[None].flatten(1))[0]))
        identical = identical and torch.equal(got, ref)
        if ref_img is not None:
            img.append(float(relative_change(got_img[None].flatten(1), ref_img[None].flatten(1))[0]))
            mse = float((got_img - ref_img).double().square().mean())
            psnr.append(10 * math.log10(1.0 / mse) if mse > 0 else float("inf"))
    err, err_se = _stat(lat)
    out = {"model": subject.name, "tolerance": schedule.meta.get("tolerance"), "cells": len(schedule.cells),
           "saved_fraction": schedule.saved_fraction, "evaluations_saved": reused / max(reused + computed, 1),
           "rel_error": err, "rel_error_se": err_se, "samples": samples, "steps": schedule.steps,
           "cfg": ps.guidance(), "seconds_uncached": t_ref, "seconds_cached": t_c, "identical": identical,
           "pipeline": ps.name}
    if img:
        out["image_rel_error"], out["image_rel_error_se"] = _stat(img)
        finite = [p for p in psnr if math.isfinite(p)]
        out["psnr"], out["psnr_se"] = _stat(finite) if len(finite) >= 1 else (float("inf"), float("nan"))
    return out

