"""DAR grafted onto diffusers transformers: the cost of routing, and of converting a folder.

``overhead`` (default): for a Flux-shaped joint model and a Wan-shaped video model (the models of
bench_diffusers.py: random weights, every block live), the median process CPU time of a training step's
forward + backward (family loss, parameter gradients) of the source model and of its routed copies
(``dardiag.adapters.routed.graft``, block level, each query kind), on the same minibatch, interleaved;
prints routed / source (target: within 1.2x). A QwenImage-shaped model adds the sublayer level.

``convert``: writes a Flux-shaped model of about ``--params`` x 1e9 parameters (bfloat16 shards, as
bench_diffusers.py's memory case), then, each in a fresh process, times loading it as dardiag does (float32,
hashed) and ``dardiag to-dar`` of it (load, graft, write; hard links for the weights) without and with the
start-gap check; prints conversion / load (target: under 2x).

    python benchmarks/bench_dar_diffusers.py                          # overhead, a few minutes on 2 cores
    python benchmarks/bench_dar_diffusers.py convert --params 0.5
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_diffusers import MODELS, _write_model  # noqa: E402  (the same models as the profile benchmark)

QWEN = ("QwenImageTransformer2DModel", dict(patch_size=2, in_channels=64, out_channels=16, num_layers=4,
                                             attention_head_dim=64, num_attention_heads=4, joint_attention_dim=128,
                                             axes_dims_rope=(16, 24, 24)), {"input_size": 32})


def _subject(cls: str, cfg: dict, opts: dict):
    import diffusers

    from dardiag.adapters.diffusers import diffusers_model_subject

    torch.manual_seed(0)
    model = getattr(diffusers, cls)(**cfg).train()
    with torch.no_grad():  # zero-initialised gates and heads would make every block the identity
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return diffusers_model_subject(model, text_tokens=32, **opts)


def _routed(source, level: str, query: str):
    from dardiag.adapters.classes import TABLE
    from dardiag.adapters.diffusers import diffusers_model_subject
    from dardiag.adapters.routed import RoutingSpec, graft
    from dardiag.adapters.routed.start import first_call

    cls = source.info["class_name"]
    seen = first_call(source, TABLE[cls])
    model = copy.deepcopy(source.model)
    graft(model, TABLE[cls], RoutingSpec(cls, level, query, source.spec.depth, seen.dim, seen.timestep_arg,
                                         seen.t_clean, seen.t_noise), count_tokens=source.call.__self__.tokens)
    opts = {k: v for k, v in (("input_size", source.input_shape[-1]),
                              ("frames", source.input_shape[1] if len(source.input_shape) == 4 else None)) if v}
    return diffusers_model_subject(model.train(), class_name=cls, text_tokens=32, **opts)


def _step(s, batch) -> None:
    """One training step's forward + backward (no optimizer)."""
    s.model.zero_grad(set_to_none=True)
    fam = s.family
    x_t = fam.corrupt(batch["x0"], batch["noise"], batch["t"])
    out = s.call(s.model, x_t, batch["t"], batch["y"], batch["cond"])
    fam.loss(out, batch["x0"], batch["noise"], batch["t"]).backward()


def overhead(args) -> None:
    from dardiag.adapters.routed.start import check_batch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}; forward + backward "
          f"with parameter gradients, median process CPU time of {args.repeats}")
    print(f"{'model':6} {'tokens':>6} {'routing':>22} {'source s':>9} {'routed s':>9} {'ratio':>6}")
    cases = {name: MODELS[name] for name in args.models if name in MODELS}
    if "qwen" in args.models:
        cases["qwen"] = QWEN
    for name, (cls, cfg, opts) in cases.items():
        source = _subject(cls, cfg, opts)
        levels = ["block"] + (["sublayer"] if name == "qwen" else [])
        variants = {f"{level} {q}": _routed(source, level, q) for level in levels for q in args.queries}
        batch = check_batch(source, args.batch, seed=0)
        runs = {"source": source, **variants}
        times = {k: [] for k in runs}
        for s in runs.values():  # warm-up
            _step(s, batch)
        for _ in range(args.repeats):
            for k, s in runs.items():  # interleaved: contention hits every variant alike
                t0 = time.process_time()
                _step(s, batch)
                times[k].append(time.process_time() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in variants:
            print(f"{name:6} {source.info['image_tokens']:>6} {k:>22} {med['source']:9.3f} {med[k]:9.3f} "
                  f"{med[k] / med['source']:6.2f}", flush=True)


def _child(kind: str, folder: str, out: str, check: str) -> None:
    t0 = time.perf_counter()
    if kind == "load":
        from dardiag.adapters.diffusers import diffusers_subject

        diffusers_subject(folder)
    else:
        from dardiag.adapters.options import LoadOptions
        from dardiag.convert.folder import convert_folder

        convert_folder(folder, out, check_samples=int(check), options=LoadOptions(input_size=16, text_tokens=16))
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def convert(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-dar-convert-", dir=args.tmp))
    try:
        src = root / "flux"
        _write_model(src, args.params)
        size = sum(f.stat().st_size for f in src.iterdir()) / 2**30
        print(f"a Flux-shaped model, {size:.2f} GiB of bfloat16 shards; fresh process each, median of {args.repeats}")
        cases = {"load (float32, hashed)": ("load", "0"), "to-dar, no gap check": ("convert", "0"),
                 "to-dar, gap check on 1 input": ("convert", "1")}
        times = {k: [] for k in cases}
        for _ in range(args.repeats):
            for k, (kind, check) in cases.items():
                out = root / "dar"
                shutil.rmtree(out, ignore_errors=True)
                r = subprocess.run([sys.executable, __file__, "child", kind, str(src), str(out), check],
                                   capture_output=True, text=True, check=True)
                times[k].append(json.loads(r.stdout.strip().splitlines()[-1])["seconds"])
        load = statistics.median(times["load (float32, hashed)"])
        for k, v in times.items():
            print(f"{k:32} {statistics.median(v):8.1f} s   {statistics.median(v) / load:5.2f}x the load")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return _child(*argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("case", nargs="?", default="overhead", choices=["overhead", "convert"])
    p.add_argument("--models", nargs="+", default=["flux", "wan", "qwen"])
    p.add_argument("--queries", nargs="+", default=["static", "static_t", "dynamic"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--params", type=float, default=0.5, help="convert: parameters / 1e9")
    p.add_argument("--tmp", default=None, help="convert: where the model is written (default: the system's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    (overhead if args.case == "overhead" else convert)(args)


if __name__ == "__main__":
    main()
