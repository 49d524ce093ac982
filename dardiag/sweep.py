"""The one orchestration: checkpoints x noise levels x minibatches -> one long-form table.

    for each model:                       (a Subject: network, family, probe spec)
      for each noise level:               (one unit of work: one parquet shard, resumable)
        for each minibatch of the fixed (x0, eps) pairs:
          forward with hooks -> backward of the family's simple loss -> streaming sums
      timestep probe over all levels      (one more unit per model)

Memory does not grow with the number of levels or minibatches: a unit keeps only fixed-size sums
(and the P Gram matrices of the current minibatch for CKA). Work is resumable at unit granularity and
each unit depends only on the fixed inputs, so a resumed run equals an uninterrupted one.

Under torchrun (env WORLD_SIZE > 1) every process runs this same sweep on its share of each level's
minibatches and the sums are added across processes after the level (``dardiag.distributed``), so
rank 0 holds exactly the single-process statistics; only rank 0 writes.
Legend: N images, C channels, H/W latent side.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from dardiag import distributed
from dardiag.devices import resolve_device
from dardiag.errors import DardiagError
from dardiag.metrics import ridge_r2
from dardiag.probe.collect import Analyses, LevelCollector
from dardiag.probe.recorder import frozen_parameters, record
from dardiag.subjects import Subject, as_subject, name_series, unique_names, weights_sha256

DEFAULT_LEVELS = 16
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass
class Inputs:
    """The fixed (x0, y, eps) set every level reuses; ``source`` says where it came from."""

    x0: torch.Tensor  # (N, C, H, W)
    y: torch.Tensor  # (N,) int64
    noise: torch.Tensor  # (N, C, H, W)
    source: str


MAX_LEVELS = 1000  # DiT's whole discrete schedule; a larger grid is a typo, not a study


def default_grid(n: int = DEFAULT_LEVELS) -> list[float]:
    """``n`` evenly spaced noise levels from 0 (clean) to 1 (pure noise)."""
    if not 1 <= n <= MAX_LEVELS:
        raise DardiagError(f"--levels must be between 1 and {MAX_LEVELS}, got {n}")
    return [float(v) for v in np.linspace(0.0, 1.0, n)]


def _check_fits_in_memory(n: int, shape: tuple[int, int, int]) -> None:
    """Synthetic latents and noise for ``n`` samples must fit comfortably in RAM (a typo guard)."""
    need = 2 * n * shape[0] * shape[1] * shape[2] * 4  # x0 and noise, float32
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no guard
        return
    if need > ram // 2:
        raise DardiagError(
            f"--samples {n} needs {need / 2**30:.1f} GiB for the latents alone, over half of this machine's "
            f"{ram / 2**30:.0f} GiB; use fewer samples (the statistics converge long before that)"
        )


#################################################################################
#                                 Inputs                                        #
#################################################################################


def make_inputs(spec, subject: Subject, samples: int | None, seed: int) -> Inputs:
    """Inputs for one subject from a dict/file (``spec``) or, when None, seeded synthetic latents."""
    C, H, W = subject.input_shape
    g = torch.Generator().manual_seed(seed)
    if spec is None:
        n = samples or 64
        _check_fits_in_memory(n, (C, H, W))
        x0 = torch.randn(n, C, H, W, generator=g)
        y = torch.randint(0, max(subject.num_classes, 1), (n,), generator=g)
        noise = torch.randn(n, C, H, W, generator=g)
        _conditioning(subject, {}, seed)
        return Inputs(x0, y, noise, f"synthetic: standard normal latents, uniform classes, seed {seed}")
    if isinstance(spec, (str, Path)):
        from dardiag.train.data import load_latents

        from dardiag.checkpoints import sha256_file

        # the content, not the path's spelling, identifies the inputs (resume compares configs)
        data = load_latents(spec)
        source = f"file: {Path(spec).name}, sha256 {sha256_file(Path(spec))}"
    else:
        data, source = dict(spec), "in-memory inputs"
    x0 = torch.as_tensor(data["x0"]).float()
    if x0.dim() != 4 or tuple(x0.shape[1:]) != (C, H, W):
        raise DardiagError(
            f"inputs x0 have shape {list(x0.shape)}, but model {subject.name} takes latents "
            f"[N, {C}, {H}, {W}]; pass inputs that match the model"
        )
    n = x0.shape[0] if samples is None else min(samples, x0.shape[0])
    if samples is not None and samples > x0.shape[0]:
        raise DardiagError(f"--samples {samples} but the inputs hold only {x0.shape[0]} latents")
    x0 = x0[:n]
    if data.get("y") is not None:
        y = torch.as_tensor(data["y"]).long()[:n]
        if subject.num_classes and (y.min() < 0 or y.max() >= subject.num_classes):
            raise DardiagError(f"inputs y must lie in 0..{subject.num_classes - 1} for {subject.name}")
    else:
        y = torch.randint(0, max(subject.num_classes, 1), (n,), generator=g)
        source += f"; classes drawn with seed {seed}"
    if data.get("noise") is not None:
        noise = torch.as_tensor(data["noise"]).float()[:n]
        if noise.shape != x0.shape:
            raise DardiagError(f"inputs noise has shape {list(noise.shape)}, x0 has {list(x0.shape)}")
    else:
        noise = torch.randn(x0.shape, generator=g)
        source += f"; noise drawn with seed {seed}"
    cond = {k: torch.as_tensor(v)[:n] for k, v in data.items() if k not in ("x0", "y", "noise")}
    _conditioning(subject, cond, seed)
    if cond:
        source += f"; conditioning from the inputs: {', '.join(cond)}"
    return Inputs(x0, y, noise, source)


def _conditioning(subject: Subject, cond: dict, seed: int) -> None:
    """Hand per-sample conditioning from the inputs (text embeddings, ...) and the seed to the subject."""
    use = getattr(subject.make_cond, "use_inputs", None)
    if use is not None:
        use(cond, seed=seed)
    elif cond:
        raise DardiagError(
            f"inputs hold {', '.join(cond)}, but {subject.name} takes no conditioning besides class labels"
        )


def minibatches(n: int, batch_size: int) -> list[slice]:
    """Consecutive minibatches; a tail of fewer than 4 images joins the previous one (CKA needs 4)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 4:
        tail = bounds.pop()
        bounds[-1] = (bounds[-1][0], tail[1])
    return [slice(a, b) for a, b in bounds]


