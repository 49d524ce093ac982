"""The one orchestration: models x noise levels x minibatches -> one long-form table.

    for each model:                       (a Subject: network, family, probe sites)
      generated inputs, when drawn        (its sampler or pipeline; kept in OUT/_inputs)
      for each noise level:               (one unit of work: one parquet part, resumable)
        for each minibatch of the fixed (x0, noise) pairs:
          forward with hooks -> backward of the family's simple loss -> streaming sums
      timestep probe over all levels      (one more unit per model)
      sampler trajectory, when asked      (its sampler or pipeline, observed)

Units are values with one runner (``dardiag.engine.units``), which owns completion, progress, stops
and writes.

Memory does not grow with the number of levels or minibatches: a unit keeps only fixed-size sums
(and the P Gram matrices of the current minibatch for CKA). Work is resumable at unit granularity and
each unit depends only on the fixed inputs, so a resumed run equals an uninterrupted one.

Progress is counted in minibatches (``dardiag.engine.progress``); a first Ctrl-C or SIGTERM under a
command (``dardiag.runs.stop``) lets the current minibatch finish, keeps a level stopped half-way in
``OUT/_work`` (``dardiag.engine.partial``) and stops; the same command continues from the next minibatch.

Under torchrun (env WORLD_SIZE > 1) every process runs this same sweep on its share of each level's
minibatches and the collectors are merged after the level (``dardiag.engine.distributed``), so every
process holds exactly the single-process statistics; only rank 0 holds OUT and writes. There a stop
is agreed (``dardiag.engine.units.stop_asked``): at every minibatch boundary and after every unit the processes exchange
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

from dardiag.engine import cost, distributed, memory, partial, units
from dardiag.engine.config import Analyses, ProfileConfig, default_grid  # noqa: F401 (the sweep's vocabulary)
from dardiag.engine.devices import device_name
from dardiag.engine.inputs import PIPELINE_HINT, SYNTHETIC_NOTICE, Inputs, make_inputs, minibatches, noisy_batch  # noqa: F401
from dardiag.engine.level import run_level
from dardiag.engine.plan import ModelPlan, plan_models, resolve_grid, run_metadata  # noqa: F401
from dardiag.engine.progress import Progress, as_progress
from dardiag.errors import DardiagError
from dardiag.runs import RunDir, claim, read_profile, stop
from dardiag.runs.layout import WORK_DIRNAME
from dardiag.store import to_pandas, to_table
from dardiag.subject import Subject

AUTOCAST = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
        config = memory.resolve(plans, config, device, report if distributed.is_main() else None)  # --checkpoint-blocks
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
        if inp.kind == "synthetic" and any("class_name" in p.subject.info for p in plans):
            report(f"real inputs: {PIPELINE_HINT}")  # a diffusers model: its pipeline can draw them
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
                       write=run.mark_done if run else None, work=out / WORK_DIRNAME, progress=progress, out=out)
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


def _units(p: ModelPlan, analyses: Analyses) -> int:
    """Units of one model that write a part."""
    return len(p.grid) + int(analyses.probe) + int(analyses.trajectory)


def _units_words(plans: list[ModelPlan], analyses: Analyses) -> str:
    """What the run's units are: "16 noise levels + the timestep probe" (per model)."""
    levels = sorted({len(p.grid) for p in plans})
    each = f"{'/'.join(map(str, levels))} noise level{'s' if levels != [1] else ''}"
    each = ("generated inputs + " if any(p.inputs.drawing is not None for p in plans) else "") + each
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
        levels = [u for u in half if "-l" in u]
        more = f", and {len(levels)} noise level(s) stopped part-way" if levels else ""
        more += "".join(f", and the {u.partition('-')[2]} stopped part-way" for u in half if u not in levels)
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
               work: Path | None, progress: Progress, out: Path | None = None) -> None:
    """Every unit not yet completed (``dardiag.engine.units``); ``write(unit, rows)`` takes each finished
    unit's rows on rank 0; ``work`` (a run directory's scratch) holds what a resumed run needs."""
    ctx = units.Context(config=config, meta=meta, work=work, out=out, completed=completed, progress=progress,
                        halt=stop.current(), dtype=AUTOCAST[config.dtype],
                        measure=lambda *a, **k: run_level(*a, **k))  # this module's, looked up at call time
    todo = [u for si, p in enumerate(plans) for u in units.model_units(si, p, ctx)]
    units.run_units(todo, ctx, write=write, words=_units_words(plans, config.analyses))
