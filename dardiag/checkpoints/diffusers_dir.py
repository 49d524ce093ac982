"""diffusers model folders and pipelines on disk: read strictly, built lazily, loaded shard by shard.

A model folder holds ``config.json`` (its ``_class_name`` says the class) and the weights
(``diffusion_pytorch_model.safetensors``, sharded with a ``.safetensors.index.json``, variants such as
``.fp16.safetensors``, or ``.bin``). A pipeline folder holds ``model_index.json`` naming its components,
each in a subfolder. Facts: shared/design/checkpoints.md, "diffusers transformers".

Loading never pays for a random initialisation or a float32 copy: parameters are created on the meta
device while buffers (sin-cos position tables, non-persistent in diffusers) are computed for real by
the constructors; every key and shape is checked against the files before anything is copied; then
each shard is read, cast to the requested dtype, moved to the requested device and assigned, and
released before the next (peak host memory: about one shard). Which classes dardiag drives, and how,
is ``dardiag.adapters.diffusers``; this module only reads files.
"""

from __future__ import annotations

import inspect
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from dardiag.checkpoints.files import checked_entries, read_file, tensor_headers
from dardiag.checkpoints.load import check_tensors
from dardiag.errors import DardiagError

WEIGHTS = "diffusion_pytorch_model"
LEGACY_CLASS = "Transformer2DModel"  # the one class of older configs, told apart by norm_type
LEGACY_BY_NORM = {"ada_norm_zero": "DiTTransformer2DModel", "ada_norm_single": "PixArtTransformer2DModel"}


def read_json(file: Path, what: str) -> dict:
    """A JSON object from ``file``; one line for a missing, unreadable or non-object file."""
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DardiagError(f"{file} is not readable JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(raw, dict):
        raise DardiagError(f"{file} holds a JSON {type(raw).__name__}, not the object a {what} has")
    return raw


def read_config(path: Path) -> tuple[dict, str | None]:
    """-> (config.json as a dict, its class name; legacy ``Transformer2DModel`` resolved by norm_type)."""
    raw = read_json(path / "config.json", "diffusers config")
    name = raw.get("_class_name")
    if name == LEGACY_CLASS:
        name = LEGACY_BY_NORM.get(raw.get("norm_type"), f"{LEGACY_CLASS} (norm_type {raw.get('norm_type')})")
    check_sizes(raw, path / "config.json")
    return raw, name if isinstance(name, str) else None


def pipeline_components(path: Path) -> dict[str, str]:
    """A pipeline folder's ``model_index.json``: component name -> class name (components with a folder)."""
    index = read_json(path / "model_index.json", "diffusers pipeline")
    out = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, (list, tuple)) or len(entry) != 2:
            continue
        if entry[1] is not None and (path / name).is_dir():
            out[name] = str(entry[1])
    return out


# config.json sizes that must be positive integers when given: a 0 or a string fails deep inside
# diffusers (ZeroDivisionError, TypeError) or builds a model that cannot hold the weights
POSITIVE_SIZES = (
    "num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "sample_size",
    "patch_size", "num_embeds_ada_norm", "cross_attention_dim", "caption_channels", "joint_attention_dim",
    "caption_projection_dim", "pooled_projection_dim", "pos_embed_max_size",
)


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def check_sizes(raw: dict, file: Path) -> None:
    for key in POSITIVE_SIZES:
        value = raw.get(key)
        # video classes give some sizes per axis, e.g. patch_size [1, 2, 2]
        ok = _positive(value) or (isinstance(value, list) and value and all(_positive(v) for v in value))
        if value is not None and not ok:
            raise DardiagError(f"{file}: {key} is {value!r}; expected a positive integer")
    side, patch = raw.get("sample_size"), raw.get("patch_size")
    if _positive(side) and _positive(patch) and side % patch:
        raise DardiagError(f"{file}: sample_size {side} is not a multiple of patch_size {patch}")


