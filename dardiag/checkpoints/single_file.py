"""Single original checkpoint files (the Flux, SD3.5, Wan, ... ``.safetensors`` as released, in their
original key layout), read through diffusers' own single-file loader.

diffusers recognises the layout from the keys (``infer_diffusers_model_type``) and converts them to its
class (``from_single_file``). The one thing a file lacks is the diffusers config (depth, widths, flags
such as guidance embeddings): it comes from ``--config DIR`` (a model folder with config.json, or a
pipeline folder with ``transformer/``), else from the Hugging Face cache of the model's default repo;
an offline machine without either gets a one-line error that says which repo to copy.
"""

from __future__ import annotations

from pathlib import Path

import diffusers
import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS, infer_diffusers_model_type

from dardiag.checkpoints.diffusers_dir import quiet_diffusers
from dardiag.checkpoints.files import tensor_headers
from dardiag.errors import DardiagError

# diffusers model types (single_file_utils) -> transformer class, longest prefix first
MODEL_TYPES = (
    ("sd35", "SD3Transformer2DModel"), ("sd3", "SD3Transformer2DModel"),
    ("flux-2", "Flux2Transformer2DModel"), ("flux-3", "Flux3Transformer2DModel"), ("flux", "FluxTransformer2DModel"),
    ("chroma", "ChromaTransformer2DModel"), ("auraflow", "AuraFlowTransformer2DModel"),
    ("ltx2", "LTX2VideoTransformer3DModel"), ("ltx-video", "LTXVideoTransformer3DModel"),
    ("mochi", "MochiTransformer3DModel"), ("hunyuan-video", "HunyuanVideoTransformer3DModel"),
    ("lumina2", "Lumina2Transformer2DModel"), ("sana", "SanaTransformer2DModel"),
    ("wan-vace", "WanVACETransformer3DModel"), ("wan-animate", "WanAnimateTransformer3DModel"),
    ("wan", "WanTransformer3DModel"), ("hidream", "HiDreamImageTransformer2DModel"),
    ("cosmos", "CosmosTransformer3DModel"), ("z-image-turbo-controlnet", None), ("z-image", "ZImageTransformer2DModel"),
    ("qwen-image-2.1", "QwenImage21Transformer2DModel"), ("krea2", "Krea2Transformer2DModel"),
    ("minimax-h3", "MiniMaxH3Transformer3DModel"),
)
UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"  # Stable Diffusion UNet single files


def model_type(path: Path) -> str | None:
    """diffusers' name for the layout of a ``.safetensors`` file (its keys and a few shapes), or None
    when diffusers does not know it as a transformer (a dardiag/DiT file, say)."""
    headers = tensor_headers(path)  # meta tensors: keys and shapes, no data read
    if UNET_KEY in headers:
        return "unet"
    try:
        kind = infer_diffusers_model_type(headers)
    except Exception:  # it indexes keys it expects: a layout it half-knows is not one it can convert
        return None
    return kind if any(kind.startswith(p) for p, _ in MODEL_TYPES) else None


def is_single_file(path: Path) -> bool:
    """Whether ``path`` is a single original file diffusers can convert (cheap: reads the header only)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        return model_type(path) is not None
    except DardiagError:
        return False


def class_for(kind: str, path: Path) -> str:
    if kind == "unet":
        raise DardiagError(f"{path} is a Stable Diffusion UNet single file, not a transformer; dardiag profiles "
                           "diffusion transformers")
    for prefix, name in MODEL_TYPES:
        if kind.startswith(prefix):
            if name is None:
                raise DardiagError(f"{path} is a ControlNet ({kind}), not a denoiser")
            return name
    raise DardiagError(f"{path}: diffusers does not know this layout as a transformer")


def _config_folder(config: str | Path) -> Path:
    folder = Path(config)
    if (folder / "config.json").is_file():
        return folder
    if (folder / "transformer" / "config.json").is_file():
        return folder / "transformer"
    raise DardiagError(f"--config {folder}: no config.json there (nor in {folder}/transformer); pass the "
                       "diffusers model folder of this checkpoint, e.g. <repo>/transformer")


def single_file_model(path: Path, *, config: str | None = None, dtype: torch.dtype = torch.float32, device="cpu"):
    """-> (model on ``device`` in ``dtype``, its config dict, class name, [path]) for a single original file."""
    kind = model_type(path)
    if kind is None:
        raise DardiagError(f"{path}: not a checkpoint layout dardiag or diffusers knows")
    name = class_for(kind, path)
    cls = getattr(diffusers, name)
    repo = DIFFUSERS_DEFAULT_PIPELINE_PATHS.get(kind, {}).get("pretrained_model_name_or_path")
    kwargs = {"torch_dtype": dtype, "local_files_only": True}
    if config is not None:
        kwargs["config"] = str(_config_folder(config))
    else:
        kwargs.update(config=repo, subfolder="transformer")
    try:
        with quiet_diffusers():
            model = cls.from_single_file(str(path), **kwargs)
    except DardiagError:
        raise
    except Exception as e:
        text = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        if config is None:
            raise DardiagError(
                f"{path} is a {kind} single file ({name}); its diffusers config is not on this machine: pass "
                f"--config DIR (a copy of {repo}/transformer with its config.json)"
            ) from None
        raise DardiagError(f"{path}: diffusers could not load it as {name} with --config {config} ({text})") from None
    raw = {"_class_name": name, **dict(model.config)}
    return model.to(device).eval(), raw, name, [path]