#################################################################################
#                                 One unit                                      #
#################################################################################


def run_level(subject: Subject, inputs: Inputs, t_native: float, *, batch_size: int, analyses: Analyses,
              device, dtype=torch.float32, batches: Sequence[slice] | None = None) -> LevelCollector:
    """All minibatches of one noise level through one model; returns the filled collector."""
    model, fam = subject.model, subject.family
    col = LevelCollector(subject.spec, analyses, device)
    autocast = dtype != torch.float32
    with frozen_parameters(model), record(model, list(subject.spec.taps), col):
        for sl in batches if batches is not None else minibatches(inputs.x0.shape[0], batch_size):
            x0 = inputs.x0[sl].to(device)  # (N, C, H, W)
            noise = inputs.noise[sl].to(device)  # (N, C, H, W)
            y = inputs.y[sl].to(device)  # (N,)
            t = torch.full((x0.shape[0],), t_native, dtype=torch.float64, device=device)  # (N,)
            t = t.long() if fam.integer_time else t.float()
            x_t = fam.corrupt(x0, noise, t).requires_grad_(True)  # leaf: gradients flow to activations
            ids = torch.arange(sl.start, sl.stop)
            col.begin_batch(x_t, ids)
            cond = subject.make_cond(x0.shape[0], ids) if subject.make_cond else None
            with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=autocast):
                out = subject.call(model, x_t, t, y, cond)  # (N, C_out, H, W)
            loss = fam.loss(out, x0, noise, t)
            if not torch.isfinite(loss):
                raise DardiagError(
                    f"{subject.name}: the loss is not finite at t={t_native:g} (NaN/inf in weights or "
                    "inputs?); check the checkpoint with `dardiag inspect`"
                )
            loss.backward()
            col.end_batch(loss)
    return col


