"""diffusers classes through the class table: profile overhead and big-model loading memory.

``overhead`` (default): for a double-stream image model (Flux-shaped) and a video model (Wan-shaped),
random weights, the same minibatches and noise levels, the median process CPU time (all threads; on a
shared machine steadier than wall time) of

* ``bare``     forward + the family's simple loss + backward to the latents (parameters frozen): the
               autograd work the profiler itself needs;
* ``profile``  ``dardiag.profile`` with act/grad RMS, cos_prev and outliers (no CKA, no probe);
* ``profile+cka`` the same plus the full unbiased CKA matrix;

and prints profile / bare, the ratio the DiT path holds (benchmarks/README.md, section 4).

``memory``: writes a Flux-shaped model of about ``--params`` parameters in bfloat16 as a diffusers
folder, then, each in a fresh process, loads it with dardiag in bfloat16 and in float32 and reports
the peak resident set size against the file size: a load without a float32 copy peaks near the file.
``--profile-batch B`` adds a whole ``dardiag profile --dtype bfloat16`` (every default analysis, 2
levels x B images, one minibatch per level) in a fresh process: its peak against the file and the
memory its cost line expected (weights + one minibatch's backward + CKA buffers), i.e. what a user
of a model this size needs. ``--skip-float32`` for models whose float32 copy would not fit.

    python benchmarks/bench_diffusers.py                      # overhead, a few minutes on 2 cores
    python benchmarks/bench_diffusers.py memory --params 1.0  # 1.0e9 parameters (2 GB in bfloat16)
    python benchmarks/bench_diffusers.py memory --params 6 --skip-float32 --profile-batch 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MODELS = {
    # a Flux-shaped double-stream model: 2 double + 4 single blocks, width 256, 32x32 latents (256 tokens)
    "flux": ("FluxTransformer2DModel", dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4,
                                            attention_head_dim=64, num_attention_heads=4, joint_attention_dim=128,
                                            pooled_projection_dim=64, guidance_embeds=True,
                                            axes_dims_rope=(16, 24, 24)), {"input_size": 32}),
    # a Wan-shaped video model: 4 blocks, width 256, 5 frames of 16x16 latents (320 tokens)
    "wan": ("WanTransformer3DModel", dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=64,
                                          in_channels=16, out_channels=16, text_dim=128, freq_dim=64, ffn_dim=512,
                                          num_layers=4, rope_max_seq_len=64), {"input_size": 32, "frames": 5}),
}


def _subject(name: str):
    import diffusers

    from dardiag.adapters.diffusers import diffusers_model_subject

    cls, cfg, opts = MODELS[name]
    torch.manual_seed(0)
    model = getattr(diffusers, cls)(**cfg).eval()
    with torch.no_grad():  # zero-initialised gates and heads would make every block the identity
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return diffusers_model_subject(model, text_tokens=32, **opts)


def _bare(s, x0, noise, levels, batch):
    from dardiag.hooks.recorder import frozen_parameters

    fam = s.family
    with frozen_parameters(s.model):
        for level in levels:
            t_native = fam.to_native(torch.tensor(level)).float()
            for start in range(0, x0.shape[0], batch):
                x, e = x0[start:start + batch], noise[start:start + batch]
                t = t_native.expand(x.shape[0])
                x_t = fam.corrupt(x, e, t).requires_grad_(True)
                cond = s.make_cond(x.shape[0], torch.arange(start, start + x.shape[0]))
                out = s.call(s.model, x_t, t, None, cond)
                fam.loss_per_image(out, x, e, t).mean().backward()


def overhead(args) -> None:
    from dardiag.api import profile
    from dardiag.engine.config import Analyses

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.levels} levels x {args.samples} "
          f"samples, minibatch {args.batch}, median process CPU time of {args.repeats}")
    print(f"{'model':6} {'tokens':>6} {'bare s':>8} {'profile s':>9} {'ratio':>6} {'+cka s':>7} {'ratio':>6}")
    levels = [round((i + 0.5) / args.levels, 4) for i in range(args.levels)]
    for name in args.models:
        s = _subject(name)
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(args.samples, *s.input_shape, generator=g)
        noise = torch.randn(args.samples, *s.input_shape, generator=g)
        inputs = {"x0": x0, "noise": noise}
        runs = {
            "bare": lambda: _bare(s, x0, noise, levels, args.batch),
            "profile": lambda: profile(s, inputs=inputs, noise_levels=levels, batch_size=args.batch,
                                       analyses=Analyses(cka=False, probe=False)),
            "profile+cka": lambda: profile(s, inputs=inputs, noise_levels=levels, batch_size=args.batch,
                                           analyses=Analyses(probe=False)),
        }
        times = {k: [] for k in runs}
        for k, run in runs.items():  # warm-up
            run()
        for _ in range(args.repeats):
            for k, run in runs.items():  # interleaved: contention hits every variant alike
                t0 = time.process_time()  # CPU time of all threads: steadier than wall time on a shared machine
                run()
                times[k].append(time.process_time() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name:6} {s.info['image_tokens']:>6} {med['bare']:8.2f} {med['profile']:9.2f} "
              f"{med['profile'] / med['bare']:6.2f} {med['profile+cka']:7.2f} {med['profile+cka'] / med['bare']:6.2f}")


def _write_model(folder: Path, params: float) -> None:
    """A Flux-shaped model with about ``params`` x 1e9 parameters, written in bfloat16 block by block."""
    import diffusers

    from dardiag.checkpoints.diffusers_dir import parameters_on_meta

    width, heads = 3072, 24  # FLUX.1's width: the blocks are the real size, only their number is cut
    single = max(1, round((params * 1e9 - 0.5e9) / 0.142e9))  # ~0.142e9 parameters per single block
    cfg = dict(num_layers=1, num_single_layers=single, attention_head_dim=width // heads,
               num_attention_heads=heads, guidance_embeds=True)
    with parameters_on_meta():
        model = diffusers.FluxTransformer2DModel(**cfg)
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    index, shard, size, n = {}, {}, 0, 0
    for key, p in model.state_dict().items():
        shard[key] = torch.randn(p.shape, dtype=torch.bfloat16) * 0.02
        size += shard[key].numel() * 2
        if size > 1 << 30:
            name = f"diffusion_pytorch_model-{n:05d}.safetensors"
            save_file(shard, str(folder / name))
            index.update({k: name for k in shard})
            shard, size, n = {}, 0, n + 1
    name = f"diffusion_pytorch_model-{n:05d}.safetensors"
    save_file(shard, str(folder / name))
    index.update({k: name for k in shard})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))


def _load_child(folder: str, dtype: str) -> None:
    from dardiag.adapters.open import open_subject
    from dardiag.adapters.options import LoadOptions

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    s = open_subject(folder, LoadOptions(weights_dtype=dtype))
    seconds = time.perf_counter() - t0
    n = sum(p.numel() for p in s.model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"dtype": dtype, "params": n, "setup_gib": before / 2**20, "peak_gib": peak / 2**20,
                      "seconds": seconds}))


def _profile_child(folder: str, batch: str, out: str) -> None:
    """``dardiag profile`` in this process, as a user runs it, then its peak RSS (the plan line is in the log)."""
    from dardiag.cli import app

    t0 = time.perf_counter()
    try:
        app(["profile", folder, "--dtype", "bfloat16", "--levels", "2", "--samples", batch, "--batch-size", batch,
             "--input-size", "32", "--text-tokens", "32", "--out", out, "--no-figures", "--no-progress"])
    finally:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"peak_gib": peak / 2**20, "seconds": time.perf_counter() - t0}))


def memory(args) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp) / "flux-shaped"
        # written by a child too: Linux keeps a parent's peak RSS in its children's ru_maxrss
        subprocess.run([sys.executable, __file__, "_write", str(folder), str(args.params)], check=True)
        file_gib = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**30
        print(f"files: {file_gib:.2f} GiB (bfloat16)")
        print(f"{'load as':9} {'params':>8} {'setup GiB':>9} {'peak GiB':>9} {'peak-setup':>10} {'/ file':>6} {'s':>6}")
        for dtype in ("bfloat16",) + (() if args.skip_float32 else ("float32",)):
            res = subprocess.run([sys.executable, __file__, "_load", str(folder), dtype], capture_output=True,
                                 text=True, check=True)
            d = json.loads(res.stdout.strip().splitlines()[-1])
            grown = d["peak_gib"] - d["setup_gib"]
            print(f"{dtype:9} {d['params'] / 1e9:7.2f}B {d['setup_gib']:9.2f} {d['peak_gib']:9.2f} {grown:10.2f} "
                  f"{grown / file_gib:6.2f} {d['seconds']:6.1f}")
        if args.profile_batch:
            res = subprocess.run([sys.executable, __file__, "_profile", str(folder), str(args.profile_batch),
                                  str(Path(tmp) / "run")], capture_output=True, text=True)
            lines = res.stdout.strip().splitlines()
            print("\n".join(f"  | {line}" for line in lines[:-1] if line.strip()))
            if res.returncode:
                sys.exit(f"profile failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
            d = json.loads(lines[-1])
            print(f"profile (bfloat16, 2 levels x {args.profile_batch} images, every default analysis): peak "
                  f"{d['peak_gib']:.2f} GiB = {d['peak_gib'] / file_gib:.2f} x the file, {d['seconds']:.0f} s")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_load"]:
        return _load_child(argv[1], argv[2])
    if argv[:1] == ["_profile"]:
        return _profile_child(*argv[1:4])
    if argv[:1] == ["_write"]:
        return _write_model(Path(argv[1]), float(argv[2]))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", default="overhead", choices=("overhead", "memory"))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--params", type=float, default=1.0, help="memory: parameters of the model, in billions")
    p.add_argument("--skip-float32", action="store_true", help="memory: do not load a float32 copy")
    p.add_argument("--profile-batch", type=int, default=0, help="memory: also profile in bfloat16 at this batch")
    p.add_argument("--tmp", default=None, help="memory: where to write the model (default: the system's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overhead(args) if args.mode == "overhead" else memory(args)


if __name__ == "__main__":
    main()
