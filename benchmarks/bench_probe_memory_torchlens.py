"""Per-block act_rms over one forward pass: dardiag's streaming probe against TorchLens, time and peak memory.

Model: a DiT-S/2-like network (depth 12, width 384, 6 heads, 32x32x4 latent -> 256 tokens; random
weights with the zero-initialised adaLN gates and head randomised), ``--batch`` latents at noise level
0.5, one forward pass under ``torch.no_grad()``. The statistic: act_rms of z_0..z_12 (mean over
images and tokens of the channel RMS, diagnostics.md section 3).

Cases, each in a *fresh* Python process (this script re-runs itself with ``--child``):

* ``bare``              the forward alone (reference time and memory).
* ``dardiag``           the forward inside ``record(model, taps, LevelCollector)``: every z_k is reduced to
                        float64 sums in its hook (CKA, sublayers, routes and the timestep probe off).
* ``torchlens``         ``torchlens.trace(model, inputs)`` keeping every layer's output
                        (``CaptureOptions(layers_to_save="all")``, its default; the old
                        ``log_forward_pass`` keeping activations), then act_rms from ``trace[site].out``.
* ``torchlens-sites``   the same with ``layers_to_save=`` only the 13 ``sites.z_k`` modules.

Memory: ``ru_maxrss`` (peak resident set, KiB on Linux) of the child after the work, minus its value
once the model and inputs are built and nothing has run (the idle baseline of the same process).
Time: wall seconds of the work (TorchLens' first call also wraps torch's functions; that is part of
its cost in a fresh process, as in a user's first call). Values: max relative difference of the 13
act_rms values against dardiag's.

Usage::

    python benchmarks/bench_probe_memory_torchlens.py              # batch 8
    python benchmarks/bench_probe_memory_torchlens.py --batch 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

CASES = ("bare", "dardiag", "torchlens", "torchlens-sites")
DEPTH = 12


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@torch.no_grad()
def build(batch: int):
    from dardiag.models import DiT, DiTConfig

    torch.manual_seed(0)
    model = DiT(DiTConfig(input_size=32, patch_size=2, hidden_size=384, depth=DEPTH, num_heads=6)).eval()
    for p in model.parameters():
        if p.requires_grad and torch.count_nonzero(p) == 0:
            p.normal_(0.0, 0.02)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, 32, 32, generator=g)  # (N, C, H, W)
    t = torch.full((batch,), 500)  # (N,)
    y = torch.randint(0, 1000, (batch,), generator=g)  # (N,)
    return model, (x, t, y)


def act_rms(z: torch.Tensor) -> float:
    from dardiag.metrics import token_rms

    return token_rms(z).double().mean().item()


def child(case: str, batch: int) -> None:
    model, args = build(batch)
    setup = rss_kib()
    t0 = time.perf_counter()
    values: list[float] = []
    with torch.no_grad():
        if case == "bare":
            model(*args)
        elif case == "dardiag":
            from dardiag.checkpoints import ModelInfo
            from dardiag.engine.collector import LevelCollector
            from dardiag.engine.config import Analyses
            from dardiag.hooks.recorder import record
            from dardiag.adapters.dit import dit_subject

            subject = dit_subject(model, ModelInfo.in_memory(model, family="dit", name="S"))
            an = Analyses(cka=False, sublayers=False, routes=False, probe=False)
            col = LevelCollector(subject.spec, an)
            with record(model, list(subject.spec.taps), col, grads=False):
                col.begin_batch(args[0], torch.arange(batch))
                model(*args)
                col.end_batch(torch.zeros(()))
            values = [r["value"] for r in sorted((r for r in col.rows() if r["metric"] == "act_rms"),
                                                 key=lambda r: r["block"])]
        else:
            import torchlens as tl

            sites = [f"sites.z_{k}" for k in range(DEPTH + 1)]
            keep = sites if case == "torchlens-sites" else "all"
            trace = tl.trace(model, list(args), capture=tl.options.CaptureOptions(layers_to_save=keep))
            values = [act_rms(trace[s].out) for s in sites]
    seconds = time.perf_counter() - t0
    print(json.dumps({"setup_kib": setup, "peak_kib": rss_kib(), "seconds": seconds, "act_rms": values}))


def run_child(case: str, batch: int) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", case, "--batch", str(batch)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    a = parse(argv)
    if a.child:
        child(a.child, a.batch)
        return
    print(f"DiT-S/2-like, batch {a.batch} x 256 tokens, one forward under no_grad; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    res = {c: run_child(c, a.batch) for c in a.cases.split(",") if c}
    ours = res.get("dardiag", {})
    print(f"\n{'case':16s} {'seconds':>8s} {'peak MiB':>9s} {'extra MiB':>10s} {'extra / dardiag':>16s} "
          f"{'max rel diff act_rms':>21s}")
    for c, r in res.items():
        if "error" in r:
            print(f"{c:16s} failed: {r['error']}")
            continue
        extra = (r["peak_kib"] - r["setup_kib"]) / 1024
        ours_extra = (ours["peak_kib"] - ours["setup_kib"]) / 1024 if "peak_kib" in ours else None
        ratio = f"{extra / ours_extra:16.1f}" if ours_extra else f"{'-':>16s}"
        diff = "-"
        if r["act_rms"] and ours.get("act_rms"):
            diff = f"{max(abs(u - v) / abs(v) for u, v in zip(r['act_rms'], ours['act_rms'])):.1e}"
        print(f"{c:16s} {r['seconds']:8.2f} {r['peak_kib'] / 1024:9.0f} {extra:10.0f} {ratio} {diff:>21s}")


if __name__ == "__main__":
    main()
