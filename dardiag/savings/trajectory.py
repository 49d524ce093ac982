"""``--trajectory``: where along the model's own sampler a block's output could be reused (caching).

The model's sampler (the one ``--inputs generated`` uses: DDIM for dit, Euler for sit / repa) runs from
fixed noise for ``trajectory_steps`` steps, with the labels of the run's inputs, in chunks of
``GENERATE_CHUNK`` images (a seed per chunk: the same trajectories at any --batch-size). At every step
i >= 1 and block k, per image, step i against step i - 1:

* ``step_rel_change`` = ||z_k(i) - z_k(i-1)|| / ||z_k(i-1)|| (k = 0..D): the signal caching methods
  (FORA, Delta-DiT, TeaCache) threshold;
* ``step_cos`` = mean over tokens of cos(z_k(i-1), z_k(i));
* ``delta_rel_change``: the same relative change of block k's contribution (residual z_k - z_{k-1};
  DAR its two sublayer outputs side by side: ``dardiag.hooks.edits``);
* ``cache_error``: its causal counterpart, ||pred_k(i) - pred(i)|| / ||pred(i)|| over the prediction
  channels, where pred_k(i) is the model's prediction at step i with block k's contribution reused
  from step i - 1 (a reuse edit) and everything else computed. One extra forward per (block, step)
  cell, batched over blocks: the images repeated once per block, each copy editing its own block, at
  most ``MAX_ROWS`` rows per forward.

The sampler itself is never edited: every cell is measured on the exact trajectory. Each value is a
mean over images with its standard error (diagnostics.md section 8); under guidance (generate_cfg != 1)
an image's value is the mean over its conditional and unconditional rows. Rows carry ``sampler_step``
i and the step's ``noise_level`` / ``t_native``.

Legend: N images, R rows of a forward (N, or 2N under guidance), T tokens, D channels, P = depth + 1.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from dardiag.engine.collector import add_per_image, mean_and_stderr
from dardiag.engine.config import SAMPLER_STEPS, Analyses
from dardiag.engine.inputs import GENERATE_CHUNK, Inputs
from dardiag.errors import DardiagError
from dardiag.hooks.edits import BlockEdit, contribution
from dardiag.hooks.recorder import Keep, record
from dardiag.metrics import relative_change, token_cosine
from dardiag.subject import SiteSpec, Subject

MAX_ROWS = 512  # rows of one batched cache-error forward (blocks x R); more blocks take further forwards
METRICS = {"rel": "step_rel_change", "cos": "step_cos", "delta": "delta_rel_change", "cache": "cache_error",
           # per transformer call, what caching methods calibrate on (a pipeline's trajectory); kept per sample too
           "mag": "mag_ratio", "fbc": "first_block_change", "tin": "modulated_input_change", "out": "output_change"}
PER_CALL = ("mag", "fbc", "tin", "out")


def check_trajectory(subject: Subject) -> None:
    if subject.sample is None and subject.pipeline is None:
        raise DardiagError(f"--trajectory runs the model's own sampler: dardiag's (its DiT/SiT/REPA) or a diffusers "
                           f"pipeline; {subject.name} ({subject.family.name}) has neither: pass its pipeline folder "
                           "(model_index.json) or --pipeline DIR")
    if subject.editing is None:
        raise DardiagError(f"--trajectory needs a model whose blocks can be edited; {subject.name} has no block editing")


class TrajectoryCollector:
    """Per-image cells [P, steps, 3] of the four metrics, per branch, and each step's (noise level,
    t_native); the state / restored / merge protocol of ``LevelCollector`` (``distributed.reduce_collector``).

    ``branch``: None for dardiag's own sampler (an image's value is the mean over its guidance rows);
    "cond" / "uncond" for the rows of a pipeline's two guidance branches, kept apart."""

    def __init__(self, spec: SiteSpec, analyses: Analyses, device: torch.device | str = "cpu", steps: int = 0):
        self.spec, self.an, self.device, self.steps = spec, analyses, torch.device(device), steps
        self.sums: dict[str, torch.Tensor] = {}  # "rel" or "rel@cond" -> [P, steps, 3]
        if steps:
            for k in METRICS:
                if k not in PER_CALL:
                    self._cells(k, None, steps - 1)
        self.times: dict[int, tuple[float, float]] = {}  # step i -> (noise_level, t_native)
        self.samples: dict[str, dict[int, dict[int, float]]] = {}  # "mag@cond" -> step -> sample id -> value

    def _cells(self, key: str, branch: str | None, i: int) -> torch.Tensor:
        name = key if branch is None else f"{key}@{branch}"
        cells = self.sums.get(name)
        if cells is None or cells.shape[1] <= i:  # a pipeline may take more steps than it was asked
            grown = torch.zeros(self.spec.depth + 1, max(i + 1, self.steps), 3, dtype=torch.float64, device=self.device)
            if cells is not None:
                grown[:, :cells.shape[1]] = cells
            self.sums[name] = cells = grown
        return cells

    def add(self, key: str, k: int, i: int, per_image: torch.Tensor, branch: str | None = None,
            ids: list[int] | None = None) -> None:
        """Per-image values of cell (block k, step i); with sample ``ids``, each sample's own value is kept too."""
        add_per_image(self._cells(key, branch, i)[k, i], per_image)
        if ids is not None:
            kept = self.samples.setdefault(key if branch is None else f"{key}@{branch}", {}).setdefault(i, {})
            kept.update({int(j): float(v) for j, v in zip(ids, per_image.double().cpu())})

    def state(self) -> dict:
        return {"sums": {k: v.detach().cpu().clone() for k, v in self.sums.items()}, "times": dict(self.times),
                "samples": {k: {i: dict(d) for i, d in v.items()} for k, v in self.samples.items()}}

    @classmethod
    def restored(cls, spec: SiteSpec, analyses: Analyses, state: dict, device="cpu") -> "TrajectoryCollector":
        col = cls(spec, analyses, device)
        col.sums = {k: v.to(col.device) for k, v in state["sums"].items()}
        col.times = dict(state["times"])
        col.samples = {k: {i: dict(d) for i, d in v.items()} for k, v in state.get("samples", {}).items()}
        return col

    def merge(self, other: "TrajectoryCollector") -> None:
        for name, v in other.sums.items():
            key, _, branch = name.partition("@")
            mine = self._cells(key, branch or None, v.shape[1] - 1)
            mine[:, :v.shape[1]] += v.to(self.device)
        self.times.update(other.times)
        for name, steps in other.samples.items():
            for i, values in steps.items():
                self.samples.setdefault(name, {}).setdefault(i, {}).update(values)

    def rows(self) -> list[dict]:
        out = []
        for name, cells in sorted(self.sums.items()):
            key, _, branch = name.partition("@")
            cells = cells.cpu()
            for k in range(cells.shape[0]):
                for i in range(cells.shape[1]):
                    if cells[k, i, 2] == 0:
                        continue
                    value, se = mean_and_stderr(cells[k, i])
                    level, t_native = self.times.get(i, (float("nan"), float("nan")))
                    where = dict(site="z", block=k) if key not in PER_CALL else {}
                    kept = self.samples.get(name, {}).get(i)
                    out.append(dict(metric=METRICS[key], **where, sampler_step=i, noise_level=level,
                                    t_native=t_native, value=value, stderr=se, n_samples=int(cells[k, i, 2]),
                                    **({"branch": branch} if branch else {}),
                                    **({"sample_values": [kept[j] for j in sorted(kept)]} if kept else {})))
        return out


