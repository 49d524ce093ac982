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

from dardiag.errors import DardiagError
from dardiag.train.config import TrainConfig
from dardiag.train.rng import seed_for


def get_profiler():
    """``dardiag.sweep.profile``, imported late: training without ``--profile-every`` never needs it."""
    try:
        from dardiag.sweep import profile
    except ImportError as e:
        raise DardiagError(
            f"--profile-every needs the profiler (dardiag.sweep.profile), which cannot be imported here "
            f"({e}); train without --profile-every and profile the saved checkpoints later"
        ) from None
    return profile


def probe_inputs(data: dict, config: TrainConfig) -> dict[str, torch.Tensor]:
    """The fixed probe set: the first ``profile_samples`` held-out images and noise fixed by the seed."""
    n = min(config.profile_samples, data["x0"].shape[0])
    x0 = data["x0"][:n]  # (N, C, H, W)
    probe = {"x0": x0}
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
        from dardiag.store import RunDir

        self.profile = get_profiler()  # fail before training, not at step K
        self.config = config
        self.probe = probe
        self.name = name
        settings = {k: v for k, v in config.to_dict().items() if k.startswith("profile_") and k != "profile_every"}
        settings.update(seed=config.seed, data=config.data, family=config.family)
        # the store compares "config" on resume; run_id is kept from the first start
        meta = {"config": settings, "source": "dardiag train --profile-every",
                "run_id": f"train-{name}-{uuid.uuid4().hex[:6]}"}
        # OUT/profile goes with the training run (outdir.plan): set aside with it by --force, continued with it
        self.run = RunDir.create(out, meta)

    def __call__(self, ema, step: int) -> None:
        from dardiag.checkpoints import ModelInfo
        from dardiag.probe.collect import Analyses

        unit = f"step{step:07d}"
        if unit in self.run.completed:  # recomputed after a resume; the rows on disk are the same
            return
        c = self.config
        info = ModelInfo.in_memory(ema, family=c.family, name=self.name, step=step)
        was_training = ema.training
        # the profiler may draw from the global RNG; fork it so training's random stream is unchanged
        with torch.random.fork_rng(devices=[]):
            df = self.profile(
                [(ema, info)], inputs=self.probe, noise_levels=c.profile_noise_levels,
                samples=self.probe["x0"].shape[0], batch_size=c.profile_batch_size, seed=c.seed,
                device=c.device, analyses=Analyses(cka=c.profile_cka),
            )
        ema.train(was_training)
        df = df.copy()
        df["step"] = step
        df["run_id"] = self.run.metadata["run_id"]  # one id for the whole training run, not one per call
        self.run.mark_done(unit, df)

    def finish(self) -> None:
        self.run.finish()
