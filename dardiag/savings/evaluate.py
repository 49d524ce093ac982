"""``dardiag cache-eval PIPELINE --prompts P``: the caching methods people run, measured on this pipeline.

For each sample j (prompt j mod P, generator seed + j) the pipeline runs uncached and then with every
(method, setting): diffusers' own cache hooks (``transformer.enable_cache(config)``: FirstBlockCache,
MagCache, TaylorSeer, Pyramid Attention Broadcast, FasterCache, SeaCache), cache-dit's DBCache where that
package is installed, and dardiag's own ``cache-plan`` schedule (from a trajectory run). Per sample it
measures, by hooks, the transformer blocks actually evaluated (the last linear layer of each block runs
only when the block computes) and attention modules run, the wall time of the call, and the error of
the final latents against the uncached call (relative L2) and, where the pipeline has a VAE, of the
decoded images (PSNR). The uncached and cached calls of a sample run back to back, so a busy machine
slows both alike. Results: one row per (method, setting, sample) (:func:`evaluate`), summarised as means
with standard errors (:func:`summarise`), with the Pareto front of speed-up against error marked.

A method the class cannot take (no ``enable_cache``: SD3, DiT, PixArt, Sana, ...; a hook that fails on
its blocks) gets one line in the notes and the rest of the evaluation goes on. dardiag's schedule edits
the image stream by hooks, so its blocks still run: its speed-up is the block evaluations it would save,
not time.

Legend: P prompts, S sampler steps, D blocks.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from dardiag.adapters.open import DTYPES, open_subject
from dardiag.adapters.options import LoadOptions
from dardiag.atomic import atomic_write
from dardiag.savings.plan import plan_schedule
from dardiag.savings.calibrate import calibrate
from dardiag.engine.collector import mean_and_stderr
from dardiag.engine.devices import device_name
from dardiag.pipelines.options import PipelineOptions, attach_pipelines
from dardiag.plots.pareto import fig_cache_eval
from dardiag.plots.theme import save
from dardiag.errors import DardiagError
from dardiag.metrics import relative_change
from dardiag.savings.pipeline_cache import CachedCalls, final_outputs
from dardiag.pipelines.sampler import PipelineSampler
from dardiag.runs import read_profile
from dardiag.subject import Subject

DIFFUSERS = ("firstblock", "magcache", "taylorseer", "pab", "fastercache", "seacache")
METHODS = (*DIFFUSERS, "cache-dit", "dardiag")
DEFAULT_METHODS = ("firstblock", "magcache", "taylorseer", "pab", "dardiag")
# the knob each method is evaluated at, and its default settings (--settings method=v1,v2,...)
KNOBS = {"firstblock": ("threshold", (0.05, 0.1, 0.2)), "magcache": ("threshold", (0.03, 0.06, 0.12)),
         "taylorseer": ("cache_interval", (2, 3, 5)), "pab": ("spatial_attention_block_skip_range", (2, 3, 4)),
         "fastercache": ("spatial_attention_block_skip_range", (2, 3)), "seacache": ("threshold", (0.1, 0.25, 0.5)),
         "cache-dit": ("residual_diff_threshold", (0.05, 0.1, 0.2)), "dardiag": ("tolerance", (0.01, 0.03, 0.1))}


@dataclass(frozen=True)
class Setting:
    method: str
    value: float

    @property
    def label(self) -> str:
        return f"{self.method} {KNOBS[self.method][0]}={self.value:g}"


def parse_settings(methods: list[str], settings: list[str] | None) -> list[Setting]:
    """The (method, value) pairs to run: each method's default values, or ``--settings method=v1,v2``."""
    for m in methods:
        if m not in METHODS:
            raise DardiagError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    given: dict[str, tuple[float, ...]] = {}
    for item in settings or ():
        method, sep, values = str(item).partition("=")
        if not sep or method not in METHODS:
            raise DardiagError(f"--settings takes method=v1,v2 (methods: {', '.join(METHODS)}), got {item!r}")
        try:
            given[method] = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise DardiagError(f"--settings {item!r}: the values must be numbers") from None
        if not given[method] or not all(math.isfinite(v) and v >= 0 for v in given[method]):
            raise DardiagError(f"--settings {item!r}: give finite values >= 0")
    return [Setting(m, v) for m in methods for v in given.get(m, KNOBS[m][1])]


