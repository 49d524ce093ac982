"""The one orchestration: models x noise levels x minibatches -> one long-form table.

    for each model:                       (a Subject: network, family, probe sites)
      for each noise level:               (one unit of work: one parquet part, resumable)
        for each minibatch of the fixed (x0, noise) pairs:
          forward with hooks -> backward of the family's simple loss -> streaming sums
      timestep probe over all levels      (one more unit per model)

Memory does not grow with the number of levels or minibatches: a unit keeps only fixed-size sums
(and the P Gram matrices of the current minibatch for CKA). Work is resumable at unit granularity and
each unit depends only on the fixed inputs, so a resumed run equals an uninterrupted one.

Progress is counted in minibatches (``dardiag.engine.progress``); a first Ctrl-C or SIGTERM under a
command (``dardiag.runs.stop``) lets the current minibatch finish, keeps a level stopped half-way in
``OUT/_work`` (``dardiag.engine.partial``) and stops; the same command continues from the next minibatch.

Under torchrun (env WORLD_SIZE > 1) every process runs this same sweep on its share of each level's
minibatches and the collectors are merged after the level (``dardiag.engine.distributed``), so every
process holds exactly the single-process statistics; only rank 0 holds OUT and writes. There a stop
is agreed (``_stop_asked``): at every minibatch boundary and after every unit the processes exchange
their requests, all stop after the same minibatch (each keeps its share of a level stopped half-way),
and all leave once rank 0 has written and released OUT.
Legend: N images, C channels, H/W latent side.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from dardiag.atomic import atomic_write
from dardiag.engine import cost, distributed, partial
from dardiag.engine.ablation import ablation_rows
from dardiag.engine.collector import LevelCollector
from dardiag.engine.config import Analyses, ProfileConfig, default_grid  # noqa: F401 (the sweep's vocabulary)
from dardiag.engine.devices import device_name
from dardiag.engine.inputs import SYNTHETIC_NOTICE, Inputs, make_inputs, minibatches, noisy_batch  # noqa: F401
from dardiag.engine.plan import ModelPlan, plan_models, resolve_grid, run_metadata  # noqa: F401
from dardiag.engine.progress import Progress, as_progress
from dardiag.engine.timestep_probe import probe_rows
from dardiag.engine.trajectory import trajectory_rows
from dardiag.errors import DardiagError
from dardiag.hooks.recorder import frozen_parameters, record
from dardiag.runs import RunDir, claim, read_profile, stop
from dardiag.runs.layout import WORK_DIRNAME
from dardiag.store import to_pandas, to_table
from dardiag.subject import Subject

AUTOCAST = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


#################################################################################
#                                 One unit                                      #
#################################################################################


def run_level(subject: Subject, inputs: Inputs, t_native: float, *, batch_size: int, analyses: Analyses,
              device, dtype=torch.float32, batches: Sequence[slice] | None = None,
              resume: tuple[LevelCollector, int] | None = None,
              on_batch: Callable[[LevelCollector, int, slice], None] | None = None) -> LevelCollector:
    """All minibatches of one noise level through one model; returns the filled collector.

    ``resume=(collector, k)`` continues a level whose first k minibatches that collector holds;
    ``on_batch(collector, k, slice)`` is called after the k-th minibatch (progress, stopping).
    """
    model, fam = subject.model, subject.family
    col, skip = resume if resume is not None else (LevelCollector(subject.spec, analyses, device), 0)
    autocast = dtype != torch.float32
    _ = inputs.x0  # generated inputs are drawn here, before any hook is attached
    with frozen_parameters(model), record(model, list(subject.spec.taps), col):
        for k, sl in enumerate(batches if batches is not None else minibatches(inputs.count, batch_size), 1):
            if k <= skip:
                continue
            x0, noise, y, t, x_t = noisy_batch(inputs, sl, t_native, fam, device)  # x_t (N, C, [F,] H, W)
            x_t.requires_grad_(True)  # leaf: gradients flow to activations
            ids = torch.arange(sl.start, sl.stop)
            col.begin_batch(x_t, ids)
            cond = subject.make_cond(x0.shape[0], ids) if subject.make_cond else None
            with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=autocast):
                out = subject.call(model, x_t, t, y, cond)  # (N, C_out, H, W)
            losses = fam.loss_per_image(out, x0, noise, t)  # (N,)
            loss = losses.mean()  # the family's simple loss; each image's own value feeds the standard error
            if not torch.isfinite(loss):
                raise DardiagError(
                    f"{subject.name}: the loss is not finite at t={t_native:g} (NaN/inf in weights or "
                    "inputs?); check the checkpoint with `dardiag inspect`"
                )
            loss.backward()
            col.end_batch(losses)
            if on_batch is not None:
                on_batch(col, k, sl)
    return col


#################################################################################
#                                 The sweep                                     #
#################################################################################


def profile(subjects: Sequence[Subject] | Subject, *, out: str | Path | None = None, inputs=None,
            config: ProfileConfig | None = None, names: Sequence[str] | None = None, force: bool = False,
            resume: bool = False, progress: Progress | Callable[[str], None] | None = None,
            report: Callable[[str], None] | None = None, opened: dict | None = None,
            **settings) -> pd.DataFrame:
    """Profile one or more Subjects over a noise-level grid and return the long-form table.

    The engine's entry point: it sees only Subjects (``dardiag.profile`` opens checkpoint paths first,
    through ``dardiag.adapters``, and passes how it opened them as ``opened``, stored and compared
    with the settings). ``inputs``: a dict ``{x0, y?, noise?, meta?}`` (a latents file as
    ``dardiag.data.open_inputs`` read it), ``"generated"`` (x0 sampled by the model) or None (seeded
    synthetic latents, which are not images: a warning says so).
    The settings are a :class:`ProfileConfig` (``config=``) or its fields as keywords
    (``noise_levels=[0.1, 0.9], samples=64, analyses=Analyses(cka=False)``, ...).
    With ``out``, parts are written atomically as each unit finishes and OUT is locked against a second
    process. Run again with the same arguments, an interrupted run continues to the same result (a
    complete one is read back); ``force`` replaces a run with other settings, keeping it in
    ``OUT/_replaced`` until the new run completes. ``report(line)`` gets what was decided (the inputs,
    each model's family and where it was read from, the plan and its cost, what happens to OUT)
    before the work starts. ``progress``: a :class:`dardiag.engine.progress.Progress` (minibatches),
    or a callable that gets one line per finished unit. Every user error raises ``DardiagError``
    before any work starts.
    """
    if config is None:
        config = ProfileConfig.from_kwargs(**settings)
    elif settings:
        raise DardiagError(f"pass config= or keyword settings, not both (got {', '.join(sorted(settings))})")
    config = config.replace(device=device_name(config.device))  # "auto" -> "cuda" / "cpu", checked
    subjects = [subjects] if isinstance(subjects, Subject) else list(subjects)
    if len(subjects) == 0:
        raise DardiagError("no model to profile; pass at least one checkpoint")
    created = distributed.init_if_needed(config.device)  # under torchrun: join the process group
    try:
        device = distributed.rank_device(config.device)
        plans = plan_models(subjects, config, inputs, names, device)
        meta = run_metadata(plans, config, inputs, device, opened)
        if distributed.is_main():
            _report(plans, config, device, report)
        watch = as_progress(progress if distributed.is_main() else None)
        if out is None:
            df = _in_memory(plans, config, meta, watch)
        else:
            with claim(out, enabled=distributed.is_main()) as hold:
                df = _into(Path(out), plans, config, meta, hold, force=force, resume=resume, progress=watch,
                           report=report if distributed.is_main() else None)
        distributed.barrier()
        return df
    except KeyboardInterrupt:
        halt = stop.current()
        if created and halt.agreed:  # every process stopped at the same point: leave after rank 0 released OUT
            distributed.barrier()
            halt.leaving = True
        raise
    finally:
        if created:  # not via shutdown(): after an error on one rank a barrier would never return
            torch.distributed.destroy_process_group()


def _report(plans: list[ModelPlan], config: ProfileConfig, device, report: Callable[[str], None] | None) -> None:
    """What the run will measure, in words, and what it costs; synthetic inputs always get their notice
    (a warning in Python), and so does a plan that exceeds the free memory."""
    inp = plans[0].inputs
    costs = [cost.estimate(p, config, device) for p in plans]
    if report is not None:
        report(f"inputs: {inp.label}")
        for p, c in zip(plans, costs):
            s = p.subject
            src = s.info.get("sources") or {}
            why = src.get("family") or src.get("config") or s.info.get("adapter") or "the caller"
            report(f"{s.name}: family {s.family.name} (from {why}), {s.routing}, {s.spec.depth} blocks")
            for line in s.info.get("first_lines", ()):  # what the adapter says up front (block lists left out, ...)
                report(f"{s.name}: {line}")
            report(c.line())
    for c in costs:
        if c.warning() is not None:
            if report is not None:
                report(c.warning())
            else:
                warnings.warn(c.warning().removeprefix("warning: "), stacklevel=3)
    if inp.kind == "synthetic":
        if report is not None:
            report(f"notice: {SYNTHETIC_NOTICE}")
        else:
            warnings.warn(SYNTHETIC_NOTICE, stacklevel=3)


def _in_memory(plans: list[ModelPlan], config: ProfileConfig, meta: dict, progress: Progress) -> pd.DataFrame:
    rows: list[dict] = []
    with _agreed_stops():
        _run_units(plans, frozenset(), config, meta, write=lambda unit, unit_rows: rows.extend(unit_rows),
                   work=None, progress=progress)
    if not distributed.is_main():  # the table lives on rank 0; hand every process a copy
        return distributed.broadcast_object(None)
    df = to_pandas(to_table(rows, meta))
    df.attrs["dardiag"] = meta
    return distributed.broadcast_object(df)


def _into(out: Path, plans: list[ModelPlan], config: ProfileConfig, meta: dict, hold, *, force: bool,
          resume: bool, progress: Progress, report: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The sweep into a run directory (rank 0 holds OUT); every process skips the same finished units."""
    run, failure = None, None
    if distributed.is_main():
        try:
            run = RunDir.create(out, meta, force=force, resume=resume)
            hold.keep()
            _forget_levels_without_probe_cache(run, plans, config.analyses)
            if report is not None:
                report(f"OUT {out}: {_disposition(run, plans, config.analyses)}")
        except DardiagError as e:
            failure = e
    # every process must skip the same finished units, and stop together if rank 0 cannot start
    message, completed = distributed.broadcast_object(
        (str(failure) if failure else None, sorted(run.completed) if run is not None else []))
    if failure is not None:
        raise failure
    if message is not None:
        raise DardiagError(message)
    try:
        with _agreed_stops():
            _run_units(plans, frozenset(completed), config, run.metadata if run else meta,
                       write=run.mark_done if run else None, work=out / WORK_DIRNAME, progress=progress)
    except BaseException as e:
        # an error: put back the run a --force replaced, drop a run with nothing in it (and OUT itself,
        # when this command created it); Ctrl-C keeps finished units for the same command to continue
        if run is not None and isinstance(e, Exception):
            run.abandon()
            hold.kept = False  # OUT goes too if this command created it and nothing is left in it
        raise
    if not distributed.is_main():
        return distributed.broadcast_object(None)
    run.finish()
    return distributed.broadcast_object(read_profile(out))


def _agreed_stops():
    """Under torchrun the whole sweep is deferred work: a process that stopped at a first signal would
    leave the others waiting in a collective, so it waits for the next point where all agree."""
    return stop.current().deferred("this minibatch") if distributed.is_distributed() else nullcontext()


def _stop_asked(halt: stop.StopRequest) -> bool:
    """Whether the sweep stops here; under torchrun every process must call it at the same points and
    gets the same answer: each was signalled or not (torchrun signals all, a scheduler may signal one),
    so they exchange their requests, the largest signal number wins (0: none) and all stop together."""
    if distributed.is_distributed():
        signum = distributed.max_over_ranks(halt.signum or 0)
        if signum:
            halt.adopt(signum, say=distributed.is_main())  # rank 0 says so when another process was asked
            halt.agreed = True
    return halt.requested


def _stop_point(halt: stop.StopRequest) -> None:
    if _stop_asked(halt):
        halt.check()


def _units(p: ModelPlan, analyses: Analyses) -> int:
    return len(p.grid) + int(analyses.probe) + int(analyses.trajectory)


def _units_words(plans: list[ModelPlan], analyses: Analyses) -> str:
    """What the run's units are: "16 noise levels + the timestep probe" (per model)."""
    levels = sorted({len(p.grid) for p in plans})
    each = f"{'/'.join(map(str, levels))} noise level{'s' if levels != [1] else ''}"
    each += " + the timestep probe" if analyses.probe else ""
    each += " + the sampler trajectory" if analyses.trajectory else ""
    return each if len(plans) == 1 else f"{len(plans)} models x ({each})"


def _disposition(run: RunDir, plans: list[ModelPlan], analyses: Analyses) -> str:
    """What this command does with OUT, in words: fresh, continuing (k of n), replacing, complete."""
    n = sum(_units(p, analyses) for p in plans)
    words = f"{n} units: {_units_words(plans, analyses)}"
    k = len(run.completed)
    started = run.started or {}
    if started.get("action") == "complete" or (k == n and run.status == "complete"):
        return f"complete ({words}); reading the table back"
    if started.get("action") == "continue":
        half = partial.saved_units(run.path / WORK_DIRNAME)
        more = f", and {len(half)} noise level(s) stopped part-way" if half else ""
        return f"continuing: {k} of {n} units done{more} ({words})"
    if started.get("replaced"):
        return f"replacing {started['replaced']}, kept in {run.path.name}/_replaced until this run completes ({words})"
    if started.get("dropped_empty"):
        return f"replacing an empty run there (it had finished nothing) ({words})"
    return f"fresh run ({words})"


def _forget_levels_without_probe_cache(run: RunDir, plans: list[ModelPlan], analyses: Analyses) -> None:
    """A resumed run whose probe is unfinished needs every level's cached probe features (``_work``):
    levels whose cache is gone (deleted, copied without it) are computed again."""
    if not analyses.probe:
        return
    work = run.path / WORK_DIRNAME
    for si, p in enumerate(plans):
        if f"m{si:02d}-probe" in run.completed:
            continue
        for li in range(len(p.grid)):
            unit = f"m{si:02d}-l{li:03d}"
            if unit in run.completed and not (work / f"probe-{unit}.pt").exists():
                run.forget(unit)


def _run_units(plans: list[ModelPlan], completed: frozenset, config: ProfileConfig, meta: dict, *, write,
               work: Path | None, progress: Progress) -> None:
    """Every unit not yet completed: a level of one model, then that model's timestep probe.

    ``write(unit, rows)`` takes each finished unit's rows on rank 0; ``work`` (a run directory's scratch)
    holds the per-level probe features a resumed run needs, and the levels a stop left half-done.
    """
    main = distributed.is_main()
    analyses = config.analyses
    total = sum(_units(p, analyses) for p in plans)
    done = 0
    halt = stop.current()
    every = [minibatches(p.inputs.count, config.batch_size) for p in plans]
    shards = [distributed.shard(b) for b in every]  # rank r: r, r + W, ...
    # minibatch rounds per level: rank 0's share, the longest (the others hold as many or one fewer)
    rounds = [len(b[::distributed.world_size()]) for b in every]
    units = [[f"m{si:02d}-l{li:03d}" for li in range(len(p.grid))] for si, p in enumerate(plans)]
    progress.begin(
        total=sum(len(p.grid) * len(b) for p, b in zip(plans, shards)),
        done=sum(len(b) if u in completed else partial.done_in(work, u) for us, b in zip(units, shards) for u in us),
        images_per_step=config.batch_size, units=_units_words(plans, analyses))

    for si, p in enumerate(plans):
        s, inp = p.subject, p.inputs
        base = dict(run_id=meta["run_id"], model=s.name, routing=s.routing, family=s.family.name,
                    checkpoint=s.checkpoint, step=s.step, batch_size=config.batch_size, inputs=inp.label)
        feats: dict[str, list[torch.Tensor]] = {}
        levels, ids = [], []
        batches = shards[si]
        if work is not None and main and not distributed.is_distributed():
            inp.keep_drawn(work / f"generated-m{si:02d}.pt")  # generated x0: drawn once per run
        for li, (level, t_native) in enumerate(p.grid):
            unit = units[si][li]
            saved = None
            if unit in completed:
                if analyses.probe and main and f"m{si:02d}-probe" not in completed:  # the probe still needs it
                    saved = torch.load(work / f"probe-{unit}.pt", weights_only=True)
            else:
                progress.describe(f"{s.name}  noise level {level:.3f}  ({li + 1}/{len(p.grid)})")
                device = distributed.rank_device(config.device)
                # generated inputs: drawn here, outside the deferred stop (nothing to keep half-way; under
                # torchrun a stop waits for the next point where the processes agree, as everywhere)
                if not inp.drawn:
                    progress.describe(f"{s.name}  drawing {inp.count} generated inputs ({inp.label})")
                    inp.x0  # noqa: B018
                    progress.describe(f"{s.name}  noise level {level:.3f}  ({li + 1}/{len(p.grid)})")

                def after(col: LevelCollector, k: int, sl: slice, unit=unit, batches=batches,
                          rounds=rounds[si]) -> None:
                    progress.step(sl.stop - sl.start)
                    # not after the last round: the level's end is the next stop point; each process asks
                    # after its k-th minibatch, so all ask equally often whatever their share's length
                    if k < rounds and _stop_asked(halt):  # keep the level's finished minibatches
                        if work is not None:
                            partial.save(work, unit, col, k, batches)
                        halt.check()

                with halt.deferred("this minibatch"):
                    col = run_level(s, inp, t_native, batch_size=config.batch_size, analyses=analyses,
                                    device=device, dtype=AUTOCAST[config.dtype], batches=batches,
                                    resume=partial.load(work, unit, s.spec, analyses, device, batches),
                                    on_batch=after)
                    stats = distributed.reduce_collector(col)  # merged over processes: the single-process statistics
                    rows = stats.rows()
                    if analyses.ablation:  # the same minibatches again, each block skipped in turn
                        progress.describe(f"{s.name}  noise level {level:.3f}: block ablation")
                        rows += ablation_rows(s, inp, t_native, batches=batches, analyses=analyses, device=device,
                                              dtype=AUTOCAST[config.dtype])
                    if analyses.probe:
                        saved = distributed.gather_probe({k: torch.cat(v) for k, v in col.probe_feats.items()},
                                                         torch.cat(col.probe_ids))
                        saved = None if saved is None else {"feats": saved[0], "ids": saved[1]}
                    if main:
                        if saved is not None and work is not None:
                            atomic_write(work / f"probe-{unit}.pt", lambda f, obj=saved: torch.save(obj, f))
                        write(unit, [{**base, "noise_level": level, "t_native": t_native, **r} for r in rows])
                        partial.drop(work, unit)
            if saved is not None:
                for k, v in saved["feats"].items():
                    feats.setdefault(k, []).append(v)
                ids.append(saved["ids"])
                levels.append(torch.full((saved["ids"].numel(),), level, dtype=torch.float64))
            done += 1
            progress.unit(f"{s.name}  noise level {level:.3f}  ({done}/{total})")
            _stop_point(halt)  # a stop asked for during the level's last minibatch: the level is written
        if analyses.probe:
            unit = f"m{si:02d}-probe"
            with halt.deferred("the timestep probe"):  # on rank 0; the others wait for it at the stop point
                if main and unit not in completed:
                    progress.describe(f"{s.name}  timestep probe")
                    write(unit, [{**base, **r} for r in probe_rows(feats, levels, ids, config.seed)])
            done += 1
            progress.unit(f"{s.name}  timestep probe  ({done}/{total})")
            _stop_point(halt)
        if analyses.trajectory:  # the model's own sampler, observed (--trajectory)
            unit = f"m{si:02d}-trajectory"
            if unit not in completed:
                progress.describe(f"{s.name}  sampler trajectory")
                with halt.deferred("the sampler trajectory"):
                    rows = trajectory_rows(s, inp, config, distributed.rank_device(config.device))
                    if main:
                        write(unit, [{**base, **r} for r in rows])
            done += 1
            progress.unit(f"{s.name}  sampler trajectory  ({done}/{total})")
            _stop_point(halt)
