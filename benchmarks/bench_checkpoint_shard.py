"""The two memory levers: a checkpointed profile against the plain one, and peak memory per process with
the weights sharded over 2 processes.

``speed`` (default): a DiT of 28 blocks (``--model`` preset, its depth set by ``--depth``; random
weights with the zero-initialised gates and head drawn small, so every branch carries gradient), every
default analysis, the same seeded inputs and minibatches in both cases, each case in a fresh Python
process (this script re-runs itself), alternating plain / checkpointed ``--repeats`` times:

* time: wall and CPU seconds per minibatch, the median over the minibatches after the first (which pays
  one-off costs) and over the repeats; printed as checkpointed / plain (target <= 1.4x);
* memory: peak RSS (``ru_maxrss``) over the setup (interpreter, torch and every module a profile imports,
  loaded by a tiny profile first; weights; inputs), i.e. what the profile's work itself needs; printed
  as checkpointed / plain (target <= 0.35x at 28 blocks), beside what the cost line expects.

``memory``: peak memory per process of ``dardiag profile`` on a model written to disk (``--dit`` a
preset as a dardiag checkpoint, float32; or ``--flux-params B``: a Flux-shaped diffusers folder of about
B billion parameters in bfloat16, profiled with ``--dtype bfloat16``), one minibatch of ``--batch``
images per process, 1 noise level, every default analysis: plain, ``--checkpoint-blocks``, and
``--shard`` over 2 processes under torchrun (gloo; each process its own minibatch). Peak RSS of the
process (plain, checkpointed) or of the largest torchrun worker (``RUSAGE_CHILDREN``).

Usage::

    python benchmarks/bench_checkpoint_shard.py --model DiT-XL/2 --batch 4 --threads 1
    python benchmarks/bench_checkpoint_shard.py memory --dit DiT-XL/2 --batch 4
    python benchmarks/bench_checkpoint_shard.py memory --flux-params 3 --batch 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def gib(kib: float) -> float:
    return kib / 2**20


# ----------------------------------------------------------------------------- speed

def _dit(name: str, depth: int):
    import dataclasses

    from dardiag.models import DiT, preset

    torch.manual_seed(0)
    cfg = preset(name)
    model = DiT(dataclasses.replace(cfg, depth=depth) if depth else cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # adaLN-Zero / output head: non-zero so every path carries gradient
            if p.requires_grad and torch.count_nonzero(p) == 0:
                p.normal_(0.0, 0.02)
    return model


def _speed_child(a) -> None:
    from dardiag.adapters.dit import dit_subject
    from dardiag.checkpoints import ModelInfo
    from dardiag.engine.progress import Progress
    from dardiag.engine.sweep import profile

    import dardiag
    from dardiag.models import DiT, DiTConfig

    # a tiny profile first: every module the profile imports is loaded before the setup is measured
    tiny = DiT(DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=2))
    dardiag.profile(tiny, family="dit", samples=4, batch_size=4, noise_levels=[0.5], device="cpu",
                    checkpoint_blocks=a.child == "checkpointed")
    model = _dit(a.model, a.depth)
    cfg, g = model.config, torch.Generator().manual_seed(1)
    n = a.batch * a.minibatches
    shape = (n, cfg.in_channels, cfg.input_size, cfg.input_size)
    inputs = {"x0": torch.randn(shape, generator=g), "y": torch.randint(0, cfg.num_classes, (n,), generator=g),
              "noise": torch.randn(shape, generator=g)}
    subject = dit_subject(model, ModelInfo.in_memory(model, family="dit", name=a.model))
    out = {"setup_kib": rss_kib(), "wall": [], "cpu": []}
    t0, c0 = time.perf_counter(), time.process_time()

    class Watch(Progress):  # one call per finished minibatch
        def begin(self, **kw):
            nonlocal t0, c0
            t0, c0 = time.perf_counter(), time.process_time()

        def step(self, images):
            nonlocal t0, c0
            out["wall"].append(time.perf_counter() - t0)
            out["cpu"].append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()

    lines: list[str] = []
    profile(subject, inputs=inputs, noise_levels=[0.5], batch_size=a.batch, device="cpu", progress=Watch(),
            checkpoint_blocks=a.child == "checkpointed", report=lines.append)
    out["peak_kib"] = rss_kib()
    out["plan"] = next(line for line in lines if line.startswith("plan: "))
    print(json.dumps(out))


def _run(cmd: list[str], env: dict | None = None) -> dict:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def speed(a) -> None:
    print(f"{a.model} at depth {a.depth}: batch {a.batch}, {a.minibatches} minibatches per case, {a.repeats} "
          f"repeats; torch {torch.__version__}, {a.threads or torch.get_num_threads()} threads; load average "
          f"{os.getloadavg()[0]:.1f}")
    res = {"plain": [], "checkpointed": []}
    for _ in range(a.repeats):
        for case in res:
            cmd = [sys.executable, str(HERE), "speed", "--child", case, "--model", a.model, "--depth", str(a.depth),
                   "--batch", str(a.batch), "--minibatches", str(a.minibatches)]
            cmd += ["--threads", str(a.threads)] if a.threads else []
            env = dict(os.environ)
            if a.mmap_threshold:  # glibc: large blocks mmapped and returned when freed, so RSS follows live tensors
                env["MALLOC_MMAP_THRESHOLD_"] = str(a.mmap_threshold)
            r = _run(cmd, env)
            res[case].append(r)
            print(f"  {case:12s} setup {gib(r['setup_kib']):.2f} GiB, peak {gib(r['peak_kib']):.2f} GiB, "
                  f"wall s/minibatch {' '.join(f'{s:.2f}' for s in r['wall'])}", flush=True)

    def per_minibatch(rs, key):
        return statistics.median(s for r in rs for s in (r[key][1:] or r[key]))

    def extra(rs):
        return min(r["peak_kib"] - r["setup_kib"] for r in rs)

    p, c = res["plain"], res["checkpointed"]
    print(f"\nplain        : {per_minibatch(p, 'wall'):.2f} s/minibatch wall, {per_minibatch(p, 'cpu'):.2f} cpu; "
          f"peak over the setup {gib(extra(p)):.3f} GiB")
    print(f"checkpointed : {per_minibatch(c, 'wall'):.2f} s/minibatch wall, {per_minibatch(c, 'cpu'):.2f} cpu; "
          f"peak over the setup {gib(extra(c)):.3f} GiB")
    print(f"cost line (checkpointed run): {c[0]['plan']}")
    print(f"time, checkpointed / plain: wall {per_minibatch(c, 'wall') / per_minibatch(p, 'wall'):.2f}x, "
          f"cpu {per_minibatch(c, 'cpu') / per_minibatch(p, 'cpu'):.2f}x (target <= 1.4x)")
    print(f"peak memory over the weights, checkpointed / plain: {extra(c) / extra(p):.3f}x (target <= 0.35x)")


# ----------------------------------------------------------------------------- memory per process

def _write(a, folder: Path) -> tuple[Path, list[str]]:
    """The model on disk (written by a child: a parent's peak RSS would carry into its children's) and the
    flags its profile takes."""
    subprocess.run([sys.executable, str(HERE), "memory", "--write", str(folder), "--dit", a.dit,
                    "--flux-params", str(a.flux_params)], check=True)
    if a.flux_params:  # 256 image tokens (32 x 32 latents, packed 2 x 2) and 32 text tokens, as bench_diffusers
        return folder, ["--dtype", "bfloat16", "--input-size", "32", "--text-tokens", "32"]
    return folder / "model.pt", []


def _write_child(a) -> None:
    folder = Path(a.write)
    if a.flux_params:
        sys.path.insert(0, str(HERE.parent))
        from bench_diffusers import _write_model

        _write_model(folder, a.flux_params)
        return
    from dardiag.checkpoints import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "model.pt", _dit(a.dit, 0), family="dit", step=0)


def _peak_of(cmd: list[str], env: dict) -> tuple[float, str]:
    """Run ``cmd`` in a child; -> (its largest descendant's peak RSS in GiB, its output)."""
    probe = ("import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:], capture_output=True, "
             "text=True); print(json.dumps({'rc': r.returncode, 'out': r.stdout + r.stderr, "
             "'kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    r = _run([sys.executable, "-c", probe, *cmd], env)
    if r["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r['out'][-3000:]}")
    return gib(r["kib"]), r["out"]


def memory(a) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads or 2)}
    env.pop("WORLD_SIZE", None)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        tmp = Path(tmp)
        model, flags = _write(a, tmp / "model")
        size = sum(f.stat().st_size for f in (model.rglob("*") if model.is_dir() else [model])) / 2**30
        common = ["profile", str(model), "--noise-levels", "0.5", "--batch-size", str(a.batch), "--no-figures",
                  "--no-progress", "--device", "cpu", *flags]
        dardiag = [sys.executable, "-m", "dardiag"]
        rows = []
        for case, cmd in (
            ("plain", [*dardiag, *common, "--samples", str(a.batch), "--no-checkpoint-blocks"]),
            ("checkpointed", [*dardiag, *common, "--samples", str(a.batch), "--checkpoint-blocks"]),
            ("sharded over 2", [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                "--master-port", str(29500 + os.getpid() % 400), "-m", "dardiag", *common,
                                "--samples", str(2 * a.batch), "--shard", "--no-checkpoint-blocks"]),
            ("sharded over 2, checkpointed", [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                                              "2", "--master-port", str(29900 + os.getpid() % 90), "-m", "dardiag",
                                              *common, "--samples", str(2 * a.batch), "--shard",
                                              "--checkpoint-blocks"]),
        ):
            if a.cases and case.split(",")[0].replace(" ", "-") not in a.cases.split(","):
                continue
            t = time.perf_counter()
            peak, text = _peak_of([*cmd, "--out", str(tmp / case.replace(" ", "_").replace(",", ""))], env)
            plan = next((line for line in text.splitlines() if line.startswith("plan: ")), "")
            rows.append((case, peak, time.perf_counter() - t, plan))
            print(f"  {case:30s} peak {peak:6.2f} GiB per process  ({time.perf_counter() - t:.0f} s)", flush=True)
            print(f"    {plan}", flush=True)
    print(f"\nmodel on disk: {size:.2f} GiB; batch {a.batch} per process; torch {torch.__version__}")
    print("| case | peak RSS per process, GiB |\n|---|---:|")
    for case, peak, _, _ in rows:
        print(f"| {case} | {peak:.2f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", default="speed", choices=("speed", "memory"))
    p.add_argument("--model", default="DiT-XL/2", help="speed: the preset whose width, heads and tokens are used")
    p.add_argument("--depth", type=int, default=28, help="speed: blocks")
    p.add_argument("--mmap-threshold", type=int, default=None, metavar="BYTES",
                   help="speed: children run with MALLOC_MMAP_THRESHOLD_=BYTES (RSS without heap fragmentation)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=3, help="speed: minibatches per case (the first is not timed)")
    p.add_argument("--repeats", type=int, default=2, help="speed: plain / checkpointed pairs, in fresh processes")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dit", default="DiT-XL/2", help="memory: the DiT preset written to disk")
    p.add_argument("--flux-params", type=float, default=0.0, help="memory: a Flux-shaped bfloat16 model instead")
    p.add_argument("--cases", default="", help="memory: a subset, e.g. plain,checkpointed,sharded-over-2")
    p.add_argument("--dir", default=None, help="memory: where the model is written (default: the temp dir)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--write", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.write:
        _write_child(a)
    elif a.child:
        _speed_child(a)
    elif a.mode == "speed":
        speed(a)
    else:
        memory(a)


if __name__ == "__main__":
    main()
