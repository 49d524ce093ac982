"""A trained diffusers pipeline that fits on a laptop: a digits DiT (the official DiT code's, or any
residual DDPM DiT of dardiag's) as a diffusers ``DiTPipeline`` folder.

The transformer is the checkpoint's weights in ``DiTTransformer2DModel`` (``dardiag.adapters.convert``:
the port computes slightly different numbers, its timestep frequencies and one LayerNorm eps; see
``port_differences``); the scheduler is DDIM on DiT's training schedule (1000 steps, linear betas
1e-4..0.02, epsilon prediction); the VAE is a random one-channel placeholder of scale 1, because the
digits "latents" are the images themselves (only ``DiTPipeline``'s final decode uses it: read its
latents, not its images). DiTPipeline's unconditional class is 1000: run it without guidance (1.0).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dardiag.adapters.convert import dit_to_diffusers
from dardiag.checkpoints import load_model
from dardiag.errors import DardiagError


def digits_pipeline(checkpoint: str | Path, out: str | Path, *, family: str = "dit", num_heads: int | None = None) -> Path:
    """Write ``out``: a DiTPipeline folder around the DDPM DiT in ``checkpoint`` (a file ``load_model``
    reads; ``num_heads`` for a bare official state dict)."""
    import diffusers

    out = Path(out)
    if out.exists():
        raise DardiagError(f"{out} already exists; choose a new folder")
    model, info = load_model(checkpoint, family=family, num_heads=num_heads)
    if info.family != "dit":
        raise DardiagError(f"{checkpoint} is a {info.family} model; DiTPipeline samples DDPM (dit) models only")
    port = dit_to_diffusers(model)
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=port.config.in_channels, out_channels=port.config.in_channels,
                                  latent_channels=port.config.in_channels, block_out_channels=(8,),
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                                  layers_per_block=1, norm_num_groups=4, scaling_factor=1.0).eval()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                        beta_schedule="linear", clip_sample=False, prediction_type="epsilon")
    diffusers.DiTPipeline(transformer=port, vae=vae, scheduler=scheduler).save_pretrained(out)
    return out