def probe_rows(features: dict[str, list[torch.Tensor]], levels: list[torch.Tensor], ids: list[torch.Tensor],
               seed: int) -> list[dict]:
    """Timestep probe (diagnostics.md §6): ridge from pooled states to the noise level, split by pair."""
    target = torch.cat(levels)  # (M,)
    groups = torch.cat(ids)  # (M,)
    if torch.unique(groups).numel() < 8 or torch.unique(target).numel() < 2:
        return []
    out = []
    for site, chunks in features.items():
        r2 = ridge_r2(torch.cat(chunks), target, groups, seed=seed)
        kind, _, idx = ("x_t", "", "") if site == "x_t" else site.partition("_")
        row = dict(metric="probe_r2", value=float(r2), site=kind, n_samples=int(torch.unique(groups).numel()))
        if kind == "z":
            row["block"] = int(idx)
        elif kind == "h":
            row["sublayer"] = int(idx)
        out.append(row)
    return out


#################################################################################
#                                 The sweep                                     #
#################################################################################


def resolve_grid(subject: Subject, noise_levels, timesteps) -> list[tuple[float, float]]:
    """-> [(noise_level, t_native)] for a subject, validated against its family's range."""
    fam = subject.family
    if noise_levels is not None and timesteps is not None:
        raise DardiagError("pass either --noise-levels or --timesteps, not both")
    if timesteps is not None:
        t = torch.as_tensor(list(timesteps), dtype=torch.float64)
        if t.numel() == 0:
            raise DardiagError("the timestep grid is empty; pass at least one timestep")
        fam.check_native(t)
    else:
        nl = torch.as_tensor(default_grid() if noise_levels is None else list(noise_levels), dtype=torch.float64)
        if nl.numel() == 0:
            raise DardiagError("the noise-level grid is empty; pass at least one level in [0, 1]")
        if nl.min() < 0 or nl.max() > 1 or not torch.isfinite(nl).all():
            raise DardiagError(f"noise levels must lie in [0, 1] (1 = pure noise); got {nl.tolist()}")
        t = fam.to_native(nl)
    levels = fam.to_noise_level(t)
    if timesteps is None:  # continuous families map back to the asked level up to rounding: store it as asked,
        levels = torch.where((levels - nl).abs() <= 1e-12, nl, levels)  # so df.noise_level == 0.1 matches
    return sorted({(float(a), float(b)) for a, b in zip(levels, t)}, reverse=True)


def _versions() -> dict:
    import pyarrow

    from dardiag import __version__

    return {"dardiag": __version__, "torch": torch.__version__, "pandas": pd.__version__,
            "pyarrow": pyarrow.__version__, "numpy": np.__version__, "python": platform.python_version()}


def profile(
    models: Sequence | object,
    *,
    out: str | Path | None = None,
    inputs=None,
    noise_levels: Sequence[float] | None = None,
    timesteps: Sequence[float] | None = None,
    samples: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    analyses: Analyses | None = None,
    family: str | None = None,
    num_heads: int | None = None,
    names: Sequence[str] | None = None,
    force: bool = False,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
    input_size: int | None = None,
) -> pd.DataFrame:
    """Profile one or more models over a noise-level grid and return the long-form table.

    ``models``: checkpoint paths, ``(model, ModelInfo)`` pairs or Subjects (one or a list).
    ``inputs``: None (seeded synthetic latents), a dict ``{x0, y?, noise?}`` or a file path.
    With ``out``, shards are written atomically as each unit finishes. Run again with the same
    arguments, an interrupted run continues to the same result (a complete one is read back); ``force``
    replaces a run with other arguments, keeping it in ``OUT/_replaced`` until the new run completes.
    ``input_size``: latent side for checkpoints that cannot say (no ``pos_embed``).
    Every user error raises ``DardiagError`` before any work starts.
    """
    analyses = analyses or Analyses()
    if dtype not in DTYPES:
        raise DardiagError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if batch_size < 1 or (samples is not None and samples < 1):
        raise DardiagError("--batch-size and --samples must be positive")
    if analyses.cka and batch_size < 4:
        raise DardiagError(
            f"--batch-size {batch_size} is too small for CKA: the unbiased estimator needs at least 4 "
            "rows per minibatch; use --batch-size 4 or more, or --no-cka"
        )
    if analyses.cka and analyses.cka_max_rows is not None and analyses.cka_max_rows < 4:
        raise DardiagError(
            f"--cka-max-rows {analyses.cka_max_rows} is too small: the unbiased CKA needs at least 4 rows "
            "per minibatch; use 4 or more, or leave it out"
        )
    resolve_device(device)
    if not isinstance(models, (list, tuple)) or (isinstance(models, tuple) and len(models) == 2
                                                 and not isinstance(models[0], (str, Path, tuple))):
        models = [models]
    if len(models) == 0:
        raise DardiagError("no model to profile; pass at least one checkpoint")
    created = distributed.init_if_needed(device)  # under torchrun: join the process group
    try:
        df = _sweep(models, out=out, inputs=inputs, noise_levels=noise_levels, timesteps=timesteps,
                    samples=samples, batch_size=batch_size, seed=seed, device=distributed.rank_device(device),
                    dtype=dtype, analyses=analyses, family=family, num_heads=num_heads, names=names,
                    force=force, resume=resume, progress=progress if distributed.is_main() else None,
                    input_size=input_size)
        distributed.barrier()
        return df
    finally:
        if created:  # not via shutdown(): after an error on one rank a barrier would never return
            torch.distributed.destroy_process_group()


