"""``--trajectory`` on a diffusers pipeline: its own denoising loop, observed at every transformer call.

The pipeline runs unchanged (its scheduler, steps, guidance, sizes; sample j from seed + j, one sample
per call, so that any single trajectory can be rerun with the pipeline alone); the transformer's forward
is intercepted (``dardiag.pipelines.sampler.intercept``) and each call is run as the pipeline asked,
with the block-state taps recording z_0..z_D, and returned unchanged. Calls are grouped into sampler
steps by their timestep (steps counted from 0 as the pipeline's loop counts them), and a call is compared
with the call in the same position of the previous step. Its rows are split into guidance branches: a
group of rows is "cond" when its conditioning equals what the pipeline hands the transformer with
guidance off, else "uncond" (two passes per step, or one batch of [uncond; cond], come out the same).

Per block k, step i >= 1 and branch, per sample (diagnostics definitions as the DiT path,
``dardiag.savings.trajectory``): ``step_rel_change`` and ``step_cos`` of z_k, ``delta_rel_change`` of
the block's contribution z_k - z_{k-1}, and, unless turned off, the causal ``cache_error``: the call
run again with block k's contribution of step i - 1 reused (tap editing, ``dardiag.hooks.edits``), the
relative change of its prediction (the learned-variance half of the channels left out). One extra
transformer call per block and step: said in the cost.

Legend: R rows of a call, N samples of a pipeline call, T image tokens, D width.
"""

from __future__ import annotations

from typing import Sequence

import torch

from dardiag.savings.trajectory import TrajectoryCollector, TrajectoryJob, check_trajectory
from dardiag.hooks.edits import BlockEdit, contribution
from dardiag.hooks.recorder import Keep, Tap, record
from dardiag.metrics import relative_change, token_cosine
from dardiag.pipelines.door import bind
from dardiag.pipelines.sampler import PipelineSampler, StepClock, intercept, prediction
from dardiag.subject import Subject

COND, UNCOND = "cond", "uncond"


def predicted(out, latents: torch.Tensor) -> torch.Tensor:
    """A call's prediction in the latents' layout (R, ...): the first half of the channels where the model
    also predicts its variance (twice the latent channels, as DiT and PixArt do)."""
    pred = prediction(out)
    if pred.dim() >= 4 and pred.shape[1] == 2 * latents.shape[1] and pred.shape[2:] == latents.shape[2:]:
        return pred[:, :latents.shape[1]]
    return pred


