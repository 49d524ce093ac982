"""Tiny, exactly resumable training of residual and DAR DiTs, plus sampling and a digit score.

Enough to make the bundled models (``dardiag/assets``) and checkpoint series for ``--profile-every``;
not a replacement for the DiT/SiT training code.
"""

from dardiag.data import check_matches_model, digits_latents, load_latents
from dardiag.train.config import TrainConfig
from dardiag.train.export import export
from dardiag.sampler import sample, save_grid
from dardiag.train.score import digit_score
from dardiag.train.run import train

__all__ = [
    "TrainConfig", "train", "export", "sample", "save_grid", "digit_score",
    "digits_latents", "load_latents", "check_matches_model",
]
