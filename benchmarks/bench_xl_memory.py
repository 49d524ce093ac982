"""Peak memory of a full DiT-XL/2 profile against a bare forward + backward, and its independence of the
number of noise levels and minibatches.

Model: ``preset("DiT-XL/2")`` (depth 28, width 1152, 16 heads, 32x32x4 latent -> 256 tokens, 675 M
parameters) with random weights; the zero-initialised adaLN gates and output head get small random
values so every branch carries signal and gradient. Inputs: seeded standard-normal latents.

Cases, each in a *fresh* Python process (this script re-runs itself with ``--child``), so no case
inherits another's high-water mark:

* ``bare``     forward + the family's simple loss + backward per minibatch, parameters frozen and
               ``x_t.requires_grad_(True)``: exactly the autograd work the profiler itself needs.
* ``profile``  ``dardiag.engine.sweep.profile`` with every default analysis on (act/grad RMS, cos_prev,
               sublayer RMS, counterfactual route importance, (D+1)x(D+1) unbiased CKA over tokens,
               timestep probe, outlier sums, standard errors; ``--token-maps`` adds the per-token maps),
               at 2 and at 16 noise levels with 1 minibatch per level, and at 2 levels with 2
               minibatches per level.

Memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set, KiB on Linux). Each child
records it after building the model and inputs ("setup": interpreter + torch + 2.7 GB of weights),
after every noise level (through the progress callback), and at the end. "extra" = peak - setup is
what the work itself needs; the target is extra(profile) <= 1.5 x extra(bare), and a peak that does
not grow with the number of levels or minibatches. The script also prints what the cost line of
``dardiag profile`` (``dardiag.engine.cost``) expects for one minibatch, beside the measured extra.

Time: wall seconds per forward+backward pass; the first pass of a process pays one-off costs, so the
bare reference is its second pass and the profile's is the median over its levels. On a shared CPU
machine the wall times are noisy; the ratio of the two is the number to read.

Usage::

    python benchmarks/bench_xl_memory.py                    # batch 4, all four cases (~25 passes)
    python benchmarks/bench_xl_memory.py --batch 8 --many-levels 4
    python benchmarks/bench_xl_memory.py --cases bare,profile-2
    python benchmarks/bench_xl_memory.py --mmap-threshold 131072   # RSS without glibc heap fragmentation

Allocator note: with glibc's default (dynamic) mmap threshold, freed activation blocks stay in the
heap and a second forward+backward in the same process can raise RSS by a fragmentation margin that
does not grow further (DiT-S/2, batch 4: +100 MiB for a 2nd minibatch, +0 for the 3rd and 4th);
a fixed threshold removes it (extra then 293, 297, 298 MiB for 1, 2, 4 minibatches).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from dardiag.checkpoints import ModelInfo
from dardiag.metrics import CKAAccumulator
from dardiag.models import DiT, preset
from dardiag.engine.config import Analyses, ProfileConfig
from dardiag.hooks.recorder import frozen_parameters
from dardiag.adapters.dit import dit_subject
from dardiag.engine.sweep import minibatches, profile, resolve_grid

CASES = ("bare", "profile-2", "profile-2x2", "profile-many")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="DiT-XL/2")
    p.add_argument("--batch", type=int, default=4, help="images per minibatch (the work unit)")
    p.add_argument("--many-levels", type=int, default=16, help="levels of the profile-many case")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--token-maps", action="store_true", help="add the per-token maps (off by default in profile)")
    p.add_argument("--mmap-threshold", type=int, default=None, metavar="BYTES",
                   help="run the children with MALLOC_MMAP_THRESHOLD_=BYTES (glibc): large blocks are "
                        "mmapped and returned on free, so RSS follows live tensors, not heap fragmentation")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "bare:L:M" / "profile:L:M"
    return p.parse_args(argv)


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def levels(n: int) -> list[float]:
    return [0.05 + 0.9 * i / max(n - 1, 1) for i in range(n)]


@torch.no_grad()
def build(name: str, samples: int):
    torch.manual_seed(0)
    model = DiT(preset(name)).eval()
    for p in model.parameters():  # adaLN-Zero / output head: non-zero so every path carries gradient
        if p.requires_grad and torch.count_nonzero(p) == 0:
            p.normal_(0.0, 0.02)
    cfg, g = model.config, torch.Generator().manual_seed(1)
    shape = (samples, cfg.in_channels, cfg.input_size, cfg.input_size)
    inputs = {"x0": torch.randn(shape, generator=g), "y": torch.randint(0, cfg.num_classes, (samples,), generator=g),
              "noise": torch.randn(shape, generator=g)}
    return dit_subject(model, ModelInfo.in_memory(model, family="dit", name=name)), inputs


def child(a) -> None:
    kind, n_levels, n_batches = a.child.split(":")
    n_levels, n_batches = int(n_levels), int(n_batches)
    subject, inputs = build(a.model, a.batch * n_batches)
    out = {"setup_kib": rss_kib(), "level_peak_kib": [], "level_s": [], "level_cpu_s": []}
    grid = levels(n_levels)
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "bare":
        model, fam = subject.model, subject.family
        with frozen_parameters(model):
            for _, t_native in resolve_grid(subject, grid, None):
                for sl in minibatches(a.batch * n_batches, a.batch):
                    x0, noise, y = inputs["x0"][sl], inputs["noise"][sl], inputs["y"][sl]
                    t = torch.full((x0.shape[0],), t_native, dtype=torch.float64).long()
                    x_t = fam.corrupt(x0, noise, t).requires_grad_(True)  # (N, C, H, W)
                    fam.loss(subject.call(model, x_t, t, y, None), x0, noise, t).backward()
                out["level_s"].append(time.perf_counter() - t0)
                out["level_cpu_s"].append(time.process_time() - c0)
                out["level_peak_kib"].append(rss_kib())
                t0, c0 = time.perf_counter(), time.process_time()
    else:
        def progress(msg: str) -> None:
            nonlocal t0, c0
            if "noise level" in msg:
                out["level_s"].append(time.perf_counter() - t0)
                out["level_cpu_s"].append(time.process_time() - c0)
                out["level_peak_kib"].append(rss_kib())
            t0, c0 = time.perf_counter(), time.process_time()

        df = profile(subject, inputs=inputs, noise_levels=grid, batch_size=a.batch, samples=None,
                     analyses=Analyses(token_maps=a.token_maps), progress=progress, device="cpu")
        out["rows"] = len(df)
        out["metrics"] = sorted(set(df["metric"]))
    out["peak_kib"] = rss_kib()
    print(json.dumps(out))


def run_child(a, spec: str) -> dict:
    cmd = [sys.executable, __file__, "--child", spec, "--model", a.model, "--batch", str(a.batch)]
    cmd += ["--token-maps"] if a.token_maps else []
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    env = dict(os.environ)
    if a.mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(a.mmap_threshold)
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"child {spec} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    return out


def gib(kib: float) -> float:
    return kib / 2**20


def main(argv=None) -> None:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.child:
        child(a)
        return
    cases = [c for c in a.cases.split(",") if c]
    specs = {"bare": "bare:2:1", "profile-2": "profile:2:1", "profile-2x2": "profile:2:2",
             "profile-many": f"profile:{a.many_levels}:1"}
    cfg = preset(a.model)
    T = cfg.num_tokens
    P = cfg.depth + 1
    n = a.batch * T
    print(f"{a.model}: depth {cfg.depth}, width {cfg.hidden_size}, {T} tokens; minibatch {a.batch} images "
          f"= {n} CKA rows; torch {torch.__version__}, {a.threads or torch.get_num_threads()} threads")
    blocks = CKAAccumulator(P)._blocks(n, P, torch.device("cpu"))
    b = blocks[0][1]
    print(f"CKA: all {P} Grams of one minibatch would take {P} x {n}^2 x 8 B = {P * n * n * 8 / 2**30:.2f} GiB; "
          f"the accumulator forms {len(blocks) * (len(blocks) + 1) // 2} [{P}, {b}, {b}] float64 tile(s) of "
          f"{P * b * b * 8 / 2**30:.2f} GiB, one at a time")
    if a.mmap_threshold:
        print(f"children run with MALLOC_MMAP_THRESHOLD_={a.mmap_threshold}")
    expected = _expected(a)
    print(f"cost line: {expected.line()}")
    res = {}
    for c in cases:
        t = time.perf_counter()
        res[c] = run_child(a, specs[c])
        r = res[c]
        print(f"  {c:13s} done in {time.perf_counter() - t:6.0f} s: setup {gib(r['setup_kib']):.2f} GiB, "
              f"peak {gib(r['peak_kib']):.2f} GiB, per-level peaks "
              f"{' '.join(f'{gib(k):.2f}' for k in r['level_peak_kib'])}", flush=True)

    print(f"\n{'case':13s} {'levels x mb':>11s} {'setup GiB':>9s} {'peak GiB':>9s} {'extra GiB':>9s} "
          f"{'peak/bare':>9s} {'extra/bare':>10s} {'wall s/pass':>11s} {'cpu s/pass':>10s}")
    bare = res.get("bare")
    for c in cases:
        r = res[c]
        _, L, M = specs[c].split(":")
        extra = r["peak_kib"] - r["setup_kib"]
        per_pass = [_per_pass(r[k], c == "bare") / int(M) for k in ("level_s", "level_cpu_s")]
        rp = f"{r['peak_kib'] / bare['peak_kib']:9.3f}" if bare else f"{'-':>9s}"
        rx = f"{extra / (bare['peak_kib'] - bare['setup_kib']):10.3f}" if bare else f"{'-':>10s}"
        if c != "bare":
            est = expected.work_bytes / 2**10
            print(f"  {c}: measured extra {gib(extra):.2f} GiB, the cost line expects {gib(est):.2f} GiB "
                  f"(ratio {extra / est:.2f})")
        print(f"{c:13s} {L + ' x ' + M:>11s} {gib(r['setup_kib']):9.2f} {gib(r['peak_kib']):9.2f} "
              f"{gib(extra):9.2f} {rp} {rx} {per_pass[0]:11.1f} {per_pass[1]:10.1f}")
    if "profile-2" in res and "profile-many" in res:
        print(f"\npeak, {a.many_levels} levels / 2 levels: "
              f"{res['profile-many']['peak_kib'] / res['profile-2']['peak_kib']:.3f}")
    if "profile-2" in res and "profile-2x2" in res:
        print(f"peak, 2 minibatches / 1 minibatch per level: "
              f"{res['profile-2x2']['peak_kib'] / res['profile-2']['peak_kib']:.3f}")
    if bare:
        for c in (c for c in cases if c.startswith("profile")):
            M = int(specs[c].split(":")[2])  # passes per level
            print(f"time per pass, {c} / bare: wall "
                  f"{_per_pass(res[c]['level_s'], False) / M / _per_pass(bare['level_s'], True):.2f}, cpu "
                  f"{_per_pass(res[c]['level_cpu_s'], False) / M / _per_pass(bare['level_cpu_s'], True):.2f}")


def _expected(a):
    """The cost line's estimate for one minibatch of ``a.batch`` images (no model is built: meta tensors)."""
    from dardiag.engine import cost
    from dardiag.engine.plan import ModelPlan
    from dardiag.engine.inputs import Inputs

    with torch.device("meta"):
        model = DiT(preset(a.model))
    cfg = model.config
    subject = dit_subject(model, ModelInfo.in_memory(model, family="dit", name=a.model))
    shape = (a.batch, cfg.in_channels, cfg.input_size, cfg.input_size)
    inp = Inputs(torch.zeros(shape), torch.zeros(a.batch, dtype=torch.long), torch.zeros(shape), "bench")
    plan = ModelPlan(subject, [(0.5, 500.0)] * 2, inp, None)
    return cost.estimate(plan, ProfileConfig(batch_size=a.batch, device="cpu",
                                             analyses=Analyses(token_maps=a.token_maps)), "cpu")


def _per_pass(level_times: list[float], bare: bool) -> float:
    """Seconds per level without one-off costs: bare's second level, else the median past the first."""
    if bare:
        return level_times[1] if len(level_times) > 1 else level_times[0]
    return statistics.median(level_times[1:] or level_times)


if __name__ == "__main__":
    main()
