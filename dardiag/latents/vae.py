"""The VAE: a local diffusers ``AutoencoderKL`` directory, opened offline, and the encoding rule.

Dimension letters: N batch, C channels (3 for pixels, C_lat for latents), H, W height and width
(pixels; ``H / f`` for latents, ``f`` the downsampling factor).

Latents are what the DiT family trains on: the posterior mean (or a draw from it), minus the VAE's
``shift_factor`` where its config has one (SD3, Flux), times its ``scaling_factor``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dardiag.errors import DardiagError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class VAEConfig:
    """What dardiag needs from ``config.json``, read before any weights are loaded."""

    path: Path  # absolute
    class_name: str
    downsampling: int  # f: 2 ** (number of encoder blocks - 1)
    scaling_factor: float
    shift_factor: float  # 0.0 where the config has none (the same arithmetic)


def resolve_dtype(name: str) -> torch.dtype:
    """``--dtype`` as a torch dtype, or one line naming the choices."""
    if name not in DTYPES:
        raise DardiagError(f"unknown --dtype {name!r}; use {', '.join(DTYPES)}")
    return DTYPES[name]


def read_config(vae: str) -> VAEConfig:
    """Check that ``vae`` is a local AutoencoderKL directory and read its config; loads no weights.

    dardiag never downloads: a hub id, a single weights file or a pipeline folder each get one line
    saying what to pass instead.
    """
    path = Path(vae).expanduser()
    if not path.is_dir():
        if path.is_file():
            raise DardiagError(f"--vae {vae} is a file; pass the diffusers AutoencoderKL directory that holds "
                               "config.json and the weights")
        raise DardiagError(
            f"--vae {vae} is not a local directory; dardiag runs offline, so download the VAE once elsewhere "
            f"(`huggingface-cli download {vae} --local-dir DIR`) and pass --vae DIR"
        )
    path = path.absolute()
    if not (path / "config.json").is_file():
        hint = (f"; this looks like a pipeline, pass --vae {path / 'vae'}" if (path / "vae" / "config.json").is_file()
                else "; pass a diffusers AutoencoderKL directory (config.json + weights)")
        raise DardiagError(f"--vae {path} has no config.json{hint}")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise DardiagError(f"--vae {path}: config.json is not readable JSON ({' '.join(str(e).split())[:120]})") \
            from None
    class_name = config.get("_class_name", "AutoencoderKL") if isinstance(config, dict) else "?"
    if class_name != "AutoencoderKL" or not isinstance(config.get("block_out_channels"), list):
        raise DardiagError(f"--vae {path} holds a {class_name}, not an AutoencoderKL (config.json needs "
                           "block_out_channels); pass the VAE's own directory")
    weights = [f.name for f in path.iterdir() if f.name.startswith("diffusion_pytorch_model")
               and f.name.endswith((".safetensors", ".bin", ".index.json"))]
    if not weights:
        raise DardiagError(f"--vae {path} has a config.json but no weights (diffusion_pytorch_model.safetensors); "
                           "download the whole VAE directory")
    shift = config.get("shift_factor")
    return VAEConfig(path=path, class_name=class_name,
                     downsampling=2 ** (len(config["block_out_channels"]) - 1),
                     scaling_factor=float(config.get("scaling_factor", 0.18215)),  # diffusers' default
                     shift_factor=0.0 if shift is None else float(shift))


def open_vae(config: VAEConfig, device: torch.device, dtype: torch.dtype):
    """Load the AutoencoderKL weights from the local directory, in eval mode on ``device``."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise DardiagError("--vae needs diffusers, which is not installed; "
                           "install the extra: pip install 'dardiag[diffusers]'") from None
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its fallbacks print several lines; a failure is ours to say in one
    try:
        # torch_dtype here, not .to(dtype) later: diffusers keeps its float32-only modules in float32
        # low_cpu_mem_usage only with accelerate: without it diffusers prints a paragraph asking for it
        vae = AutoencoderKL.from_pretrained(config.path, torch_dtype=dtype, local_files_only=True,
                                            low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise DardiagError(f"--vae {config.path}: cannot load the AutoencoderKL ({' '.join(str(e).split())[:160]})") \
            from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    return vae.to(device).eval().requires_grad_(False)


def image_generators(seed: int, indices: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded by (seed, output row): a posterior draw then does not
    depend on the batch size or the device."""
    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0] >> 1))
            for i in indices]


@torch.inference_mode()
def encode(vae, config: VAEConfig, x: torch.Tensor, generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """Latents of pixels ``x`` in [-1, 1]: ``(mean - shift) * scale``, or a posterior draw with ``generators``.

    The arithmetic is done in float32 whatever the VAE's dtype; the result is float32 on the CPU.
    """
    param = next(vae.parameters())
    posterior = vae.encode(x.to(param.device, param.dtype)).latent_dist  # over (N, C_lat, H/f, W/f)
    z = posterior.mean if generators is None else posterior.sample(generator=generators)  # (N, C_lat, H/f, W/f)
    return ((z.float() - config.shift_factor) * config.scaling_factor).cpu()  # (N, C_lat, H/f, W/f)
