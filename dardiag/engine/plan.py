"""What a profile will do, decided before any work: per model its Subject, noise grid and inputs, and
the run's metadata (what a resumed run must match).

Every user error surfaces here as one ``DardiagError`` line, before OUT is touched.
"""

from __future__ import annotations

import platform
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from dardiag import __version__
from dardiag.engine import distributed
from dardiag.savings.ablation import check_ablation
from dardiag.engine.config import ProfileConfig, checked_grid
from dardiag.engine.inputs import Inputs, make_inputs, minibatches
from dardiag.engine.subjects import name_series, unique_names, weights_sha256
from dardiag.savings.trajectory import check_trajectory
from dardiag.errors import DardiagError
from dardiag.subject import Subject

NOISE_CONVENTION = "noise_level in [0, 1], 1 = pure noise"


@dataclass
class ModelPlan:
    subject: Subject
    grid: list[tuple[float, float]]  # [(noise_level, t_native)], noisiest first
    inputs: Inputs
    weights_sha256: str | None  # in-memory models: their tensors identify them, not their file


def resolve_grid(subject: Subject, noise_levels, timesteps) -> list[tuple[float, float]]:
    """-> [(noise_level, t_native)] for a subject, validated against its family's range."""
    fam = subject.family
    noise_levels, timesteps = checked_grid(noise_levels, timesteps)
    if timesteps is not None:
        t = torch.as_tensor(timesteps, dtype=torch.float64)
        fam.check_native(t)
    else:
        nl = torch.as_tensor(noise_levels, dtype=torch.float64)
        t = fam.to_native(nl)
    levels = fam.to_noise_level(t)
    if timesteps is None:  # continuous families map back to the asked level up to rounding: store it as asked,
        levels = torch.where((levels - nl).abs() <= 1e-12, nl, levels)  # so df.noise_level == 0.1 matches
    return sorted({(float(a), float(b)) for a, b in zip(levels, t)}, reverse=True)


def plan_models(subjects: Sequence[Subject], config: ProfileConfig, inputs, names: Sequence[str] | None,
                device) -> list[ModelPlan]:
    """Resolve every model's grid and inputs, and check that the work can be split."""
    W = distributed.world_size()
    for s in subjects:
        if not isinstance(s, Subject):
            raise DardiagError(f"the engine profiles Subjects, not a {type(s).__name__}; open checkpoints with "
                               "dardiag.profile or dardiag.adapters.open_subject")
    subjects = list(subjects)
    for s, name in zip(subjects, names or []):
        s.name = name
    if not names:
        name_series(subjects)
    unique_names(subjects)
    plans = []
    for s in subjects:
        s.model.to(device).eval()
        grid = resolve_grid(s, config.grid, config.timesteps)
        inp = make_inputs(inputs, s, config.samples, config.seed, steps=config.sampler_steps,
                          cfg=config.sampler_cfg, chunk=config.batch_size)
        if inp.count < config.min_samples:
            raise DardiagError(f"{inp.count} samples are too few for CKA over images (it needs at least 4); "
                               "pass more --samples, or --cka-rows tokens")
        if len(minibatches(inp.count, config.batch_size)) < W:
            raise DardiagError(
                f"{inp.count} samples in minibatches of {config.batch_size} give fewer minibatches than the "
                f"{W} processes; every process needs one: use --batch-size {max(1, inp.count // W)} "
                "or less, more --samples, or fewer processes"
            )
        if config.analyses.ablation:
            check_ablation(s)
        if config.analyses.trajectory:
            check_trajectory(s)
        in_memory = None if s.weights_id else weights_sha256(s.model)
        plans.append(ModelPlan(s, grid, inp, in_memory))
    return plans


def _versions() -> dict:
    import pyarrow

    return {"dardiag": __version__, "torch": torch.__version__, "pandas": pd.__version__,
            "pyarrow": pyarrow.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _inputs_path(inputs) -> str | None:
    meta = inputs.get("meta") if isinstance(inputs, dict) else None
    return str(meta["path"]) if isinstance(meta, dict) and meta.get("path") else None


def run_metadata(plans: list[ModelPlan], config: ProfileConfig, inputs, device, opened: dict | None = None) -> dict:
    """The run's metadata; ``config`` is what a resumed run must match (no paths: the same files under
    another spelling continue the same run, their sha256 identifies them). ``opened`` holds how the
    models were opened (``LoadOptions.compared()``, from whoever opened them): compared too."""
    compared = {
        **config.compared(),  # every setting but the device, flat: cfg["seed"], cfg["analyses"], ...
        **(opened or {}),
        "models": [
            {"name": p.subject.name, "sha256": p.subject.info.get("sha256", ""), "weights_sha256": p.weights_sha256,
             "family": p.subject.family.name, "routing": p.subject.routing, "step": p.subject.step,
             "detected": {k: v for k, v in p.subject.info.items() if k not in ("warnings", "path", "checkpoint")}}
            for p in plans
        ],
        "grid": {p.subject.name: [lv for lv, _ in p.grid] for p in plans},
        "timesteps": {p.subject.name: [t for _, t in p.grid] for p in plans},
        "inputs": plans[0].inputs.source,
        "inputs_kind": plans[0].inputs.kind,
        "samples": plans[0].inputs.count,  # as resolved (the setting may be None: all of the inputs)
    }
    return {
        "run_id": datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
        "config": compared,
        "settings": config.to_dict(),  # the ProfileConfig whole, as given
        "paths": {"checkpoints": [p.subject.checkpoint for p in plans], "inputs": _inputs_path(inputs),
                  "pipelines": [str(p.subject.pipeline.folder) if p.subject.pipeline is not None else None
                                for p in plans]},
        "versions": _versions(),
        "device": str(device),
        "noise_convention": NOISE_CONVENTION,
        "processes": distributed.world_size(),
    }