class Observer:
    """The sampler's ``forward(i, x, t, y)``: the model's unedited forward at step i, recorded, plus the
    cache-error forwards against step i - 1; returns the unedited output, so the trajectory is exact."""

    def __init__(self, subject: Subject, col: TrajectoryCollector, n_images: int, cache_error: bool = True):
        self.s, self.col, self.n, self.cache = subject, col, n_images, cache_error
        names = {f"z_{k}" for k in range(subject.spec.depth + 1)} | set(subject.editing.part_taps)
        self.taps = [tp for tp in subject.spec.taps if tp.name in names]
        self.prev: tuple[dict, dict] | None = None  # step i - 1: {k: z_k}, {k: parts}

    def per_image(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, self.n).mean(0)  # (R,) -> (N,): guidance rows are [cond; uncond]

    @torch.no_grad()
    def __call__(self, i: int, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
        s, ed, D = self.s, self.s.editing, self.s.spec.depth
        keep = Keep()
        with record(s.model, self.taps, keep, grads=False):
            out = s.call(s.model, x, t, y, None)  # (R, C_out, H, W)
        z = {k: keep.seen[f"z_{k}"] for k in range(D + 1)}  # (R, T, D) each
        parts = {k: ed.parts(keep.seen, k) for k in range(1, D + 1)}  # what a reuse edit takes back
        self.col.times[i] = (float(self.s.family.to_noise_level(t[:1].double().cpu())[0]), float(t[0]))
        if self.prev is not None:
            z_prev, parts_prev = self.prev
            for k in range(D + 1):
                self.col.add("rel", k, i, self.per_image(relative_change(z[k], z_prev[k])))
                self.col.add("cos", k, i, self.per_image(token_cosine(z_prev[k], z[k]).mean(dim=1)))
            for k in range(1, D + 1):
                c, c_prev = contribution(parts[k], ed.additive), contribution(parts_prev[k], ed.additive)
                self.col.add("delta", k, i, self.per_image(relative_change(c, c_prev)))
            if self.cache:
                self._cache_errors(i, x, t, y, out, parts_prev)
        self.prev = (z, parts)
        return out

    def _cache_errors(self, i, x, t, y, out, parts_prev) -> None:
        """cache_error of every block at step i: the rows repeated once per block, copy g reusing block
        ks[g]'s contribution of step i - 1 (row edits: the other blocks compute as usual)."""
        s, R, C = self.s, x.shape[0], self.s.input_shape[0]
        pred = out[:, :C]  # (R, C, H, W)
        per_forward = max(1, MAX_ROWS // R)
        blocks = list(range(1, s.spec.depth + 1))
        for a in range(0, len(blocks), per_forward):
            ks = blocks[a:a + per_forward]
            edits = {k: BlockEdit(reuse=parts_prev[k], rows=slice(g * R, (g + 1) * R)) for g, k in enumerate(ks)}
            reps = len(ks)
            with s.editing.edit(edits):
                cached = s.call(s.model, x.repeat(reps, 1, 1, 1), t.repeat(reps), y.repeat(reps), None)  # (reps R, ...)
            for g, k in enumerate(ks):
                self.col.add("cache", k, i, self.per_image(relative_change(cached[g * R:(g + 1) * R, :C], pred)))


@dataclass
class TrajectoryJob:
    """What the sweep's trajectory unit runs: ``run(col, chunk, on_step)`` observes the sampler on the
    samples of ``chunk`` (one of ``chunks``) into ``col`` and calls ``on_step()`` ``steps`` times per chunk."""

    chunks: list[slice]
    steps: int
    label: str  # "Euler 50 steps, cfg 1", "FluxPipeline 28 steps, guidance 3.5"
    collector: Callable[[], TrajectoryCollector]
    run: Callable[[TrajectoryCollector, slice, Callable[[], None]], None]


def dit_job(subject: Subject, inputs: Inputs, config, device) -> TrajectoryJob:
    """dardiag's own sampler over the inputs' labels, in chunks of GENERATE_CHUNK images."""
    check_trajectory(subject)
    steps, cfg = config.trajectory_steps or SAMPLER_STEPS, config.sampler_cfg
    cache = config.analyses.cache_error

    def run(col: TrajectoryCollector, sl: slice, on_step) -> None:
        y = inputs.y[sl]
        subject.sample(y, steps, cfg, chunk_seed(config.seed, sl.start), forward=Observer(subject, col, y.shape[0], cache))
        on_step()

    sampler = getattr(subject.sample, "label", "the model's sampler")
    return TrajectoryJob(trajectory_chunks(inputs.count), 1, f"{sampler} {steps} steps, cfg {cfg:g}",
                         lambda: TrajectoryCollector(subject.spec, config.analyses, device, steps), run)


def run_trajectory(subject: Subject, inputs: Inputs, *, steps: int, cfg: float, seed: int,
                   chunks: Sequence[slice], analyses: Analyses, device) -> TrajectoryCollector:
    """The model's sampler over the images ``chunks`` (slices of the inputs' labels), observed."""
    check_trajectory(subject)
    col = TrajectoryCollector(subject.spec, analyses, device, steps)
    for sl in chunks:
        y = inputs.y[sl]
        subject.sample(y, steps, cfg, chunk_seed(seed, sl.start),
                       forward=Observer(subject, col, y.shape[0], analyses.cache_error))
    return col


def chunk_seed(seed: int, start: int) -> int:
    """The sampler seed of the chunk of images starting at ``start``: fixed noise for every trajectory."""
    return zlib.crc32(f"trajectory {seed} {start}".encode())


def trajectory_chunks(n: int) -> list[slice]:
    """The images 0..n-1 in sampler chunks of GENERATE_CHUNK (independent of --batch-size)."""
    return [slice(a, min(a + GENERATE_CHUNK, n)) for a in range(0, n, GENERATE_CHUNK)]