def l1_change(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """mean|new - old| / mean|old| per sample (N,): the relative L1 change FirstBlockCache and TeaCache use."""
    a, b = new.detach().double().flatten(1), old.detach().double().flatten(1)  # (N, F)
    return (a - b).abs().mean(dim=1) / b.abs().mean(dim=1).clamp_min(1e-12)


def magnitude_ratio(r: torch.Tensor, r_old: torch.Tensor) -> torch.Tensor:
    """MagCache's ratio per sample (N,): mean over tokens of norm(r) / (norm(r_old) + 1e-8), as diffusers'
    calibration computes it (float32 token norms)."""
    return (r.float().norm(dim=-1) / (r_old.float().norm(dim=-1) + 1e-8)).flatten(1).mean(dim=1)


def first_attention(model, block_path: str) -> str | None:
    """The path of the first attention module inside the first block: its input is the block's modulated,
    normalised image stream (what TeaCache measures)."""
    block = model.get_submodule(block_path)
    for name, module in block.named_modules():
        if name and type(module).__name__.endswith("Attention"):
            return f"{block_path}.{name}"
    return None


def branches(arguments: dict, reference: dict, keys: Sequence[str], rows: int, n: int) -> list[tuple[str, slice]]:
    """The guidance branches of a call's ``rows`` rows (groups of the ``n`` samples): "cond" where a group's
    conditioning equals the reference (the call with guidance off), else "uncond"."""
    out = []
    for g in range(max(rows // n, 1)):
        sl = slice(g * n, (g + 1) * n)
        same = [torch.equal(arguments[k][sl], reference[k]) for k in keys
                if torch.is_tensor(arguments.get(k)) and torch.is_tensor(reference.get(k))
                and arguments[k].shape[0] == rows and tuple(arguments[k][sl].shape) == tuple(reference[k].shape)]
        if same:
            out.append((COND if all(same) else UNCOND, sl))
        else:  # nothing to compare (an unconditional model): diffusers batches guidance as [uncond; cond]
            out.append((COND if g == rows // n - 1 else UNCOND, sl))
    return out


class PipelineObserver:
    """``around`` of :func:`intercept`: one pipeline call's transformer calls, recorded into ``col``."""

    def __init__(self, subject: Subject, col: TrajectoryCollector, reference: dict, n: int, cache_error: bool,
                 on_step=None, steps: int = 0, ids: list[int] | None = None):
        self.s, self.col, self.ref, self.n, self.cache = subject, col, reference, n, cache_error
        self.on_step, self.steps, self.told = on_step, steps, 0  # progress: one call per sampler step
        self.ids = list(ids) if ids is not None else list(range(n))  # the samples of the pipeline call
        self.map = subject.pipeline.map
        names = {f"z_{k}" for k in range(subject.spec.depth + 1)}
        self.taps = [tp for tp in subject.spec.taps if tp.name in names]
        z1 = next(tp for tp in subject.spec.taps if tp.name == "z_1").module
        attention = first_attention(subject.model, z1.removesuffix(".image") + (".block" if z1.endswith(".image") else ""))
        if attention is not None:  # the first block's modulated input (TeaCache's signal)
            self.taps.append(Tap("modulated", attention, pick=_hidden_states, pre=True))
        self.clock = StepClock(self.map.time_key)
        self.prev: dict[int, tuple[int, dict]] = {}  # slot -> (step, the states it recorded)
        self.calls = 0  # the transformer calls the pipeline made (observed, not counting cache-error calls)

    def _tell(self) -> None:
        if self.on_step is not None and self.told < self.steps:
            self.told += 1
            self.on_step()

    def finish(self) -> None:
        """The pipeline's call is over: progress for the last step (and any the pipeline skipped)."""
        while self.on_step is not None and self.told < self.steps:
            self._tell()

    @torch.no_grad()
    def __call__(self, run, args: tuple, kwargs: dict):
        s, ed, D = self.s, self.s.editing, self.s.spec.depth
        arguments = bind(s.model, args, kwargs)
        i, slot = self.clock.tick(arguments)
        if i > 0 and slot == 0:  # a new step: the previous one is done
            self._tell()
        self.calls += 1
        keep = Keep()
        with record(s.model, self.taps, keep, grads=False):
            out = run(*args, **kwargs)
        seen = keep.seen
        t_native = self.map.t_native(arguments)
        if t_native is not None:
            level = float(s.family.to_noise_level(torch.tensor([t_native], dtype=torch.float64))[0])
            self.col.times[i] = (level, t_native)
        prev = self.prev.get(slot)
        if prev is not None and prev[0] == i - 1:
            old = prev[1]
            latents = arguments[self.map.latents_key]
            groups = branches(arguments, self.ref, self.map.keys_of_rows(), latents.shape[0], self.n)
            pred = predicted(out, latents)  # (R, ...)
            for label, rows in groups:
                for k in range(D + 1):
                    z, z_old = seen[f"z_{k}"][rows], old[f"z_{k}"][rows]  # (N, T, D)
                    self.col.add("rel", k, i, relative_change(z, z_old), label)
                    self.col.add("cos", k, i, token_cosine(z_old, z).mean(dim=1), label)
                self._calibration(i, label, rows, seen, old, pred)
                for k in range(1, D + 1):
                    c = contribution(ed.parts(seen, k), ed.additive)[rows]
                    c_old = contribution(ed.parts(old, k), ed.additive)[rows]
                    self.col.add("delta", k, i, relative_change(c, c_old), label)
            if self.cache:
                for k in range(1, D + 1):
                    with ed.edit({k: BlockEdit(reuse=ed.parts(old, k))}):
                        cached = predicted(run(*args, **kwargs), latents)
                    rel = relative_change(cached.float(), pred.float())  # (R,)
                    for label, rows in groups:
                        self.col.add("cache", k, i, rel[rows], label)
        self.prev[slot] = (i, {**seen, "pred": predicted(out, arguments[self.map.latents_key]).detach()})
        return out

    def _calibration(self, i: int, label: str, rows: slice, seen: dict, old: dict, pred: torch.Tensor) -> None:
        """What MagCache, FirstBlockCache and TeaCache compare between steps, per sample of ``rows``."""
        D = self.s.spec.depth
        r, r_old = seen[f"z_{D}"][rows] - seen["z_0"][rows], old[f"z_{D}"][rows] - old["z_0"][rows]  # (N, T, D)
        self.col.add("mag", 0, i, magnitude_ratio(r, r_old), label, self.ids)
        r1, r1_old = seen["z_1"][rows] - seen["z_0"][rows], old["z_1"][rows] - old["z_0"][rows]
        self.col.add("fbc", 0, i, l1_change(r1, r1_old), label, self.ids)
        if "modulated" in seen:
            self.col.add("tin", 0, i, l1_change(seen["modulated"][rows], old["modulated"][rows]), label, self.ids)
        self.col.add("out", 0, i, l1_change(pred[rows], old["pred"][rows]), label, self.ids)


def _hidden_states(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def pipeline_job(subject: Subject, inputs, config, device) -> TrajectoryJob:
    """The sweep's trajectory unit on a pipeline: samples 0..N-1 of the run, one pipeline call each."""
    check_trajectory(subject)
    ps: PipelineSampler = subject.pipeline
    steps = ps.steps(config.trajectory_steps)

    def run(col: TrajectoryCollector, sl: slice, on_step) -> None:
        for j in range(sl.start, sl.stop):
            reference = ps.reference([j])
            observer = PipelineObserver(subject, col, reference, 1, config.analyses.cache_error, on_step, steps, [j])
            with intercept(subject.model, observer):
                ps.call([j], config.trajectory_steps)
            observer.finish()

    g = ps.guidance()
    label = f"{ps.name} {steps} steps" + (f", guidance {g:g}" if g is not None else "")
    return TrajectoryJob([slice(j, j + 1) for j in range(inputs.count)], steps, label,
                         lambda: TrajectoryCollector(subject.spec, config.analyses, device, steps), run)
