"""Whether a training step (or a sampler's batch) fits in memory, said before the model is built or a
batch drawn.

A typo in ``--batch-size`` or ``--hidden`` would otherwise end in the kernel's OOM killer: no message,
exit 137, and on a shared machine other programs killed with it. The estimate is the profiler's
(``dardiag.engine.cost``: ``ACT_WORDS`` numbers per channel, token, block and image through one
backward) plus the float32 copies of the weights a step keeps (model, EMA, gradients, AdamW's two
moments); it guards against the impossible, it is no promise that a run just under it fits.
"""

from __future__ import annotations

import torch

from dardiag.engine.cost import ACT_WORDS, HEADROOM, GiB, free_memory
from dardiag.errors import DardiagError
from dardiag.models.config import DiTConfig

COPIES = 5  # model, EMA, gradients, AdamW's exp_avg and exp_avg_sq


def block_weights(cfg: DiTConfig) -> int:
    """About the weights of the blocks: attention 4 D^2, MLP 2 r D^2, adaLN-Zero 6 D^2 each."""
    return cfg.depth * int((10 + 2 * cfg.mlp_ratio) * cfg.hidden_size ** 2)


def check_fits(cfg: DiTConfig, batch_size: int, device: torch.device) -> None:
    tokens = (cfg.input_size // cfg.patch_size) ** 2
    weights = COPIES * 4 * block_weights(cfg)
    step = ACT_WORDS * 4 * cfg.hidden_size * tokens * cfg.depth * batch_size
    free = free_memory(device)
    if free is None or weights + step <= HEADROOM * free:
        return
    per_image = step // batch_size
    room = int(HEADROOM * free) - weights
    fix = (f"--batch-size {room // per_image} or less" if room >= per_image else
           "a smaller model (--hidden, --depth, --patch): not even one image fits")
    raise DardiagError(f"a training step needs ~{(weights + step) / GiB:.1f} GiB ({weights / GiB:.1f} for the weights, "
                       f"EMA and optimizer; {step / GiB:.1f} for the backward of --batch-size {batch_size}), more "
                       f"than the {free / GiB:.1f} GiB free on {device}; use {fix}")


def check_sampling_fits(cfg: DiTConfig, n: int, device: torch.device, flag: str = "--samples") -> None:
    """``n`` images sampled in one batch (dardiag's samplers run every image at once): a few copies of the
    latents and one block's forward at a time (no backward), against the memory free now."""
    tokens = (cfg.input_size // cfg.patch_size) ** 2
    per_image = 4 * (8 * cfg.in_channels * cfg.input_size ** 2 + ACT_WORDS * cfg.hidden_size * tokens)
    free = free_memory(device)
    if free is None or n * per_image <= HEADROOM * free:
        return
    raise DardiagError(f"{flag} {n} images in one sampler batch need ~{n * per_image / GiB:.1f} GiB, more than the "
                       f"{free / GiB:.1f} GiB free on {device}; use {flag} {max(int(HEADROOM * free) // per_image, 1)} "
                       "or less")