def weight_files(path: Path) -> list[Path]:
    """The weight files of a diffusers directory: one safetensors file, its shards, or a .bin."""
    candidates = [f"{WEIGHTS}.safetensors", f"{WEIGHTS}.safetensors.index.json", f"{WEIGHTS}.bin",
                  f"{WEIGHTS}.bin.index.json"]
    variants = sorted(p.name for p in path.glob(f"{WEIGHTS}.*.safetensors*"))  # e.g. .fp16.safetensors
    for name in candidates + variants:
        file = path / name
        if not file.is_file():
            continue
        if not name.endswith(".index.json"):
            return [file]
        try:
            index = json.loads(file.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise DardiagError(f"{file} is not a readable shard index ({e})") from None
        shards = [path / s for s in sorted(set(index.values()))]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise DardiagError(f"{path}: shard index names missing files: {', '.join(missing)}")
        return shards
    raise DardiagError(
        f"{path} has config.json but no weights: expected {WEIGHTS}.safetensors, a sharded "
        f"{WEIGHTS}.safetensors.index.json, or {WEIGHTS}.bin"
    )


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with parameters on the meta device (no memory, no random init) while buffers are
    computed for real: diffusers keeps its position tables in non-persistent buffers, which a
    checkpoint does not hold and ``torch.device("meta")`` would leave empty."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """diffusers' (and transformers', for text encoders) logging and loading bars off: they would bury
    the one-line report."""
    from diffusers.utils import logging

    loggers = [logging]
    try:
        from transformers.utils import logging as tlogging

        loggers.append(tlogging)
    except ImportError:  # transformers is optional: only pipelines with text encoders need it
        pass
    levels = [lg.get_verbosity() for lg in loggers]
    for lg in loggers:
        lg.set_verbosity_error()
        lg.disable_progress_bar()
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.set_verbosity(level)
            lg.enable_progress_bar()


def dtype_argument(dtype: torch.dtype) -> dict:
    """``from_pretrained``'s dtype keyword: ``dtype`` where diffusers has renamed it, ``torch_dtype`` before."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def build_on_meta(path: Path, class_name: str, raw: dict) -> nn.Module:
    """The model a config describes, parameters on the meta device (no memory, no weights read)."""
    import diffusers

    cls = getattr(diffusers, class_name)
    try:
        with quiet_diffusers(), parameters_on_meta():
            return cls.from_config({k: v for k, v in raw.items() if k != "_class_name"})
    except Exception as e:  # diffusers validates little: any value it chokes on is the file's fault
        text = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise DardiagError(f"{path / 'config.json'}: diffusers cannot build {class_name} from it ({text})") from None


def text_encoders(path: Path, device="cpu", dtype: torch.dtype = torch.float32):
    """A pipeline folder's pipeline without its denoiser and VAE: the text encoders, tokenizers and
    scheduler only (offline), for its own ``encode_prompt``."""
    import diffusers  # an optional extra: only what opens diffusers folders needs it

    name = read_json(path / "model_index.json", "diffusers pipeline").get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if not isinstance(cls, type) or not issubclass(cls, diffusers.DiffusionPipeline):
        raise DardiagError(f"{path}/model_index.json names {name!r}, not a pipeline class of diffusers "
                           f"{diffusers.__version__}")
    params = inspect.signature(cls.__init__).parameters
    skip = {c: None for c in ("transformer", "unet", "vae", "prior") if c in params}
    try:
        with quiet_diffusers():
            pipe = cls.from_pretrained(str(path), local_files_only=True, **dtype_argument(dtype), **skip)
    except Exception as e:
        text = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise DardiagError(f"{path}: diffusers could not load the pipeline's text encoders ({text})") from None
    return pipe.to(device)


def load_diffusers_model(path: Path, class_name: str, raw: dict, files: list[Path], *,
                         dtype: torch.dtype = torch.float32, device="cpu") -> nn.Module:
    """Strictly load a diffusers model folder: every key and shape checked before anything is copied,
    then shard by shard onto ``device`` in ``dtype`` (floating tensors; others keep theirs)."""
    model = build_on_meta(path, class_name, raw)
    check_weights(path, class_name, model, files)
    for file in files:  # one shard in host memory at a time
        part = checked_entries(_state_dict(file), file)
        part = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in part.items()}
        model.load_state_dict(part, strict=False, assign=True)
        del part
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a buffer no constructor computed and no file holds: a dardiag bug, not the user's
        raise RuntimeError(f"tensors left on the meta device after loading {path}: {left[:4]}")
    return model.to(device).eval()  # the buffers the constructors computed are still on the CPU


def check_weights(path: Path, class_name: str, model: nn.Module, files: list[Path]) -> None:
    """Every key and shape of the files' headers against the model a config builds (no weight is read)."""
    expected = model.state_dict()
    found: dict[str, torch.Tensor] = {}
    for file in files:
        found.update(checked_entries(tensor_headers(file), file, headers=True))
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing, e.g. {', '.join(missing[:4])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weights, e.g. {', '.join(unexpected[:4])}")
        raise DardiagError(f"{path}: the weights do not match config.json ({class_name}): {'; '.join(parts)}")
    check_tensors(expected, found, path, have="file", want="config expects")


def _state_dict(file: Path) -> dict:
    part = read_file(file)
    if not isinstance(part, dict):
        raise DardiagError(f"{file} holds a {type(part).__name__}, not a state dict of weights")
    return part
