"""DAR grafted onto a diffusers MM-DiT, fine-tuned with LoRA beside the residual control: the symptoms
over fine-tuning steps.

The paper's large-model experiment inserts DAR into a pretrained Qwen-Image and trains it with LoRA.
This script runs that protocol on any diffusers folder dardiag routes, for the same data, steps, rank,
learning rate and seed:

  residual         LoRA rank R on the attention/MLP linears of the source model (the control)
  dar_block        dardiag to-dar --level block (exact start, a gain per aggregator), then the same LoRA,
                   the routing trained in full
  dar_sublayer     dardiag to-dar --level sublayer (the paper's gain-free form; classes that allow it)

Each run profiles its EMA every --profile-every steps on the first --profile-samples latents of the data
(``train --profile-every``); step 0 is each start, profiled the same way. Writes OUT/<run>/ (the training
runs), OUT/runs.parquet, OUT/summary.csv, OUT/table.md and OUT/training_runs.{pdf,png}.

Laptop (a tiny QwenImage transformer, pretrained here first on the digits with a text embedding per
class, so that the fine-tunes start from a trained model; 78 min on our loaded 2-core CPU):

    python experiments/dar_diffusers_finetune.py --out runs/diffusers_finetune

A GPU and a real model (latents and prompts from dardiag latents / prompts, or dardiag generate):

    python experiments/dar_diffusers_finetune.py --model Qwen-Image/ --data train.pt --out runs/qwen \\
        --device cuda --rank 64 --steps 2000 --profile-every 250 --batch-size 4 --profile-batch-size 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import dardiag
from dardiag.adapters.diffusers import denoiser_folder, diffusers_subject, read_config
from dardiag.adapters.routed.sublayers import SUBLAYERS
from dardiag.convert.folder import convert_folder
from dardiag.data import digits_latents
from dardiag.engine.sweep import profile
from dardiag.plots import fig_training_runs, save, symptoms_by_step
from dardiag.train import train
from dardiag.train.diffusers_data import load_training_data, probe_set, shape_options
from dardiag.train.diffusers_export import export_diffusers
from dardiag.train.diffusers_model import diffusers_init_config
from dardiag.train.profiling import profile_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dar_finetune import COLUMNS, fmt  # noqa: E402  (the sibling experiment's number format)

LEVELS = (0.1, 0.5, 0.9)
TEXT_DIM, TEXT_TOKENS = 32, 4


#################################################################################
#                  The tiny start: a QwenImage pretrained on the digits          #
#################################################################################


def tiny_data(path: Path, seed: int = 0) -> Path:
    """The digits' train split as 1-channel 16x16 latents, each with its class as a 'prompt': a fixed random
    (4 tokens x 32) embedding per digit, in the format dardiag latents + prompts write."""
    d = digits_latents("train")
    table = torch.randn(10, TEXT_TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(seed))
    torch.save({"x0": d["x0"], "encoder_hidden_states": table[d["y"]],
                "meta": {"source": "digits train split, a fixed random text embedding per class"}}, path)
    return path


def tiny_source(out: Path, data: Path, a) -> Path:
    """A QwenImageTransformer2DModel (6 blocks, width 64), trained from random init on ``data``; its EMA."""
    from diffusers import QwenImageTransformer2DModel

    pretrained = out / "pretrained"
    if pretrained.exists():
        return pretrained
    torch.manual_seed(a.seed)
    QwenImageTransformer2DModel(patch_size=2, in_channels=4, out_channels=1, num_layers=6, attention_head_dim=16,
                                num_attention_heads=4, joint_attention_dim=TEXT_DIM, axes_dims_rope=(4, 6, 6)
                                ).save_pretrained(out / "random")
    config = diffusers_init_config(out / "random", given={}, out=str(out / "pretrain"), data=str(data),
                                   steps=a.pretrain_steps, batch_size=a.batch_size, lr=1e-3, warmup=50, seed=a.seed,
                                   save_every=0, log_every=50, device=a.device)
    t0 = time.perf_counter()
    last = train(config)
    print(f"pretrained {a.pretrain_steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    return export_diffusers(last, pretrained)


#################################################################################
#                                    The runs                                   #
#################################################################################


def starts(source: Path, out: Path, a) -> dict[str, Path]:
    """Run name -> its --init folder: the source, and its routed conversions."""
    folder, _ = denoiser_folder(source)
    _, class_name = read_config(folder)
    levels = ["block"] + (["sublayer"] if class_name in SUBLAYERS else [])
    inits = {"residual": source}
    for level in levels:
        dst = out / f"dar_{level}_init"
        if not dst.exists():
            r = convert_folder(source, dst, query=a.query, level=level, check_samples=a.check_samples,
                               device=a.device, seed=a.seed)
            print(f"dar_{level}: {r.gap.line() if r.gap else 'start gap not measured'}", flush=True)
        inits[f"dar_{level}"] = dst
    return inits


def run_all(source: Path, data: Path, out: Path, a) -> pd.DataFrame:
    common = dict(steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup=a.warmup, seed=a.seed, save_every=0,
                  log_every=10, lora=a.rank, profile_every=a.profile_every, profile_samples=a.profile_samples,
                  profile_batch_size=a.profile_batch_size, profile_noise_levels=LEVELS, device=a.device)
    tables = []
    for run, init in starts(source, out, a).items():
        config = diffusers_init_config(init, given={}, out=str(out / run), data=str(data), **common)
        t0 = time.perf_counter()
        train(config, report=lambda line: print(f"[{run}] {line}", flush=True))
        print(f"[{run}] {a.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        probe = probe_set(load_training_data(str(data)), config)  # step 0, profiled as the hook does
        start = diffusers_subject(init, device=a.device, name=run, seed=a.seed, **shape_options(probe["x0"]))
        df0 = profile(start, inputs=probe, config=profile_config(config, probe["x0"].shape[0])).assign(step=0)
        tables.append(pd.concat([df0, dardiag.read_profile(out / run / "profile")], ignore_index=True).assign(model=run))
    df = pd.concat(tables, ignore_index=True)
    df.to_parquet(out / "runs.parquet")
    return df


#################################################################################
#                                    Results                                    #
#################################################################################


def summarise(df: pd.DataFrame, steps: int) -> pd.DataFrame:
    sym = symptoms_by_step(df)
    keep = sym[sym["step"].isin([0, steps])]
    return keep.sort_values(["noise_level", "model", "step"])


def markdown(summary: pd.DataFrame, level: float) -> str:
    head = "| run | step | growth z_D/z_1 | grad decay | adjacent CKA | loss |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for _, r in summary[summary["noise_level"].sub(level).abs() < 1e-9].iterrows():
        cells = [fmt(r.get(c), r.get(f"{c}_se")) for c in COLUMNS]
        lines.append(f"| {r['model']} | {int(r['step'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(df: pd.DataFrame, out: Path, steps: int) -> None:
    save(fig_training_runs(df, noise_level=0.5), out / "training_runs")
    summary = summarise(df, steps)
    summary.to_csv(out / "summary.csv", index=False)
    text = "\n\n".join(f"noise level {lv}\n\n{markdown(summary, lv)}" for lv in sorted(summary["noise_level"].unique()))
    (out / "table.md").write_text(text + "\n")
    print(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/diffusers_finetune"))
    p.add_argument("--model", type=Path, help="a residual diffusers folder or pipeline (default: the tiny QwenImage)")
    p.add_argument("--data", type=Path, help="its latents and conditioning (with --model)")
    p.add_argument("--query", default="static_t")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--pretrain-steps", type=int, default=1500, help="tiny start only")
    p.add_argument("--profile-every", type=int, default=50)
    p.add_argument("--profile-samples", type=int, default=64)
    p.add_argument("--profile-batch-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--check-samples", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--replot", action="store_true", help="only redraw from OUT/runs.parquet")
    a = p.parse_args(argv)
    if a.replot:
        return report(pd.read_parquet(a.out / "runs.parquet"), a.out, a.steps)
    if (a.model is None) != (a.data is None):
        p.error("--model and --data go together")
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = a.data or tiny_data(a.out / "data.pt", a.seed)
    source = a.model or tiny_source(a.out, data, a)
    report(run_all(source, data, a.out, a), a.out, a.steps)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
