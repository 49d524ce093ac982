"""A LoRA fine-tune step against a full fine-tune step of the same converted DAR model, one run.

Both steps: forward, simple loss, backward, gradient clipping, AdamW step, EMA update, as in
dardiag.train.trainer. Full: every parameter trains. LoRA (rank --rank, peft): base frozen, factors and
routing train, the EMA follows the trainable tensors only. The two alternate (ABAB...) so machine
load hits both alike; the median of --steps timed steps each, after 3 warm-up steps.

    python benchmarks/bench_lora_step.py --preset DiT-S/2 --batch 8 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from dardiag.convert import to_dar
from dardiag.families import get_family
from dardiag.models import DiT
from dardiag.models.config import preset
from dardiag.train import lora
from dardiag.train.trainer import update_ema


def stepper(model, trainable_only: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ema = copy.deepcopy(model).requires_grad_(False)
    fam = get_family("sit")

    def step(x0, noise, t, y):
        loss = fam.loss(model(fam.corrupt(x0, noise, t), t, y), x0, noise, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        update_ema(ema, model, 0.999, trainable_only=trainable_only)
    return step, sum(p.numel() for p in params)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="DiT-S/2")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = preset(a.preset, input_size=a.input_size, num_classes=10, learn_sigma=False)
    base = DiT(cfg)
    with torch.no_grad():  # non-zero branches, as in a pretrained model
        for q in base.parameters():
            if q.requires_grad:
                q.add_(0.02 * torch.randn_like(q))
    full_model = to_dar(copy.deepcopy(base), query="static_t").train()
    lora_model = lora.add_lora(to_dar(copy.deepcopy(base), query="static_t"), a.rank).train()
    steps = {"full": stepper(full_model, False), "lora": stepper(lora_model, True)}
    g = torch.Generator().manual_seed(1)
    shape = (a.batch, cfg.in_channels, cfg.input_size, cfg.input_size)
    x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t, y = torch.rand(a.batch, generator=g), torch.randint(0, 10, (a.batch,), generator=g)
    times = {k: [] for k in steps}
    for i in range(3 + a.steps):
        for k, (step, _) in steps.items():
            t0 = time.perf_counter()
            step(x0, noise, t, y)
            if i >= 3:
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{a.preset} at {cfg.num_tokens} tokens, batch {a.batch}, DAR static_t c1, {a.threads} thread(s), "
          f"median of {a.steps} steps")
    for k in steps:
        print(f"  {k:4s}: {med[k] * 1000:.0f} ms/step, {steps[k][1]:,} trainable parameters")
    print(f"lora / full = {med['lora'] / med['full']:.2f}")


if __name__ == "__main__":
    main()
