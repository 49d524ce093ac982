"""``train(config)``: dardiag's own DiT (``trainer.py``), or a diffusers folder given as ``--init``
(``diffusers_loop.py``); both keep OUT the same way and write the same loss log and profile table."""

from __future__ import annotations

from pathlib import Path

from dardiag.runs.lifecycle import Plan
from dardiag.train.config import TrainConfig
from dardiag.train.diffusers_loop import train_diffusers
from dardiag.train.trainer import train as train_dit


def is_diffusers_dir(path) -> bool:
    """A diffusers model or pipeline folder (``train --init DIR``)."""
    path = Path(path)
    return path.is_dir() and ((path / "config.json").is_file() or (path / "model_index.json").is_file())


def train(config: TrainConfig, *, on_step=None, plan: Plan | None = None, report=None, progress=None,
          profile_progress=None) -> Path:
    """Train, checkpointing into ``config.out``; returns ``OUT/last.pt``. ``report(line)``: what the run
    trains, before the first step; ``progress(line)``: loss, time per step, ETA and the periodic profiles
    (which show their own minibatches to ``profile_progress``)."""
    said = dict(on_step=on_step, plan=plan, report=report, progress=progress, profile_progress=profile_progress)
    if config.init is not None and is_diffusers_dir(config.init):
        return train_diffusers(config, **said)
    return train_dit(config, **said)
