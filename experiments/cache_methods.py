"""Caching methods on one pipeline, calibrated and evaluated end to end (the README's Pareto figure).

A Flux-shaped pipeline with random weights (benchmarks/bench_pipeline_trajectory.py builds it: 6 blocks, width
256, 256 image + 32 text tokens): its trajectory over the prompts (``profile --trajectory``), then
``calibrate`` (MagCache's ratios, FirstBlockCache's threshold for half the steps computed, TeaCache's
polynomial) and ``cache-eval`` with every method of diffusers that runs on it (FirstBlockCache at half, once
and twice the calibrated threshold) and dardiag's own schedule, from the same seeds. Random weights: the
curves show that the machinery measures speed and error, not which method a real model prefers (that needs the
real weights).

    python experiments/cache_methods.py --out runs/cache-methods          # a few minutes on a 2-core CPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dardiag
from dardiag.savings.evaluate import run_cache_eval
from dardiag.savings.calibrate import calibrate, python_line
from dardiag.engine.config import Analyses
from dardiag.pipelines.options import PipelineOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_pipeline_trajectory import build  # noqa: E402

PROMPTS = ("a photo of a cat", "a red house under the sky", "blue dog", "a tree", "a dog under a tree",
           "a blue house", "a photo of the sky", "a red cat")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / "flux-shaped"
    if not folder.exists():
        build(folder)
    sizes = dict(height=256, width=256, call={"max_sequence_length": 32})
    run = args.out / "trajectory"
    df = dardiag.profile(str(folder), out=run, samples=len(PROMPTS), trajectory_steps=args.steps, noise_levels=[0.5],
                         batch_size=4, device="cpu", prompts=PROMPTS, **sizes,
                         analyses=Analyses(cka=False, probe=False, outliers=False, trajectory=True))
    calibrated = {}
    for method in ("magcache", "firstblock", "teacache"):
        got = calibrated[method] = calibrate(df, method, computed=args.steps // 2)
        print(python_line(got))
        for note in got.get("notes", []):
            print("  ", note)
    t = calibrated["firstblock"]["config"]["threshold"]  # half the steps computed; half and twice that around it
    first = ",".join(f"{v:.4g}" for v in (t / 2, t, 2 * t))
    summary, notes = run_cache_eval(folder, args.out / "eval", options=PipelineOptions(prompts=PROMPTS, **sizes),
                                    methods=["firstblock", "magcache", "taylorseer", "pab", "seacache", "dardiag"],
                                    settings=[f"firstblock={first}", "dardiag=0.002,0.005,0.01,0.02"], calibration=run, steps=args.steps,
                                    device="cpu", force=True)
    for note in notes:
        print("note:", note)
    cols = ["method", "setting", "speedup_blocks", "speedup_time", "rel_error", "rel_error_se", "pareto"]
    print(summary[cols].to_string(index=False))
    print(f"figure -> {args.out / 'eval' / 'cache_eval.png'}")


if __name__ == "__main__":
    main()