#################################################################################
#                       Counting what a call computes                           #
#################################################################################


class Counts:
    """Forward pre-hooks counting the blocks that compute (each block's last linear layer, its feed-forward's
    output: it runs whenever the block computes, also when a method reuses only its attention) and the
    attention modules that run, inside a ``with``; removed on exit."""

    def __init__(self, model: nn.Module, block_paths: list[str]):
        self.model, self.handles, self.blocks, self.attentions = model, [], 0, 0
        self.first = []
        for path in block_paths:
            block = model.get_submodule(path)
            linear = next((m for m in reversed(list(block.modules())) if isinstance(m, nn.Linear)), None)
            if linear is not None:
                self.first.append(linear)
        self.attention = [m for m in model.modules() if type(m).__name__.endswith("Attention")]

    def __enter__(self) -> "Counts":
        self.blocks = self.attentions = 0
        seen: set[int] = set()
        for m in self.first:
            if id(m) not in seen:
                seen.add(id(m))
                self.handles.append(m.register_forward_pre_hook(lambda *a: self._add("blocks")))
        for m in self.attention:
            self.handles.append(m.register_forward_pre_hook(lambda *a: self._add("attentions")))
        return self

    def _add(self, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def block_paths(subject: Subject) -> list[str]:
    """The blocks of the subject's stacks (a wrapped block's own module, not its identity tap)."""
    paths = []
    for tap in subject.spec.taps:
        if tap.name.startswith("z_") and tap.name != "z_0":
            path = tap.module
            paths.append(path[: -len(".image")] + ".block" if path.endswith(".image") else path)
    return paths


#################################################################################
#                              Applying a method                                #
#################################################################################


def _diffusers_config(setting: Setting, ps: PipelineSampler, steps: int, mag_ratios):
    import diffusers

    v, pipe = setting.value, ps.pipe
    now = lambda: pipe.current_timestep  # noqa: E731 - the pipeline's own clock, as diffusers' examples pass it
    if setting.method == "firstblock":
        return diffusers.FirstBlockCacheConfig(threshold=v)
    if setting.method == "magcache":
        if mag_ratios is None:
            raise DardiagError("magcache needs the model's mag_ratios: pass --calibration RUN (a --trajectory run of "
                               "this pipeline)")
        return diffusers.MagCacheConfig(threshold=v, mag_ratios=mag_ratios, num_inference_steps=steps)
    if setting.method == "taylorseer":
        return diffusers.TaylorSeerCacheConfig(cache_interval=int(v))
    if setting.method == "pab":
        return diffusers.PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=int(v),
                                                         current_timestep_callback=now)
    if setting.method == "fastercache":
        return diffusers.FasterCacheConfig(spatial_attention_block_skip_range=int(v), current_timestep_callback=now,
                                           attention_weight_callback=lambda _: 0.3)
    return diffusers.SeaCacheConfig(threshold=v)


