"""DAR on a pretrained model: convert, fine-tune three ways, compare the symptoms over fine-tuning.

From each start (the bundled residual SiT digits model; the official DiT fixture in tests/data), for
the same steps, data (the digits train split), batch, learning rate and seed:

  residual   full fine-tune of the residual model (the control)
  dar_full   dardiag to-dar (dense, static_t: the exact start), then full fine-tune
  dar_lora   the same converted model, LoRA rank R on the attention/MLP linears + routing in full

Each run profiles its EMA on 64 held-out digits every --profile-every steps (``train --profile-every``),
and the start as step 0 (the trainer does, for every --init run). Then every final EMA draws 20 samples per class
(Euler/DDIM, 25 steps) for the digit score. Writes OUT/<start>/..., OUT/summary.csv, OUT/table.md
and one figure per start (dardiag.plots.fig_training_runs):

    python experiments/dar_finetune.py --out runs/finetune           # both starts, about 10-20 min, 2-core CPU
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

import dardiag
from dardiag.bundled import bundled_checkpoints
from dardiag.checkpoints import load_model
from dardiag.convert import convert_file
from dardiag.plots import fig_training_runs, save, symptoms_by_step
from dardiag.train import digit_score, sample, train
from dardiag.train.init import init_config

ROOT = Path(__file__).resolve().parents[1]
STARTS = {  # name -> (checkpoint, flags a bare file needs)
    "bundled": (lambda: bundled_checkpoints()["residual"], {}),
    "official": (lambda: ROOT / "tests" / "data" / "dit_tiny_official.pt", {"family": "dit", "num_heads": 4}),
}
RUNS = ("residual", "dar_full", "dar_lora")
COLUMNS = ("act_growth", "grad_decay", "mean_adjacent_cka", "loss")


def run_start(name: str, out: Path, a) -> pd.DataFrame:
    src, hints = STARTS[name][0](), STARTS[name][1]
    out.mkdir(parents=True, exist_ok=True)
    dar = out / "dar.pt"
    if not dar.exists():
        r = convert_file(src, dar, query="static_t", chunk_size=1, **hints)
        print(f"[{name}] converted: {r.gap.line()}", flush=True)
    common = dict(steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup=a.warmup, seed=a.seed, save_every=0,
                  log_every=10, profile_every=a.profile_every, profile_samples=64, profile_batch_size=32,
                  profile_noise_levels=(0.1, 0.5, 0.9))
    inits = {"residual": (src, hints, 0), "dar_full": (dar, {}, 0), "dar_lora": (dar, {}, a.rank)}
    tables = []
    for run in RUNS:
        init, given, rank = inits[run]
        config = init_config(init, given=given, out=str(out / run), lora=rank, **common)
        t0 = time.perf_counter()
        last = train(config)
        print(f"[{name}] {run}: {a.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        start, _ = load_model(init, **given)
        df = dardiag.read_profile(out / run / "profile")  # step 0 (the start) and every --profile-every
        tables.append(df.assign(start=name, model=run))
        ema, info = load_model(last)
        y = torch.arange(10).repeat_interleave(a.per_class)
        for step, model in ((0, start), (a.steps, ema)):
            s = digit_score(sample(model, info.family, y, steps=25, seed=a.seed), y)
            tables[-1] = pd.concat([tables[-1], pd.DataFrame([
                {"metric": "sample_accuracy", "value": s["accuracy"], "stderr": math.sqrt(s["accuracy"] * (1 - s["accuracy"]) / s["n"]),
                 "step": step, "model": run, "start": name},
                {"metric": "sample_fd", "value": s["fd"], "stderr": float("nan"), "step": step, "model": run, "start": name},
            ])], ignore_index=True)
    df = pd.concat(tables, ignore_index=True)
    df.to_parquet(out / "runs.parquet")  # --replot draws from it
    figure(df, name, out.parent)
    return df


def figure(df: pd.DataFrame, name: str, where: Path) -> None:
    symptoms = df[~df["metric"].isin(["sample_accuracy", "sample_fd"])]
    fig = fig_training_runs(symptoms, noise_level=0.5)
    save(fig, where / f"training_runs_{name}")


def summarise(df: pd.DataFrame, steps: int) -> pd.DataFrame:
    rows = []
    for (start, run), d in df.groupby(["start", "model"], sort=False):
        sym = symptoms_by_step(d[~d["metric"].isin(["sample_accuracy", "sample_fd"])])
        for level, g in sym.groupby("noise_level"):
            for step in (0, steps):
                r = g[g["step"] == step].iloc[0]
                row = {"start": start, "run": run, "noise_level": level, "step": step}
                for c in COLUMNS:
                    row[c], row[f"{c}_se"] = r.get(c), r.get(f"{c}_se")
                score = d[d["metric"].isin(["sample_accuracy", "sample_fd"]) & (d["step"] == step)]
                for _, s in score.iterrows():
                    row[s["metric"]], row[f"{s['metric']}_se"] = s["value"], s["stderr"]
                rows.append(row)
    return pd.DataFrame(rows)


def fmt(v, se) -> str:
    if v is None or not math.isfinite(v):
        return ""
    if se is None or not math.isfinite(se) or se == 0:
        return f"{v:.3g}"
    digits = max(0, -int(math.floor(math.log10(abs(se)))) + 1)
    return f"{v:.{digits}f} ± {se:.{digits}f}"


def markdown(summary: pd.DataFrame, level: float) -> str:
    head = "| start | run | step | growth | grad decay | adj. CKA | loss | sample acc. | sample FD |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for _, r in summary[summary["noise_level"].sub(level).abs() < 1e-9].iterrows():
        cells = [fmt(r[c], r[f"{c}_se"]) for c in COLUMNS] + [fmt(r.get("sample_accuracy"), r.get("sample_accuracy_se")),
                                                               fmt(r.get("sample_fd"), None)]
        lines.append(f"| {r['start']} | {r['run']} | {int(r['step'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/finetune"))
    p.add_argument("--starts", default="bundled,official")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--profile-every", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--replot", action="store_true", help="only redraw the figures from OUT/<start>/runs.parquet")
    a = p.parse_args(argv)
    if a.replot:
        for s in a.starts.split(","):
            figure(pd.read_parquet(a.out / s / "runs.parquet"), s, a.out)
        return
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    df = pd.concat([run_start(s, a.out / s, a) for s in a.starts.split(",")], ignore_index=True)
    summary = summarise(df, a.steps)
    summary.to_csv(a.out / "summary.csv", index=False)
    text = "\n\n".join(f"noise level {lv}\n\n{markdown(summary, lv)}" for lv in sorted(summary["noise_level"].unique()))
    (a.out / "table.md").write_text(text + "\n")
    print(text)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