def _sweep(models, *, out, inputs, noise_levels, timesteps, samples, batch_size, seed, device, dtype,
           analyses, family, num_heads, names, force, resume, progress, input_size) -> pd.DataFrame:
    """The body of :func:`profile` once the arguments are checked (and, under torchrun, the group is up)."""
    W = distributed.world_size()
    subjects = [as_subject(m, family=family, num_heads=num_heads, device=device, input_size=input_size)
                for m in models]
    # in-memory models: their file (if any) no longer vouches for their weights, the tensors do
    in_memory = [None if isinstance(m, (str, Path)) else weights_sha256(s.model) for m, s in zip(models, subjects)]
    for s, name in zip(subjects, names or []):
        s.name = name
    if not names:
        name_series(subjects)
    unique_names(subjects)
    plans = []
    for s in subjects:
        s.model.to(device).eval()
        grid = resolve_grid(s, noise_levels, timesteps)
        inp = make_inputs(inputs, s, samples, seed)
        if inp.x0.shape[0] < (4 if analyses.cka else 1):
            raise DardiagError(f"{inp.x0.shape[0]} samples are too few; CKA needs at least 4")
        if len(minibatches(inp.x0.shape[0], batch_size)) < W:
            raise DardiagError(
                f"{inp.x0.shape[0]} samples in minibatches of {batch_size} give fewer minibatches than the "
                f"{W} processes; every process needs one: use --batch-size {max(1, inp.x0.shape[0] // W)} "
                "or less, more --samples, or fewer processes"
            )
        plans.append((s, grid, inp))

    config = {
        "models": [
            # no paths: the same files under another spelling resume the same run (sha256 identifies them)
            {"name": s.name, "sha256": s.info.get("sha256", ""), "weights_sha256": w,
             "family": s.family.name, "routing": s.routing, "step": s.step,
             "detected": {k: v for k, v in s.info.items() if k not in ("warnings", "path", "checkpoint")}}
            for s, w in zip(subjects, in_memory)
        ],
        "grid": {s.name: [lv for lv, _ in g] for s, g, _ in plans},
        "timesteps": {s.name: [t for _, t in g] for s, g, _ in plans},
        "inputs": plans[0][2].source,
        "samples": int(plans[0][2].x0.shape[0]),
        "batch_size": batch_size,
        "seed": seed,
        "dtype": dtype,
        "analyses": dataclasses.asdict(analyses),
    }
    meta = {
        "run_id": datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
        "config": config,
        "paths": {"checkpoints": [s.checkpoint for s in subjects],
                  "inputs": str(inputs) if isinstance(inputs, (str, Path)) else None},
        "versions": _versions(),
        "device": str(device),
        "noise_convention": "noise_level in [0, 1], 1 = pure noise",
        "processes": W,
    }
    main = distributed.is_main()
    run, failure = None, None
    if out is not None and main:
        from dardiag.store import RunDir

        try:
            run = RunDir.create(out, meta, force=force, resume=resume)
            meta = run.metadata
            _forget_levels_without_probe_cache(run, plans, analyses)
        except DardiagError as e:
            failure = e
    # every process must skip the same finished units, and stop together if rank 0 cannot start
    message, completed = distributed.broadcast_object(
        (str(failure) if failure else None, sorted(run.completed) if run is not None else []))
    if failure is not None:
        raise failure
    if message is not None:
        raise DardiagError(message)
    completed = frozenset(completed)
    try:
        return _run_units(plans, completed, run, meta, out=out, analyses=analyses, batch_size=batch_size,
                          seed=seed, device=device, dtype=dtype, progress=progress)
    except BaseException as e:
        # an error: put back the run a --force replaced, drop a run with nothing in it; Ctrl-C keeps
        # finished units for the same command to continue (unless there are none)
        if run is not None and (isinstance(e, Exception) or not run.completed):
            run.abandon()
        raise