@contextmanager
def applied(setting: Setting, subject: Subject, steps: int, *, mag_ratios=None, schedule_of=None) -> Iterator[object]:
    """Inside, the pipeline runs with ``setting``; yields what to wrap the transformer's calls with (dardiag's
    schedule) or None. One ``DardiagError`` line when the class cannot take the method."""
    ps: PipelineSampler = subject.pipeline
    model = subject.model
    if setting.method == "dardiag":
        if schedule_of is None:
            raise DardiagError("dardiag's schedule needs a trajectory run with cache_error rows: pass --calibration RUN")
        yield CachedCalls(subject, schedule_of(setting.value))
        return
    if setting.method == "cache-dit":
        try:
            import cache_dit
        except ImportError:
            raise DardiagError("cache-dit is not installed (pip install 'dardiag[cache]')") from None
        # cache-dit's defaults (8 front blocks computed, 8 warm-up steps), fewer for a small model or a short run
        fn, warmup = min(8, max(1, subject.spec.depth // 4)), 8 if steps >= 16 else max(1, steps // 4)
        try:
            cache_dit.enable_cache(ps.pipe, cache_config=cache_dit.DBCacheConfig(
                Fn_compute_blocks=fn, Bn_compute_blocks=0, max_warmup_steps=warmup,
                residual_diff_threshold=setting.value))
        except Exception as e:  # noqa: BLE001 - cache-dit has no adapter for this pipeline
            raise DardiagError(f"cache-dit cannot cache {ps.name} ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
        try:
            yield None
        finally:
            cache_dit.disable_cache(ps.pipe)
        return
    if not hasattr(model, "enable_cache"):
        raise DardiagError(f"{type(model).__name__} has no enable_cache: diffusers' cache hooks do not support this class")
    config = _diffusers_config(setting, ps, steps, mag_ratios)
    try:
        model.enable_cache(config)
    except Exception as e:  # noqa: BLE001 - a hook that does not know these blocks
        raise DardiagError(f"diffusers' {setting.method} hooks refuse {type(model).__name__} "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    try:
        yield None
    finally:
        model.disable_cache()


#################################################################################
#                                 The evaluation                                #
#################################################################################


def _measure(ps: PipelineSampler, j: int, steps: int, counts: Counts, around=None) -> dict:
    with counts:
        start = time.perf_counter()
        latents, images = final_outputs(ps, j, steps, around)
        seconds = time.perf_counter() - start
    return {"latents": latents, "images": images, "seconds": seconds, "blocks": counts.blocks,
            "attentions": counts.attentions}


def evaluate(subject: Subject, settings: list[Setting], *, samples: int, steps: int | None = None, mag_ratios=None,
             schedule_of: Callable | None = None, on_sample: Callable[[str], None] | None = None,
             notes: list[str] | None = None) -> pd.DataFrame:
    """One row per (method, setting, sample): blocks and attentions run, seconds, the latents' relative error
    and the images' PSNR against the uncached call of the same sample (``uncached`` rows: the reference)."""
    ps: PipelineSampler = subject.pipeline
    steps = ps.steps(steps)
    counts = Counts(subject.model, block_paths(subject))
    notes = notes if notes is not None else []
    rows, refused = [], set()
    for j in range(samples):
        ref = _measure(ps, j, steps, counts)
        rows.append(_row("uncached", float("nan"), j, ref, ref))
        for s in settings:
            if s.method in refused:
                continue
            if on_sample is not None:
                on_sample(f"sample {j + 1}/{samples}: {s.label}")
            try:
                with fail_open() as said, applied(s, subject, steps, mag_ratios=mag_ratios,
                                                  schedule_of=schedule_of) as around:
                    got = _measure(ps, j, steps, counts, around)
                    if isinstance(around, CachedCalls):  # hook edits: the blocks ran; count what the schedule reuses
                        got["blocks"] = around.computed
                if said:  # the hook gave up and computed everything: its rows would pass for a perfect method
                    raise DardiagError(f"diffusers ran it in fail-open mode on this pipeline, computing every "
                                       f"block ({said[0]}); nothing of it is measured")
            except DardiagError as e:
                refused.add(s.method)
                notes.append(f"{s.method}: {e}")
                continue
            rows.append(_row(s.method, s.value, j, got, ref))
    return pd.DataFrame(rows)


@contextmanager
def fail_open() -> Iterator[list[str]]:
    """-> the messages with which a diffusers cache hook said it runs "fail-open" (SeaCache without the
    step metadata its pipeline does not pass, with autograd on, ...): they are kept, not printed."""
    import diffusers.hooks  # noqa: F401 (every hook's logger exists before the filters go on)

    said: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "fail-open" in text or "running full" in text:
            said.append(" ".join(text.split()))
            return False
        return True

    names = [n for n in list(logging.root.manager.loggerDict) if n.startswith("diffusers.hooks")]
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addFilter(keep)
    try:
        yield said
    finally:
        for lg in loggers:
            lg.removeFilter(keep)


def _row(method: str, value: float, j: int, got: dict, ref: dict) -> dict:
    err = float(relative_change(got["latents"][None].flatten(1), ref["latents"][None].flatten(1))[0])
    psnr = float("nan")
    if got["images"] is not None:
        mse = float((got["images"] - ref["images"]).double().square().mean())
        psnr = 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")
    return {"method": method, "setting": value, "sample": j, "blocks": got["blocks"], "attentions": got["attentions"],
            "blocks_uncached": ref["blocks"], "seconds": got["seconds"], "seconds_uncached": ref["seconds"],
            "rel_error": err, "psnr": psnr, "identical": bool(torch.equal(got["latents"], ref["latents"]))}


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, setting): means with standard errors over samples; the speed-ups (uncached over cached:
    wall time, and block evaluations) as ratios of the means; ``pareto``: no other setting is both faster
    (in block evaluations) and more accurate."""
    out = []
    for (method, value), d in rows[rows["method"] != "uncached"].groupby(["method", "setting"], sort=False):
        r = {"method": method, "setting": value, "samples": len(d)}
        for col in ("rel_error", "psnr", "seconds", "blocks"):
            v = d[col].astype(float)
            v = v[np.isfinite(v)]
            cell = torch.tensor([v.sum(), (v ** 2).sum(), float(len(v))], dtype=torch.float64)
            r[col], r[f"{col}_se"] = mean_and_stderr(cell) if len(v) else (float("nan"), float("nan"))
        r["speedup_time"] = float(d["seconds_uncached"].mean() / d["seconds"].mean())
        r["speedup_blocks"] = float(d["blocks_uncached"].mean() / max(d["blocks"].mean(), 1e-12))
        r["identical"] = bool(d["identical"].all())
        out.append(r)
    s = pd.DataFrame(out)
    if not s.empty:
        s["pareto"] = [not ((s["speedup_blocks"] >= a) & (s["rel_error"] <= b)
                            & ((s["speedup_blocks"] > a) | (s["rel_error"] < b))).any()
                       for a, b in zip(s["speedup_blocks"], s["rel_error"])]
    return s



#################################################################################
#                      The command: open, evaluate, write                       #
#################################################################################


def run_cache_eval(model, out, *, options=None, methods=DEFAULT_METHODS, settings=None, calibration=None,
                   samples: int | None = None, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                   device: str = "auto", dtype: str = "float32", force: bool = False,
                   report: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Open ``model``'s pipeline, evaluate ``methods`` at their settings, write OUT (rows, summary, figure);
    -> (summary, notes). Everything a user gets wrong is one line before the first pipeline call."""
    out = Path(out)
    if out.exists() and not force:
        raise DardiagError(f"--out {out} already exists; pass --force to replace it, or choose another folder")
    if dtype not in DTYPES:
        raise DardiagError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    chosen = parse_settings(list(methods), settings)
    device = device_name(device)
    subject = open_subject(str(model), LoadOptions(weights_dtype=dtype), device=device, seed=seed)
    if "class_name" not in subject.info:
        raise DardiagError(f"{model}: dardiag cache-eval runs a diffusers pipeline; pass its pipeline folder")
    attach_pipelines([subject], options or PipelineOptions(), needed=True, seed=seed, steps=steps, guidance=guidance,
                     device=device, dtype=DTYPES[dtype])
    if subject.pipeline is None:
        raise DardiagError(f"{model} is a transformer folder without its pipeline: pass the pipeline folder or --pipeline DIR")
    n = samples or len(subject.pipeline.prompts)
    if n < 2:
        raise DardiagError(f"--samples {n}: a standard error needs at least 2 samples")
    notes: list[str] = []
    mag_ratios = schedule_of = None
    if calibration is not None:
        run = read_profile(calibration)
        n_steps = subject.pipeline.steps(steps)
        if "magcache" in methods:
            mag_ratios = calibrate(run, "magcache", steps=n_steps)["config"]["mag_ratios"]
            notes.append(f"magcache: mag_ratios from {Path(calibration).name} (branch cond), for {n_steps} steps")
        if "dardiag" in methods:
            def schedule_of(tolerance: float, run=run):
                return plan_schedule(run, tolerance)
    out.mkdir(parents=True, exist_ok=True)
    if report is not None:
        report(f"{subject.pipeline.name}: {n} samples ({subject.pipeline.prompts.source}), "
               f"{subject.pipeline.steps(steps)} steps, {len(chosen)} settings of {', '.join(dict.fromkeys(s.method for s in chosen))}")
    rows = evaluate(subject, chosen, samples=n, steps=steps, mag_ratios=mag_ratios, schedule_of=schedule_of,
                    notes=notes)
    summary = summarise(rows)
    rows.to_parquet(out / "cache_eval.parquet")
    text = summary.to_csv(index=False)
    atomic_write(out / "summary.csv", lambda f: f.write(text.encode()), overwrite=True)
    if not summary.empty:
        save(fig_cache_eval(summary, title=f"{subject.pipeline.name}, {n} samples"), out / "cache_eval")
    return summary, notes
