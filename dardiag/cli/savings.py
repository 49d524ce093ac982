"""Rich renderings of where compute could be saved: ablation vs redundancy, the trajectory's signal vs
its causal cache error, and a cache plan's measured effect."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from dardiag.cli.report import console
from dardiag.cli.tables import best_tables, print_tables
from dardiag.cli.tables import pm as _pm
from dardiag.savings.summary import ablation_summary, trajectory_summary

ABLATION_KEY = ("rho: Spearman rank correlation over (block, noise level) cells of cos_prev with the cost of skipping "
                "the block (dloss: the loss increase; rel. out: the output change); negative: the blocks that turn "
                "the state least are the cheapest to remove; ± approximate s.e. (cells treated as independent); "
                "cheapest / costliest block: by its loss increase averaged over the noise levels (in brackets)")
TRAJECTORY_KEY = ("rho: Spearman rank correlation over (block, sampler step) cells of the step change of z_k (state) "
                  "and of the block's contribution with cache_error (the prediction's relative change when the "
                  "block reuses step i-1); ± approximate s.e.; error: cache_error over all cells")


def print_ablation(df: pd.DataFrame) -> None:
    s = ablation_summary(df)
    if s.empty:
        return
    headers = ["model", "rho(cos,\ndloss)", "rho(cos,\nrel. out)", "cells", "cheapest\nblock", "costliest\nblock"]
    rows = [[str(r["model"]), _pm(r["rho_dloss"], r["rho_dloss_se"]), _pm(r["rho_rel_out"], r["rho_rel_out_se"]),
             str(int(r["cells"])), f"{int(r['cheapest_block'])} ({r['min_dloss']:.3g})",
             f"{int(r['costliest_block'])} ({r['max_dloss']:.3g})"] for _, r in s.iterrows()]
    print_tables(console, best_tables(console, "Looks redundant vs is removable (--ablation)", headers, rows, keys=1,
                                      corner=""), ABLATION_KEY)


def print_trajectory(df: pd.DataFrame) -> None:
    s = trajectory_summary(df)
    if s.empty:
        return
    headers = ["model", "rho(state\nchange, error)", "rho(contribution\nchange, error)", "median\nerror", "error\nrange"]
    rows = [[str(r["model"]), _pm(r["rho_state"], r["rho_state_se"]), _pm(r["rho_delta"], r["rho_delta_se"]),
             f"{r['median_error']:.3g}", f"{r['min_error']:.2g} - {r['max_error']:.2g}"] for _, r in s.iterrows()]
    print_tables(console, best_tables(console, "Caching signal vs causal cache error (--trajectory)", headers, rows,
                                      keys=1, corner=""), TRAJECTORY_KEY)


def print_cache_plan(schedule, result: dict) -> None:
    meta = schedule.meta
    console.print(f"{meta.get('model')}: {len(schedule.cells)} of {schedule.depth} x {schedule.steps} (block, step) cells "
                  f"have cache_error < {meta.get('tolerance'):g}; the schedule saves "
                  f"{schedule.saved_fraction:.1%} of the block evaluations")
    by_step: dict[int, list[int]] = {}
    for k, i in sorted(schedule.cells, key=lambda c: (c[1], c[0])):
        by_step.setdefault(i, []).append(k)
    for i, ks in list(by_step.items())[:12]:
        console.print(f"  step {i:3d}: reuse blocks {', '.join(map(str, ks))}")
    if len(by_step) > 12:
        console.print(f"  ... {len(by_step) - 12} more steps")
    cfg = f"cfg {result['cfg']:g}" if result.get("cfg") is not None else "the pipeline's guidance"
    console.print(f"measured, {result['samples']} samples from the same noise ({result['steps']} steps, {cfg}"
                  f"{', ' + result['pipeline'] + ' itself' if result.get('pipeline') else ''}): relative error of the "
                  f"final {'latents' if result.get('pipeline') else 'samples'} vs uncached "
                  f"{_pm(result['rel_error'], result['rel_error_se'])}"
                  + (" (identical)" if result["identical"] else "")
                  + f"; {result['evaluations_saved']:.1%} of block evaluations reused; sampler time "
                  f"{result['seconds_cached']:.2f} s cached vs {result['seconds_uncached']:.2f} s uncached")
    if "image_rel_error" in result:
        console.print(f"decoded images: relative error {_pm(result['image_rel_error'], result['image_rel_error_se'])}, "
                      f"PSNR {_pm(result['psnr'], result['psnr_se'])} dB")
    if "score_cached" in result:
        a, b = result["score_uncached"], result["score_cached"]
        console.print(f"digit score: accuracy {b['accuracy']:.3f} cached vs {a['accuracy']:.3f} uncached; "
                      f"FD {b['fd']:.2f} vs {a['fd']:.2f} (real digits, same n: {a['fd_real']:.2f}; lower is better)")


def print_cache_eval(summary: pd.DataFrame, notes: list[str]) -> None:
    """cache-eval's summary: one row per (method, setting), speed-ups and errors with standard errors."""
    for note in notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if summary.empty:
        return
    table = Table(title="Caching methods on this pipeline (cache-eval)", box=None,
                  caption="speed-up: uncached over cached (block evaluations counted by hooks; wall time); error: "
                  "the final latents' relative L2 against the uncached call, ± 1 s.e. over samples; * Pareto front")
    for h in ("method", "setting", "blocks", "time", "error", "PSNR"):
        table.add_column(h, justify="left" if h == "method" else "right")
    for _, r in summary.iterrows():
        psnr = "" if r["psnr"] != r["psnr"] else _pm(r["psnr"], r["psnr_se"])
        table.add_row(str(r["method"]) + (" *" if r["pareto"] else ""), f"{r['setting']:g}",
                      f"{r['speedup_blocks']:.2f}x", f"{r['speedup_time']:.2f}x", _pm(r["rel_error"], r["rel_error_se"]), psnr)
    console.print(table)