def _forget_levels_without_probe_cache(run, plans, analyses) -> None:
    """A resumed run whose probe is unfinished needs every level's cached probe features (``_work``):
    levels whose cache is gone (deleted, copied without it) are computed again."""
    if not analyses.probe:
        return
    work = run.path / "_work"
    for si, (_, grid, _) in enumerate(plans):
        if f"m{si:02d}-probe" in run.completed:
            continue
        for li in range(len(grid)):
            unit = f"m{si:02d}-l{li:03d}"
            if unit in run.completed and not (work / f"probe-{unit}.pt").exists():
                run.forget(unit)


def _run_units(plans, completed, run, meta, *, out, analyses, batch_size, seed, device, dtype,
               progress) -> pd.DataFrame:
    """Every unit not yet completed: a level of one model, then that model's timestep probe."""
    main = distributed.is_main()
    work = Path(out) / "_work" if out is not None else None
    rows: list[dict] = []
    total = sum(len(g) + int(analyses.probe) for _, g, _ in plans)
    done = 0
    for si, (s, grid, inp) in enumerate(plans):
        base = dict(run_id=meta["run_id"], model=s.name, routing=s.routing, family=s.family.name,
                    checkpoint=s.checkpoint, step=s.step, batch_size=batch_size)
        feats: dict[str, list[torch.Tensor]] = {}
        levels, ids = [], []
        batches = distributed.shard(minibatches(inp.x0.shape[0], batch_size))  # rank r: r, r + W, ...
        for li, (level, t_native) in enumerate(grid):
            unit = f"m{si:02d}-l{li:03d}"
            saved = None
            if unit in completed:
                if analyses.probe and main and f"m{si:02d}-probe" not in completed:  # the probe still needs it
                    saved = torch.load(work / f"probe-{unit}.pt", weights_only=True)
            else:
                col = run_level(s, inp, t_native, batch_size=batch_size, analyses=analyses, device=device,
                                dtype=DTYPES[dtype], batches=batches)
                distributed.reduce_collector(col)  # sums over processes: rank 0 = single-process sums
                if analyses.probe:
                    saved = distributed.gather_probe({k: torch.cat(v) for k, v in col.probe_feats.items()},
                                                     torch.cat(col.probe_ids))
                    saved = None if saved is None else {"feats": saved[0], "ids": saved[1]}
                if main:
                    if saved is not None and work is not None:
                        from dardiag.checkpoints import atomic_save

                        atomic_save(saved, work / f"probe-{unit}.pt")
                    unit_rows = [{**base, "noise_level": level, "t_native": t_native, **r} for r in col.rows()]
                    if run is not None:
                        run.mark_done(unit, unit_rows)
                    else:
                        rows.extend(unit_rows)
            if saved is not None:
                for k, v in saved["feats"].items():
                    feats.setdefault(k, []).append(v)
                ids.append(saved["ids"])
                levels.append(torch.full((saved["ids"].numel(),), level, dtype=torch.float64))
            done += 1
            if progress:
                progress(f"{s.name}  noise level {level:.3f}  ({done}/{total})")
        if analyses.probe:
            unit = f"m{si:02d}-probe"
            if main and unit not in completed:
                prow = [{**base, **r} for r in probe_rows(feats, levels, ids, seed)]
                if run is not None:
                    run.mark_done(unit, prow)
                else:
                    rows.extend(prow)
            done += 1
            if progress:
                progress(f"{s.name}  timestep probe  ({done}/{total})")
    if not main:  # the table lives on rank 0; hand every process a copy
        return distributed.broadcast_object(None)
    if run is not None:
        run.finish()
        from dardiag.store import read_profile

        return distributed.broadcast_object(read_profile(out))
    from dardiag.store import to_table

    df = to_table(rows, meta).to_pandas(types_mapper={__import__("pyarrow").int64(): pd.Int64Dtype()}.get)
    df.attrs["dardiag"] = meta
    return distributed.broadcast_object(df)
