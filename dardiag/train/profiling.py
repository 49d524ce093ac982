"""``--profile-every K``: profile the EMA model on a fixed probe set while it trains.

Rows go to ``OUT/profile/`` (a ``dardiag.store.RunDir``), one part per step, in the same long-form
table ``dardiag profile`` writes, with ``step`` filled; ``read_profile(OUT/profile)`` then gives the
"metric against training step" view (diagnostics.md §7.6) without saving a checkpoint per point.

Legend: N probe images, C latent channels, H/W latent side.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import torch

from dardiag.adapters.dit import dit_subject
from dardiag.checkpoints import ModelInfo
from dardiag.engine.config import Analyses, ProfileConfig
from dardiag.engine.progress import Progress
from dardiag.engine.sweep import profile
from dardiag.runs import RunDir
from dardiag.train.config import TrainConfig
from dardiag.train.rng import seed_for


def profile_config(config: TrainConfig, samples: int) -> ProfileConfig:
    """The periodic profile's settings, from the training run's."""
    return ProfileConfig(noise_levels=config.profile_noise_levels, samples=samples,
                         batch_size=config.profile_batch_size, seed=config.seed, device=config.device,
                         analyses=Analyses(cka=config.profile_cka))


def probe_inputs(data: dict, config: TrainConfig) -> dict[str, torch.Tensor]:
    """The fixed probe set: the first ``profile_samples`` held-out images and noise fixed by the seed."""
    n = min(config.profile_samples, data["x0"].shape[0])
    x0 = data["x0"][:n]  # (N, C, H, W)
    what = "held-out digits" if config.data == "digits" else f"the first latents of {config.data}"
    probe = {"x0": x0, "meta": {"source": f"{what} ({n} images)"}}
    if "y" in data:
        probe["y"] = data["y"][:n]  # (N,)
    if "noise" in data:
        probe["noise"] = data["noise"][:n]
    else:
        g = torch.Generator().manual_seed(seed_for(config.seed, "probe", 0))
        probe["noise"] = torch.randn(x0.shape, generator=g)  # (N, C, H, W)
    return probe


class ProfileHook:
    """Called with the EMA model after step ``step``; writes one part ``step{step:07d}``."""

    def __init__(self, config: TrainConfig, out: Path, probe: dict, *, name: str):
        self.config = config
        self.probe = probe
        self.name = name
        self.settings = profile_config(config, probe["x0"].shape[0])
        # the run compares "config" on resume (the settings but the device); run_id is kept from the first start
        meta = {"config": {"profile": self.settings.compared(), "data": config.data, "family": config.family},
                "source": "dardiag train --profile-every", "run_id": f"train-{name}-{uuid.uuid4().hex[:6]}"}
        # OUT/profile goes with the training run (its lifecycle sets it aside with --force, continues it)
        self.run = RunDir.create(out, meta)

    @property
    def what(self) -> str:
        return f"{self.probe['x0'].shape[0]} images x {len(self.settings.grid)} noise levels"

    def __call__(self, ema, step: int, *, progress: Progress | None = None) -> None:
        unit = f"step{step:07d}"
        if unit in self.run.completed:  # recomputed after a resume; the rows on disk are the same
            return
        was_training = ema.training
        # the profiler may draw from the global RNG; fork it so training's random stream is unchanged
        with torch.random.fork_rng(devices=[]):
            df = profile(self.profiled(ema, step), inputs=self.probe, config=self.settings, progress=progress)
        ema.train(was_training)
        df = df.copy()
        df["step"] = step
        df["run_id"] = self.run.metadata["run_id"]  # one id for the whole training run, not one per call
        self.run.mark_done(unit, df)

    def profiled(self, ema, step: int):
        """The Subject the profile measures: the EMA model at ``step``."""
        return dit_subject(ema, ModelInfo.in_memory(ema, family=self.config.family, name=self.name, step=step))

    def finish(self) -> None:
        self.run.finish()
