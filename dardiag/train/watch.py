"""What ``dardiag train`` tells whoever watches it: the opening line (what was loaded, the data, the
device, what happens to OUT), about 20 progress lines a run (loss, time per step, ETA), and each
``--profile-every`` profile said before and after (it shows its own minibatches to a ``Progress``).
The periodic profiles are timed apart, so the time per step is training's and the ETA adds the
profiles left at the pace of the last one.
"""

from __future__ import annotations

import time

from dardiag.engine.progress import Pace, clock
from dardiag.runs.lifecycle import Plan
from dardiag.train.config import TrainConfig


def _count(n: int) -> str:
    return f"{n / 1e6:.3g} M" if n >= 1e6 else f"{n:,}"


class Watch:
    """What a person watching sees (``train``'s report/progress), timed apart from the periodic profiles."""

    def __init__(self, config: TrainConfig, report=None, progress=None, profile_progress=None):
        self.c, self.every = config, max(1, config.steps // 20)
        self.report, self.progress, self.profile_progress = report, progress, profile_progress
        self.pace: Pace | None = None
        self.profile_s = None  # the last periodic profile's seconds

    def opening(self, plan: Plan, device, data, model, start: int) -> None:
        if self.report is None:
            return
        c, cfg = self.c, model.config
        n = sum(p.numel() for p in model.parameters())
        k = sum(p.numel() for p in model.parameters() if p.requires_grad)
        params = f"{_count(n)} parameters" + (f", {_count(k)} of them trained" if c.lora else "")
        what = (f"fine-tuning {c.init}" + (f" with LoRA rank {c.lora}" if c.lora else "") if c.init
                else "training a new model")
        x0 = data["x0"]
        classes = int(data["y"].max()) + 1 if "y" in data else 1
        source = "digits (train split)" if c.data == "digits" else c.data
        where = (f"continuing from step {start}" if plan.action == "continue" else
                 "replacing the run there" if plan.replacing else "fresh run")
        self.report(f"{what}: {cfg.routing_name} DiT, depth {cfg.depth}, width {cfg.hidden_size}, {cfg.num_heads} "
                    f"heads, patch {cfg.patch_size} ({params}), {c.family} objective; data {source}: "
                    f"{x0.shape[0]} images {'x'.join(map(str, x0.shape[1:]))}, {classes} classes; on {device}; "
                    f"{where}, to step {c.steps} (batch {c.batch_size}, lr {c.lr:g})")

    def begin(self, start: int) -> None:
        self.pace = Pace(self.c.steps, start)

    def profiled(self, hook, ema, step: int) -> float:
        """Run the periodic profile at ``step``, said before and after; -> its seconds."""
        if self.progress is not None:
            self.progress(f"step {step:>7d}: profiling the EMA model ({hook.what}) into {hook.run.path}")
        t0 = time.perf_counter()
        try:
            hook(ema, step, progress=self.profile_progress)
        finally:
            if self.profile_progress is not None:
                self.profile_progress.end()  # a live bar goes before training's lines resume
        self.profile_s = time.perf_counter() - t0
        if self.progress is not None:
            self.progress(f"step {step:>7d}: profiled in {self.profile_s:.0f} s")
        return self.profile_s

    def step(self, done: int, loss: float, profile_s: float) -> None:
        self.pace.step(self.c.batch_size)
        self.pace.exclude(profile_s)  # the ETA adds the profiles left at their own pace
        if self.progress is None or not (done % self.every == 0 or done == self.c.steps):
            return
        per, left = self.pace.per_step(), self.pace.seconds_left()
        pe = self.c.profile_every
        if pe and self.profile_s is not None and left is not None:
            left += (self.c.steps // pe - done // pe) * self.profile_s
        eta = "" if done == self.c.steps else f"  ETA {clock(left)}" if left is not None else ""
        self.progress(f"step {done:>7d}/{self.c.steps}  loss {loss:.4f}  {per:.3g} s/step{eta}")
