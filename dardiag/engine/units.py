"""The sweep's units of work as values, and the one runner that owns completion, progress, stops and writes.

A :class:`Unit` is one piece of a run that finishes as a whole: per model, its generated inputs (when
they are drawn), one noise level, the timestep probe, the sampler trajectory. It carries its id (the
name of its part in OUT and its key in ``_run.json``), what it measures in words, how many progress
steps it takes in this process, and how it runs. :func:`run_units` goes through them in order: a
finished unit is skipped (after handing later units what they need from it, e.g. a level's saved probe
features), a pending one runs inside a deferred stop and its rows go to ``write`` on rank 0; after every
unit the processes agree whether to stop.

Builders per kind (:func:`model_units`) keep what a kind knows about itself: a level saves its
minibatches and its probe features, the generate unit keeps its chunks in ``OUT/_work`` and the drawn
inputs in ``OUT/_inputs`` (so a resumed or re-plotted run uses exactly the same inputs), a trajectory
keeps its collector between two sampler runs. Everything stopped part-way continues from where it was.

Under torchrun every process runs the same units in the same order on its share of each unit's batches
and calls the stop points equally often (:func:`stop_asked` is a collective).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from dardiag.atomic import atomic_write
from dardiag.engine import distributed, partial
from dardiag.savings.ablation import ablation_rows
from dardiag.engine.collector import LevelCollector
from dardiag.engine.config import ProfileConfig
from dardiag.engine.inputs import minibatches
from dardiag.engine.plan import ModelPlan
from dardiag.engine.progress import Progress
from dardiag.engine.timestep_probe import probe_rows
from dardiag.savings.pipeline_trajectory import pipeline_job
from dardiag.savings.trajectory import TrajectoryCollector, dit_job
from dardiag.runs import stop
from dardiag.runs.layout import INPUTS_DIRNAME, inputs_name


@dataclass
class Unit:
    """One unit of a run (see the module docstring)."""

    id: str  # "m00-l003": its part's name and its key in _run.json
    model: str  # the model's display name
    what: str  # "noise level 0.500 (3/16)": for people
    steps: int  # progress steps this process runs in it
    run: Callable[[], list[dict] | None]  # -> rows to write on rank 0 (None: nothing to write)
    pending: bool = True  # decided before the run, the same on every process
    done: Callable[[], int] = lambda: 0  # steps a stop kept of a pending unit
    skip: Callable[[], None] | None = None  # a finished unit: what later units still need from it
    defer: str = "this minibatch"  # what a first stop waits for


@dataclass
class Context:
    """What every unit of a run shares."""

    config: ProfileConfig
    meta: dict
    work: Path | None  # OUT/_work (None: in memory)
    out: Path | None
    completed: frozenset
    progress: Progress
    halt: stop.StopRequest
    dtype: torch.dtype  # the forward's autocast dtype
    measure: Callable  # run_level (the sweep's, looked up when called: tests replace it)


#################################################################################
#                                   Stopping                                    #
#################################################################################


def stop_asked(halt: stop.StopRequest) -> bool:
    """Whether the sweep stops here; under torchrun every process must call it at the same points and
    gets the same answer: each was signalled or not (torchrun signals all, a scheduler may signal one),
    so they exchange their requests, the largest signal number wins (0: none) and all stop together."""
    if distributed.is_distributed():
        signum = distributed.max_over_ranks(halt.signum or 0)
        if signum:
            halt.adopt(signum, say=distributed.is_main())  # rank 0 says so when another process was asked
            halt.agreed = True
    return halt.requested


def stop_point(halt: stop.StopRequest) -> None:
    if stop_asked(halt):
        halt.check()


#################################################################################
#                                  The runner                                   #
#################################################################################


def run_units(units: list[Unit], ctx: Context, *, write, words: str) -> None:
    """Every unit in order (see the module docstring); ``write(unit_id, rows)`` on rank 0."""
    main = distributed.is_main()
    ctx.progress.begin(total=sum(u.steps for u in units),
                       done=sum(u.done() if u.pending else u.steps for u in units),
                       images_per_step=ctx.config.batch_size, units=words)
    for n, u in enumerate(units, 1):
        if u.pending:
            ctx.progress.describe(f"{u.model}  {u.what}")
            with ctx.halt.deferred(u.defer):
                rows = u.run()
                if rows is not None and main:
                    write(u.id, rows)
        elif u.skip is not None:
            u.skip()
        ctx.progress.unit(f"{u.model}  {u.what}  ({n}/{len(units)})")
        stop_point(ctx.halt)  # a stop asked for during the unit's last step: the unit is written


#################################################################################
#                              Units of one model                               #
#################################################################################


def model_units(si: int, p: ModelPlan, ctx: Context) -> list[Unit]:
    """The units of model ``si``: its generated inputs (when drawn), its levels, probe and trajectory."""
    an = ctx.config.analyses
    s = p.subject
    base = dict(run_id=ctx.meta["run_id"], model=s.name, routing=s.routing, family=s.family.name,
                checkpoint=s.checkpoint, step=s.step, batch_size=ctx.config.batch_size, inputs=p.inputs.label)
    level_ids = [f"m{si:02d}-l{li:03d}" for li in range(len(p.grid))]
    levels_left = any(u not in ctx.completed for u in level_ids)
    probe_id = f"m{si:02d}-probe"
    feats: dict[str, list[torch.Tensor]] = {}  # the probe's pooled features, level by level
    levels: list[torch.Tensor] = []
    ids: list[torch.Tensor] = []
    units = []
    if p.inputs.drawing is not None:
        units.append(_generate_unit(si, p, ctx, needed=levels_left))
    batches = distributed.shard(minibatches(p.inputs.count, ctx.config.batch_size))  # rank r: r, r + W, ...
    rounds = len(minibatches(p.inputs.count, ctx.config.batch_size)[::distributed.world_size()])
    probe_pending = an.probe and probe_id not in ctx.completed
    for li, (level, t_native) in enumerate(p.grid):
        unit = level_ids[li]

        def keep_feats(saved, level=level) -> None:
            for k, v in saved["feats"].items():
                feats.setdefault(k, []).append(v)
            ids.append(saved["ids"])
            levels.append(torch.full((saved["ids"].numel(),), level, dtype=torch.float64))

        def run(unit=unit, level=level, t_native=t_native, keep_feats=keep_feats) -> list[dict]:
            rows, saved = _level(s, p, ctx, unit, level, t_native, batches, rounds)
            if saved is not None:
                keep_feats(saved)
            return [{**base, "noise_level": level, "t_native": t_native, **r} for r in rows]

        def skip(unit=unit, keep_feats=keep_feats) -> None:  # the probe still needs the level's features
            if probe_pending and distributed.is_main():
                keep_feats(torch.load(ctx.work / f"probe-{unit}.pt", weights_only=True))

        units.append(Unit(unit, s.name, f"noise level {level:.3f}  ({li + 1}/{len(p.grid)})", len(batches), run,
                          pending=unit not in ctx.completed, done=lambda unit=unit: partial.done_in(ctx.work, unit),
                          skip=skip))
    if an.probe:
        def probe() -> list[dict] | None:  # on rank 0; the others wait for it at the stop point
            return [{**base, **r} for r in probe_rows(feats, levels, ids, ctx.config.seed)] if distributed.is_main() else None

        units.append(Unit(probe_id, s.name, "timestep probe", 0, probe, pending=probe_pending,
                          defer="the timestep probe"))
    if an.trajectory:
        units.append(_trajectory_unit(si, p, ctx, base))
    return units


def _level(s, p: ModelPlan, ctx: Context, unit: str, level: float, t_native: float, batches, rounds):
    """One noise level: its minibatches (continuing a stopped one), the ablation, the probe features."""
    an, cfg, work, halt = ctx.config.analyses, ctx.config, ctx.work, ctx.halt
    device = distributed.rank_device(cfg.device)

    def after(col: LevelCollector, k: int, sl: slice) -> None:
        ctx.progress.step(sl.stop - sl.start)
        # not after the last round: the level's end is the next stop point; each process asks after its
        # k-th minibatch, so all ask equally often whatever their share's length
        if k < rounds and stop_asked(halt):  # keep the level's finished minibatches
            if work is not None:
                partial.save(work, unit, partial.level_state(col), k, batches)
            halt.check()

    resume = partial.load(work, unit, batches, lambda st: partial.restored_level(s.spec, an, st, device))
    col = ctx.measure(s, p.inputs, t_native, batch_size=cfg.batch_size, analyses=an, device=device,
                      dtype=ctx.dtype, batches=batches, resume=resume, on_batch=after,
                      checkpoint=cfg.checkpoint_blocks)
    rows = distributed.reduce_collector(col).rows()  # merged over processes: the single-process statistics
    if an.ablation:  # the same minibatches again, each block skipped in turn
        ctx.progress.describe(f"{s.name}  noise level {level:.3f}: block ablation")
        rows += ablation_rows(s, p.inputs, t_native, batches=batches, analyses=an, device=device, dtype=ctx.dtype)
    saved = None
    if an.probe:
        saved = distributed.gather_probe({k: torch.cat(v) for k, v in col.probe_feats.items()},
                                         torch.cat(col.probe_ids))
        saved = None if saved is None else {"feats": saved[0], "ids": saved[1]}
        if saved is not None and work is not None:
            atomic_write(work / f"probe-{unit}.pt", lambda f, obj=saved: torch.save(obj, f))
    partial.drop(work if distributed.is_main() else None, unit)
    return rows, saved


#################################################################################
#                              Generated inputs                                 #
#################################################################################


def _generate_unit(si: int, p: ModelPlan, ctx: Context, *, needed: bool) -> Unit:
    """Draw the model's generated inputs, chunk by chunk (kept in OUT/_work while unfinished), into
    OUT/_inputs; a run that finds them there reads them back. Needed only while a level is left."""
    inp, s = p.inputs, p.subject
    drawing = inp.drawing
    uid = f"m{si:02d}-generate"
    stored = ctx.out / INPUTS_DIRNAME / inputs_name(si) if ctx.out is not None else None
    W, r = distributed.world_size(), distributed.rank()
    rounds = -(-len(drawing.chunks) // W)
    work = ctx.work if ctx.work is not None and not distributed.is_distributed() else None  # one process keeps chunks

    def read_stored() -> dict | None:
        if stored is None or not distributed.broadcast_object(stored.is_file() if distributed.is_main() else None):
            return None
        try:
            saved = torch.load(stored, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged file: drawn again
            return None
        ok = isinstance(saved, dict) and saved.get("meta", {}).get("inputs") == inp.source
        return saved if ok else None

    found = read_stored() if needed else None

    def use_stored() -> None:
        inp.fill([{k: v for k, v in found.items() if k not in ("meta", "y")}])

    def run() -> None:
        parts: dict[int, dict] = {}
        if work is not None:
            state = partial.load(work, uid, drawing.chunks, lambda st: st)
            parts = dict(state[0]) if state is not None else {}
        for k in range(rounds):
            ci = k * W + r
            if ci < len(drawing.chunks) and ci not in parts:
                sl = drawing.chunks[ci]
                ctx.progress.describe(f"{s.name}  generating inputs {sl.start + 1}-{sl.stop} of {inp.count}")
                parts[ci] = drawing.draw(sl, lambda n=sl.stop - sl.start: ctx.progress.step(n))
                if work is not None:
                    partial.save(work, uid, parts, len(parts), drawing.chunks)
            if k < rounds - 1 and stop_asked(ctx.halt):
                ctx.halt.check()
        every = distributed.gather_object(parts)
        merged = distributed.broadcast_object({i: c for part in every for i, c in part.items()} if every else None)
        whole = inp.fill([merged[i] for i in range(len(drawing.chunks))])
        if stored is not None and distributed.is_main():
            kept = {**{k: v.contiguous() for k, v in whole.items()}, "y": inp.y,
                    "meta": {**drawing.meta, "inputs": inp.source, "kind": "generated", "count": inp.count}}
            atomic_write(stored, lambda f: torch.save(kept, f))
            partial.drop(work, uid)
        return None

    pending = needed and found is None
    done = (lambda: partial.done_in(work, uid) * drawing.steps) if work is not None else (lambda: 0)
    return Unit(uid, s.name, f"generating {inp.count} inputs ({inp.label})",
                len(drawing.chunks[r::W]) * drawing.steps, run, pending=pending, done=done,
                skip=use_stored if found is not None else None, defer="this batch of prompts")


#################################################################################
#                                 Trajectory                                    #
#################################################################################


def _trajectory_unit(si: int, p: ModelPlan, ctx: Context, base: dict) -> Unit:
    """The model's sampler (its pipeline, or dardiag's own), observed; continues between two sampler runs."""
    s, cfg, an = p.subject, ctx.config, ctx.config.analyses
    uid = f"m{si:02d}-trajectory"
    device = distributed.rank_device(cfg.device)
    job = (pipeline_job if s.pipeline is not None else dit_job)(s, p.inputs, cfg, device)  # one sampler run per chunk
    chunks = distributed.shard(job.chunks)
    rounds = len(job.chunks[::distributed.world_size()])

    def run() -> list[dict]:
        resume = partial.load(ctx.work, uid, chunks,
                              lambda st: TrajectoryCollector.restored(s.spec, an, st, device))
        col, done = resume if resume is not None else (job.collector(), 0)
        for k, sl in enumerate(chunks, 1):
            if k <= done:
                continue
            job.run(col, sl, lambda n=sl.stop - sl.start: ctx.progress.step(n))  # one sampler step of n samples
            if k < rounds and stop_asked(ctx.halt):
                if ctx.work is not None:
                    partial.save(ctx.work, uid, col.state(), k, chunks)
                ctx.halt.check()
        rows = distributed.reduce_collector(col).rows()
        partial.drop(ctx.work if distributed.is_main() else None, uid)
        said = {**base, "inputs": f"sampler trajectory: {job.label}, from seeded noise"}  # not the run's x0
        return [{**said, **r} for r in rows]

    return Unit(uid, s.name, f"sampler trajectory ({job.label})", len(chunks) * job.steps, run,
                pending=uid not in ctx.completed,
                done=lambda: partial.done_in(ctx.work, uid) * job.steps, defer="this sampler run")

