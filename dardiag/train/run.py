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


def train(config: TrainConfig, *, on_step=None, plan: Plan | None = None, report=None) -> Path:
    """Train, checkpointing into ``config.out``; returns ``OUT/last.pt``. ``report(line)``: a diffusers run
    says there what it trains (the DiT run's settings are all flags)."""
    if config.init is not None and is_diffusers_dir(config.init):
        return train_diffusers(config, on_step=on_step, plan=plan, report=report)
    return train_dit(config, on_step=on_step, plan=plan)
