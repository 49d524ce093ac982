"""Our DiT vs the diffusers DiT port with the same weights: how far apart are their numbers?

    python benchmarks/compare_diffusers_dit.py --size S --samples 16
    python benchmarks/compare_diffusers_dit.py --checkpoint DiT-XL-2-256x256.pt --family dit

Converts our DiT to ``diffusers.DiTTransformer2DModel`` (dardiag.adapters.convert), runs both on the
same latents, labels and noise at a few noise levels and prints (1) what the port computes differently,
(2) the max absolute output difference, (3) act_rms per block for both and their relative difference,
then the output difference with each difference undone alone, and everything after undoing all of
them — which must bring the difference to ~0, showing that the list is complete. Without
--checkpoint the weights are random (DiT init, then N(0, 0.02) added everywhere so that the adaLN
gates and the head are not zero).
"""

from __future__ import annotations

import argparse

import torch

from dardiag.adapters.convert import dit_to_diffusers, match_original, port_differences
from dardiag.port_check import compare_dit_port
from dardiag.models import DiT, preset


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="S", help="DiT size letter for random weights: S, B, L, XL (default S)")
    p.add_argument("--latent", type=int, default=32, help="latent side for random weights (default 32)")
    p.add_argument("--checkpoint", help="a DiT checkpoint to compare instead of random weights")
    p.add_argument("--family", default="dit", help="family of --checkpoint when the file cannot say")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--noise-levels", default="0.1,0.5,0.9")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--outputs-only", action="store_true", help="skip the act_rms profile (cheap at XL)")
    return p.parse_args(argv)


def random_dit(size: str, latent: int, seed: int) -> DiT:
    torch.manual_seed(seed)
    model = DiT(preset(f"DiT-{size}/2", input_size=latent)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
    return model


def report(title: str, res: dict) -> None:
    print(f"\n== {title}")
    print(f"max |output difference| = {res['max_abs_output_diff']:.3g}   (max |output| {res['max_output']:.3g})")
    if "table" not in res:
        return
    print(f"max act_rms relative difference over blocks and levels = {res['max_act_rms_rel_diff']:.3g}")
    print(res["table"].to_string(float_format=lambda v: f"{v:.6g}"))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.checkpoint:
        from dardiag.checkpoints import load_model

        ours, _ = load_model(args.checkpoint, family=args.family)
    else:
        ours = random_dit(args.size, args.latent, args.seed)
    levels = [float(v) for v in args.noise_levels.split(",")]
    port = dit_to_diffusers(ours)
    print("the diffusers port differs in:")
    for d in port_differences(port):
        print(f"  - {d}")
    kw = dict(samples=args.samples, batch_size=args.batch_size, noise_levels=levels, seed=args.seed,
              act_rms=not args.outputs_only)
    report("same weights, diffusers as released", compare_dit_port(ours, port, **kw))
    only = dict(kw, act_rms=False)
    report("only the LayerNorm eps undone", compare_dit_port(ours, match_original(port, timestep=False), **only))
    port = dit_to_diffusers(ours)
    report("only the timestep sinusoid undone", compare_dit_port(ours, match_original(port, eps=False), **only))
    report("after undoing the listed differences", compare_dit_port(ours, match_original(port), **kw))


if __name__ == "__main__":
    main()
