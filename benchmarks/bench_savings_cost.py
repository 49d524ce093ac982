"""Cost of ``--ablation`` and ``--trajectory`` against the plain sweep, measured in one run.

What is compared (the same model, inputs, noise levels and minibatches, the same process):

* ``sweep``       ``profile()`` with its default analyses (CKA, probe, routes, outliers ...);
* ``+ablation``   the same with ``--ablation``: per minibatch D + 1 extra forward passes, no backward;
* ``+trajectory`` the same with ``--trajectory``: one run of the model's sampler (``--trajectory-steps``)
  over the same images, one recorded forward per step plus the cache-error forwards (every block's
  cell of a step in one batched forward of D x N rows, at most 512 rows each);
* ``forward`` / ``sampler``: references: one bare no-grad forward of every minibatch at every level,
  and the bare sampler over the same images, so the ratios can be read as "extra forward passes".

Time: each variant runs ``--repeats`` times, interleaved, after a warm-up round; the median process
CPU time (all threads) and wall time are reported. Models: the bundled residual and DAR digit models
(depth 8, width 64, 64 tokens) on held-out digits, or with ``--model dit-s`` a DiT-S/2-like network with
random weights (depth 12, width 384, 256 tokens; SiT family so it has a sampler).

Usage::

    python benchmarks/bench_savings_cost.py --threads 1                    # bundled pair, 4 levels x 64
    python benchmarks/bench_savings_cost.py --model dit-s --samples 8 --batch-size 8 --levels 2 --steps 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dardiag.adapters.dit import dit_subject
from dardiag.adapters.open import open_subject
from dardiag.bundled import bundled_checkpoints, held_out_digits
from dardiag.checkpoints import ModelInfo
from dardiag.engine.config import Analyses, ProfileConfig, default_grid
from dardiag.engine.inputs import make_inputs, minibatches
from dardiag.engine.plan import resolve_grid
from dardiag.engine.sweep import profile
from dardiag.savings.trajectory import chunk_seed, trajectory_chunks
from dardiag.models import DiT, DiTConfig

VARIANTS = ("sweep", "+ablation", "+trajectory", "forward", "sampler")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("bundled", "dit-s"), default="bundled")
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=50, help="--trajectory-steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def subjects(which: str):
    if which == "bundled":
        return [open_subject(str(p), name=n) for n, p in bundled_checkpoints().items()], held_out_digits()
    torch.manual_seed(0)
    model = DiT(DiTConfig(input_size=32, patch_size=2, in_channels=4, hidden_size=384, depth=12, num_heads=6,
                          num_classes=1000, learn_sigma=False))
    with torch.no_grad():  # adaLN-Zero leaves the blocks silent: give every parameter signal
        for prm in model.parameters():
            if prm.requires_grad:
                prm.add_(0.02 * torch.randn_like(prm))
    return [dit_subject(model.eval(), ModelInfo.in_memory(model, family="sit", name="DiT-S/2-like"))], None


def timed(fn) -> tuple[float, float]:
    c, w = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c, time.perf_counter() - w


def main(argv=None):
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    subs, inputs = subjects(a.model)
    grid = default_grid(a.levels)
    base = dict(noise_levels=grid, samples=a.samples, batch_size=a.batch_size, trajectory_steps=a.steps)
    configs = {
        "sweep": ProfileConfig(**base),
        "+ablation": ProfileConfig(**base, analyses=Analyses(ablation=True)),
        "+trajectory": ProfileConfig(**base, analyses=Analyses(trajectory=True)),
    }

    def run_profile(name, s):
        return lambda: profile([s], inputs=inputs, config=configs[name])

    def run_forward(s):
        inp = make_inputs(inputs, s, a.samples, 0)
        levels = resolve_grid(s, grid, None)

        @torch.no_grad()
        def go():
            for _, t_native in levels:
                for sl in minibatches(inp.count, a.batch_size):
                    t = torch.full((sl.stop - sl.start,), t_native)
                    s.call(s.model, s.family.corrupt(inp.x0[sl], inp.noise[sl], t), t, inp.y[sl], None)
        return go

    def run_sampler(s):
        inp = make_inputs(inputs, s, a.samples, 0)
        return lambda: [s.sample(inp.y[sl], a.steps, 1.0, chunk_seed(0, sl.start)) for sl in trajectory_chunks(inp.count)]

    results = {}
    for s in subs:
        jobs = {**{v: run_profile(v, s) for v in configs}, "forward": run_forward(s), "sampler": run_sampler(s)}
        for fn in jobs.values():  # warm-up
            fn()
        times = {v: [] for v in VARIANTS}
        for _ in range(a.repeats):
            for v in VARIANTS:
                times[v].append(timed(jobs[v]))
        cpu = {v: statistics.median(t[0] for t in times[v]) for v in VARIANTS}
        wall = {v: statistics.median(t[1] for t in times[v]) for v in VARIANTS}
        D = s.spec.depth
        abl, traj = cpu["+ablation"] - cpu["sweep"], cpu["+trajectory"] - cpu["sweep"]
        results[s.name] = {
            "depth": D, "cpu_s": cpu, "wall_s": wall,
            "ablation_vs_sweep": cpu["+ablation"] / cpu["sweep"],
            "trajectory_vs_sweep": cpu["+trajectory"] / cpu["sweep"],
            "ablation_in_forwards": abl / cpu["forward"],  # extra cost in units of one forward pass of the sweep
            "trajectory_in_samplers": traj / cpu["sampler"],  # extra cost in units of one bare sampler run
        }
        r = results[s.name]
        print(f"{s.name} (depth {D}, {a.levels} levels x {a.samples} images, batch {a.batch_size}, "
              f"{a.steps} sampler steps; median CPU s of {a.repeats}): sweep {cpu['sweep']:.2f}, +ablation "
              f"{cpu['+ablation']:.2f} ({r['ablation_vs_sweep']:.2f}x), +trajectory {cpu['+trajectory']:.2f} "
              f"({r['trajectory_vs_sweep']:.2f}x); the ablation costs {r['ablation_in_forwards']:.1f} forward passes "
              f"(D + 1 = {D + 1} expected), the trajectory {r['trajectory_in_samplers']:.1f} bare sampler runs "
              f"(1 + D = {D + 1} forwards per step, the D batched)")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
