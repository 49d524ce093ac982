"""Overhead of ``dardiag.engine.sweep.profile`` against a bare forward + backward on the same work.

What is compared (same model, same inputs, same noise levels, same minibatches, same process):

* ``bare``        forward + the family's simple loss + backward, parameters frozen and
                  ``x_t.requires_grad_(True)``: exactly the autograd work the profiler itself needs.
* ``bare+wgrad``  the same with parameter gradients (what a training step computes, minus the optimizer).
* ``profile``     ``profile()`` with every analysis except CKA (act/grad RMS, cos_prev, sublayer RMS,
                  counterfactual route importance, timestep probe, per-token maps).
* ``profile+cka`` the same plus the full (D+1) x (D+1) unbiased CKA matrix (rows = tokens, float64 Grams).

Model: a DiT-S/2-like network (depth 12, width 384, 6 heads, latent 32x32x4 -> 256 tokens, 1000
classes) with random weights (the zero-initialised adaLN/head parameters get small random values),
DiT family (eps loss), default 4 levels x 32 samples, minibatch 8.

Time: every variant runs ``--repeats`` times, interleaved (bare, bare+wgrad, profile, profile+cka,
bare, ...) after one warm-up round; we report the median wall time and the median process CPU time
(all threads). On a shared machine the CPU time is the steadier number; both are printed.

Peak memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set size, KiB on Linux) of
a *fresh* Python process per measurement (this script re-runs itself with ``--memory VARIANT``),
so no measurement inherits another's high-water mark. Each child first builds the model and inputs,
records ru_maxrss (the "setup" level: interpreter + torch + model + inputs), runs the variant once
and records ru_maxrss again; we report the peak and the increase over setup. The increase is what
the variant itself needs; RSS counts CPU tensors, so this is the CPU analogue of
``torch.cuda.max_memory_allocated``. Memory independence from the number of levels is checked by
running ``profile+cka`` (and ``profile``) at 2 and at 8 levels.

Usage::

    python benchmarks/bench_profile_overhead.py                 # DiT-S/2-like, 4 levels x 32 samples
    python benchmarks/bench_profile_overhead.py --quick         # a small model, seconds
    python benchmarks/bench_profile_overhead.py --threads 8     # intra-op threads (default: torch's)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from dardiag.checkpoints import ModelInfo
from dardiag.models import DiT, DiTConfig
from dardiag.engine.config import Analyses
from dardiag.hooks.recorder import frozen_parameters
from dardiag.adapters.dit import dit_subject
from dardiag.engine.sweep import minibatches, profile, resolve_grid

VARIANTS = ("bare", "bare+wgrad", "profile", "profile+cka")
TARGETS = {"profile": 1.25, "profile+cka": 1.6}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--memory-levels", default="2,8", help="level counts for the memory-vs-levels check")
    p.add_argument("--quick", action="store_true", help="depth 4, width 128, 16x16 latent, 2 repeats")
    p.add_argument("--skip-time", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory", choices=VARIANTS, help=argparse.SUPPRESS)  # child mode
    a = p.parse_args(argv)
    if a.quick:
        a.depth, a.hidden, a.heads, a.latent, a.repeats = 4, 128, 4, 16, 2
    return a


#################################################################################
#                                 Setup                                         #
#################################################################################


@torch.no_grad()
def build(a):
    torch.manual_seed(0)
    cfg = DiTConfig(input_size=a.latent, patch_size=2, in_channels=4, hidden_size=a.hidden, depth=a.depth,
                    num_heads=a.heads, num_classes=1000)
    model = DiT(cfg).eval()
    for p in model.parameters():  # adaLN-Zero / output head: non-zero so every path carries gradient
        if p.requires_grad and torch.count_nonzero(p) == 0:
            p.normal_(0.0, 0.02)
    g = torch.Generator().manual_seed(1)
    n = a.samples
    inputs = {"x0": torch.randn(n, 4, a.latent, a.latent, generator=g),  # (N, C, H, W)
              "y": torch.randint(0, 1000, (n,), generator=g),  # (N,)
              "noise": torch.randn(n, 4, a.latent, a.latent, generator=g)}  # (N, C, H, W)
    subject = dit_subject(model, ModelInfo.in_memory(model, family="dit", name="DiT-S/2-like"))
    return subject, inputs


def levels(n: int) -> list[float]:
    return [0.1 + 0.8 * i / max(n - 1, 1) for i in range(n)]


def bare(subject, inputs, grid, batch_size, wgrad: bool):
    """Forward + simple loss + backward over the same levels and minibatches as the profile."""
    model, fam = subject.model, subject.family
    grid = resolve_grid(subject, grid, None)
    batches = minibatches(inputs["x0"].shape[0], batch_size)

    def work():
        for _, t_native in grid:
            for sl in batches:
                x0, noise, y = inputs["x0"][sl], inputs["noise"][sl], inputs["y"][sl]
                t = torch.full((x0.shape[0],), t_native, dtype=torch.float64).long()
                x_t = fam.corrupt(x0, noise, t).requires_grad_(True)
                loss = fam.loss(subject.call(model, x_t, t, y, None), x0, noise, t)
                loss.backward()
                if wgrad:
                    model.zero_grad(set_to_none=True)

    if wgrad:
        work()
    else:
        with frozen_parameters(model):
            work()


def run_variant(name, subject, inputs, grid, batch_size):
    if name.startswith("bare"):
        bare(subject, inputs, grid, batch_size, wgrad=name == "bare+wgrad")
    else:
        an = Analyses(cka=name == "profile+cka", token_maps=True)  # every analysis; CKA as the variant says
        profile(subject, inputs=inputs, noise_levels=grid, batch_size=batch_size, samples=None, analyses=an)


#################################################################################
#                                 Measurements                                  #
#################################################################################


def timing(a, subject, inputs):
    grid = levels(a.levels)
    for v in VARIANTS:  # warm-up (allocator, lazy inits)
        run_variant(v, subject, inputs, grid[:1], a.batch_size)
    wall = {v: [] for v in VARIANTS}
    cpu = {v: [] for v in VARIANTS}
    for r in range(a.repeats):
        for v in VARIANTS:
            w0, c0 = time.perf_counter(), time.process_time()
            run_variant(v, subject, inputs, grid, a.batch_size)
            wall[v].append(time.perf_counter() - w0)
            cpu[v].append(time.process_time() - c0)
            print(f"  repeat {r + 1}/{a.repeats}  {v:12s} wall {wall[v][-1]:7.2f} s  cpu {cpu[v][-1]:7.2f} s",
                  flush=True)
    return ({v: statistics.median(x) for v, x in wall.items()}, {v: statistics.median(x) for v, x in cpu.items()})


def child_memory(a) -> None:
    """Child mode: setup, then one run of a variant; print JSON with ru_maxrss before and after (KiB)."""
    subject, inputs = build(a)
    setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run_variant(a.memory, subject, inputs, levels(a.levels), a.batch_size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"setup_kib": setup, "peak_kib": peak}))


def measure_memory(a, variant: str, n_levels: int) -> dict:
    cmd = [sys.executable, __file__, "--memory", variant, "--levels", str(n_levels), "--depth", str(a.depth),
           "--hidden", str(a.hidden), "--heads", str(a.heads), "--latent", str(a.latent),
           "--samples", str(a.samples), "--batch-size", str(a.batch_size)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def mib(kib: float) -> float:
    return kib / 1024


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b > 0 else "-"


def main(argv=None) -> None:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.memory:
        child_memory(a)
        return
    subject, inputs = build(a)
    n_params = sum(p.numel() for p in subject.model.parameters())
    tokens = (a.latent // 2) ** 2
    print(f"model: depth {a.depth}, width {a.hidden}, {a.heads} heads, {tokens} tokens, {n_params / 1e6:.1f} M params")
    print(f"work: {a.levels} levels x {a.samples} samples, minibatch {a.batch_size}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op threads")

    if not a.skip_time:
        print("\n== time (median of repeats) ==")
        wall, cpu = timing(a, subject, inputs)
        print(f"\n{'variant':13s} {'wall s':>8s} {'cpu s':>8s} {'wall/bare':>10s} {'cpu/bare':>9s} "
              f"{'wall/wgrad':>11s} {'cpu/wgrad':>10s}  target")
        for v in VARIANTS:
            tgt = f"<= {TARGETS[v]:.2f}x vs bare" if v in TARGETS else ""
            print(f"{v:13s} {wall[v]:8.2f} {cpu[v]:8.2f} {wall[v] / wall['bare']:10.3f} {cpu[v] / cpu['bare']:9.3f} "
                  f"{wall[v] / wall['bare+wgrad']:11.3f} {cpu[v] / cpu['bare+wgrad']:10.3f}  {tgt}")

    if not a.skip_memory:
        print("\n== peak memory: ru_maxrss of a fresh process per variant ==")
        mem = {v: measure_memory(a, v, a.levels) for v in VARIANTS}
        base = mem["bare"]["peak_kib"] - mem["bare"]["setup_kib"]
        base_w = mem["bare+wgrad"]["peak_kib"] - mem["bare+wgrad"]["setup_kib"]
        print(f"{'variant':13s} {'peak MiB':>9s} {'setup MiB':>10s} {'extra MiB':>10s} {'peak/bare':>10s} "
              f"{'extra/bare':>11s} {'extra/wgrad':>12s}")
        for v in VARIANTS:
            m = mem[v]
            extra = m["peak_kib"] - m["setup_kib"]
            print(f"{v:13s} {mib(m['peak_kib']):9.0f} {mib(m['setup_kib']):10.0f} {mib(extra):10.0f} "
                  f"{ratio(m['peak_kib'], mem['bare']['peak_kib']):>10s} {ratio(extra, base):>11s} "
                  f"{ratio(extra, base_w):>12s}")
        print("\n== peak memory vs number of levels (fresh process each) ==")
        counts = [int(c) for c in a.memory_levels.split(",")]
        for v in ("profile", "profile+cka"):
            row = {c: measure_memory(a, v, c) for c in counts}
            cells = "  ".join(f"{c} levels: peak {mib(m['peak_kib']):.0f} MiB (+{mib(m['peak_kib'] - m['setup_kib']):.0f})"
                              for c, m in row.items())
            lo, hi = row[counts[0]]["peak_kib"], row[counts[-1]]["peak_kib"]
            print(f"{v:13s} {cells}  ratio {hi / lo:.3f}")


if __name__ == "__main__":
    main()
