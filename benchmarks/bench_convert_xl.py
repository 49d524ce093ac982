"""dardiag to-dar on a DiT-XL/2-sized file: conversion time against load time, and the start gap at XL.

Writes a random DiT-XL/2 (675M parameters, float32, every branch non-zero: adaLN-Zero's zeros would make
the check trivial) as a bare state dict like the released DiT-XL-2-256x256.pt, then in one run:

  load     load_model(file)                                     (best of --repeats)
  convert  convert_file(file, out, check_samples=0): read, convert, write OUT   (best of --repeats)
  gap      to_dar + start_gap for static, static_t, dynamic on --check-samples inputs (256 tokens)

and prints convert / load and each gap. Needs ~3 GiB disk per file in --dir and ~8 GiB RAM.

    python benchmarks/bench_convert_xl.py --dir /tmp/xl --check-samples 1
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch

from dardiag.checkpoints import load_model
from dardiag.convert import convert_file, fixed_batch, start_gap, to_dar
from dardiag.families import get_family
from dardiag.models import DiT
from dardiag.models.config import preset


def write_random_xl(path: Path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = DiT(preset("DiT-XL/2"))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:  # about 0.02-scale weights everywhere, as in a trained DiT
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    torch.save(model.state_dict(), path)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", type=Path, default=Path("/tmp/dardiag-bench-xl"))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--check-samples", type=int, default=1)
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    src = a.dir / "DiT-XL-2-256x256.pt"  # the released name: family dit from the name
    if not src.exists():
        write_random_xl(src)
    print(f"file {src} ({src.stat().st_size / 2**30:.2f} GiB); torch threads {torch.get_num_threads()}")
    load_s = best(lambda: load_model(src), a.repeats)
    out = a.dir / "dar.pt"
    conv_s = best(lambda: convert_file(src, out, check_samples=0, force=True), a.repeats)
    print(f"load {load_s:.2f} s; convert (read, convert, write {out.stat().st_size / 2**30:.2f} GiB) {conv_s:.2f} s; "
          f"convert / load = {conv_s / load_s:.2f}")
    model, info = load_model(src)
    fam = get_family(info.family)
    batch = fixed_batch(model.config, fam, n=a.check_samples)
    for query in ("static", "static_t", "dynamic"):
        t0 = time.perf_counter()
        gap = start_gap(model, to_dar(model, query=query), fam, batch)
        print(f"{query:9s} {gap.line()}  [{time.perf_counter() - t0:.1f} s]")


if __name__ == "__main__":
    main()
