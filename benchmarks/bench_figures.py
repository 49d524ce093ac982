"""What legible figures cost: every figure of ``render_all`` built and laid out with dardiag's
LegibleLayout (constrained layout that thins colliding tick labels) vs plain constrained layout, in
the same run on the same synthetic table (schema rows, no profiling). Prints, per figure, the CPU
seconds of building + laying out under each engine, their ratio, and how many pairs of tick labels
still collide (matplotlib text extents).

    python benchmarks/bench_figures.py --depth 28 --levels 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tables import profile_table  # noqa: E402

import dardiag.plots.figures as F  # noqa: E402
from dardiag.plots.legible import overlapping_tick_labels  # noqa: E402


def builders(df):
    return {
        "symptoms": lambda: F.fig_symptoms(df),
        "heatmap_act_rms": lambda: F.fig_heatmaps(df, "act_rms"),
        "heatmap_h_rms": lambda: F.fig_heatmaps(df, "h_rms"),
        "cka": lambda: F.fig_cka(df),
        "routing": lambda: F.fig_routing(df),
        "probe": lambda: F.fig_probe(df),
        "channel_spectrum": lambda: F.fig_channel_spectrum(df),
    }


def measure(build, plain: bool) -> tuple[float, int]:
    legible = F.new_figure
    if plain:  # the same figure with matplotlib's constrained layout only
        F.new_figure = lambda w, h: Figure(figsize=(w, h), layout="constrained")
    try:
        t = time.process_time()
        fig = build()
        bad = overlapping_tick_labels(fig)  # draws the figure: the layout runs here
        return time.process_time() - t, len(bad)
    finally:
        F.new_figure = legible


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=28)
    p.add_argument("--levels", type=int, default=16)
    p.add_argument("--mixed", action="store_true", help="a model of depth 8 beside one of --depth")
    a = p.parse_args()
    models = {"residual": 8 if a.mixed else a.depth, "DAR static_t c4": a.depth}
    df = profile_table(models, [float(v) for v in np.linspace(0, 1, a.levels)])
    print(f"models {models}, {a.levels} levels, {len(df)} rows")
    print(f"{'figure':<18} {'plain s':>8} {'legible s':>9} {'ratio':>6} {'overlaps plain':>15} {'legible':>8}")
    total = [0.0, 0.0]
    for name, build in builders(df).items():
        (tp, bp), (tl, bl) = measure(build, True), measure(build, False)
        total[0] += tp
        total[1] += tl
        print(f"{name:<18} {tp:8.2f} {tl:9.2f} {tl / tp:6.2f} {bp:15d} {bl:8d}")
    print(f"{'all':<18} {total[0]:8.2f} {total[1]:9.2f} {total[1] / total[0]:6.2f}")


if __name__ == "__main__":
    main()
