"""Read the checkpoint files people actually have, strictly, and write dardiag's own.

Reads (facts in shared/design/checkpoints.md):
  * bare state dicts (released DiT-XL-2-256x256.pt, SiT-XL-2-256x256.pt, REPA last.pt), .pt or .safetensors
  * training checkpoints ``{"model", "ema", "opt", "args"}`` of DiT/SiT/REPA (EMA preferred)
  * dardiag checkpoints ``{"dardiag": {...config...}, "model", "ema", ...}``, which load with no flags
Always ``weights_only`` (or safetensors): a pickle that needs code to unpickle is refused, unrun.
What the weights cannot tell (attention heads for a non-preset width; DiT vs SiT) is never guessed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dardiag.atomic import atomic_write
from dardiag.errors import DardiagError
from dardiag.models.config import HEADS_BY_WIDTH, SIZES, DiTConfig
from dardiag.models.dit import DiT, sincos_pos_embed

FAMILIES = ("dit", "sit", "repa")
FORMAT_VERSION = 1
PREFIXES = ("module.", "_orig_mod.")
REQUIRED_KEYS = (
    "x_embedder.proj.weight",
    "t_embedder.mlp.0.weight",
    "y_embedder.embedding_table.weight",
    "blocks.0.attn.qkv.weight",
    "final_layer.linear.weight",
)
IGNORED_PATTERNS = (re.compile(r"^projectors\.\d+\."),)  # REPA alignment heads: not part of L


@dataclass
class ModelInfo:
    """What was detected and how; ``to_dict()`` is what ``dardiag inspect --json`` prints."""

    path: str
    family: str
    config: DiTConfig
    sha256: str
    weights: str  # "ema" | "model" | "state_dict"
    file_format: str  # "dardiag" | "training" | "state_dict" | "safetensors"
    step: int | None = None
    name: str = ""
    ignored_keys: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # field -> where it was read from

    @classmethod
    def in_memory(cls, model: DiT, *, family: str, name: str, step: int | None = None) -> "ModelInfo":
        """Info for a model that never touched disk (training-time profiling, notebooks)."""
        return cls(path="<in-memory>", family=family, config=model.config, sha256="", weights="model",
                   file_format="in-memory", step=step, name=name)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        cfg = self.config
        d.update(
            depth=cfg.depth, hidden_size=cfg.hidden_size, num_heads=cfg.num_heads,
            patch_size=cfg.patch_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
            num_classes=cfg.num_classes, learn_sigma=cfg.learn_sigma, latent_size=cfg.input_size,
            routing=cfg.routing_name,
        )
        return d


#################################################################################
#                                 Reading files                                 #
#################################################################################


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_path(path: Path) -> None:
    if not path.exists():
        raise DardiagError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise DardiagError(
            f"{path} is a directory; pass a checkpoint file (.pt, .pth, .safetensors) "
            "or a diffusers model directory holding config.json"
        )
    if path.stat().st_size == 0:
        raise DardiagError(f"{path} is empty (0 bytes); the file was not written completely")


def read_file(path: str | os.PathLike) -> object:
    """Load a checkpoint file without running any code from it."""
    path = Path(path)
    _check_path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise DardiagError(f"{path} is not a readable safetensors file ({_short(e)})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DardiagError(
            f"{path} needs arbitrary code to unpickle ({_short(e)}); refused, nothing in it ran. "
            "Re-save it as a state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise DardiagError(
            f"{path} is truncated or not a PyTorch checkpoint ({_short(e)}); re-download or re-save it"
        ) from None


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    if "Unsupported global" in text:  # torch's message is long; keep the part naming the class
        m = re.search(r"Unsupported global: (GLOBAL \S+)", text)
        return m.group(1) if m else "unsupported global"
    return text[:160]


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def unwrap(obj, path: Path, prefer: str | None = None):
    """-> (state_dict, weights used, file format, dardiag meta or None, training args or None)."""
    if _is_state_dict(obj):
        return obj, "state_dict", "state_dict", None, None
    if not isinstance(obj, dict):
        raise DardiagError(
            f"{path} is not a checkpoint: it holds a {type(obj).__name__}, expected a state dict "
            "or a dict with 'model'/'ema' entries"
        )
    meta = obj.get("dardiag")
    args = obj.get("args")
    available = [k for k in ("ema", "model") if _is_state_dict(obj.get(k))]
    if not available:
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise DardiagError(
            f"{path} is not a checkpoint: expected a state dict or a dict with 'model'/'ema' "
            f"state dicts, found keys [{keys}]"
        )
    if prefer is not None and prefer not in available:
        raise DardiagError(f"{path} has no '{prefer}' weights; it has: {', '.join(available)}")
    which = prefer or available[0]
    return obj[which], which, "dardiag" if meta else "training", meta, args


def strip_prefixes(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _legacy_repa(sd: dict) -> dict:
    """Legacy REPA files call later blocks ``decoder_blocks.{j}`` = ``blocks.{j + encoder_depth}``."""
    if not any(k.startswith("decoder_blocks.") for k in sd):
        return sd
    enc = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    out = {}
    for k, v in sd.items():
        if k.startswith("decoder_blocks."):
            _, j, rest = k.split(".", 2)
            k = f"blocks.{int(j) + enc}.{rest}"
        out[k] = v
    return out


#################################################################################
#                        Reading the architecture off weights                   #
#################################################################################


def _args_dict(args) -> dict:
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return dict(args) if isinstance(args, dict) else {}


def family_from_args(args: dict, has_projectors: bool) -> tuple[str | None, str]:
    if has_projectors or "proj_coeff" in args or "enc_type" in args:
        return "repa", "REPA projector keys / args"
    model = str(args.get("model", ""))
    if model.startswith("SiT"):
        return "sit", f"args.model={model}"
    if model.startswith("DiT"):
        return "dit", f"args.model={model}"
    return None, ""


def infer_config(sd: dict, *, num_heads: int | None, args: dict, path: Path, input_size: int | None):
    """Architecture from a bare state dict (checkpoints.md, 'Reading hyper-parameters')."""
    missing = [k for k in REQUIRED_KEYS if k not in sd]
    if missing:
        raise DardiagError(
            f"{path} is not a DiT/SiT checkpoint: missing {', '.join(missing)} "
            f"(expected keys like {', '.join(REQUIRED_KEYS)})"
        )
    sources = {}
    H, C, p, p2 = sd["x_embedder.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    mlp_ratio = sd["blocks.0.mlp.fc1.weight"].shape[0] / H if "blocks.0.mlp.fc1.weight" in sd else 4.0
    out_rows = sd["final_layer.linear.weight"].shape[0]
    if out_rows == p * p * 2 * C:
        learn_sigma = True
    elif out_rows == p * p * C:
        learn_sigma = False
    else:
        raise DardiagError(
            f"final_layer.linear.weight has {out_rows} rows; a patch-{p} model with {C} channels "
            f"needs {p * p * C} or {2 * p * p * C}"
        )
    num_classes = sd["y_embedder.embedding_table.weight"].shape[0] - 1
    if "pos_embed" in sd:
        grid = math.isqrt(sd["pos_embed"].shape[1])
        latent = grid * p
        sources["input_size"] = "pos_embed"
    elif input_size is not None:
        latent = input_size
        sources["input_size"] = "--input-size"
    elif "image_size" in args:
        latent = int(args["image_size"]) // 8  # the SD VAE downsamples 8x
        sources["input_size"] = "args.image_size / 8"
    else:
        raise DardiagError(
            f"{path} has no pos_embed, so the latent size cannot be read; pass --input-size"
        )
    if input_size is not None and input_size != latent:
        raise DardiagError(f"--input-size {input_size} disagrees with the checkpoint's {latent}")
    heads = num_heads
    if heads is not None:
        sources["num_heads"] = "--num-heads"
    else:
        model_name = str(args.get("model", ""))
        size = model_name.split("-", 1)[1].split("/")[0] if "-" in model_name else None
        if size in SIZES and SIZES[size][1] == H:
            heads, sources["num_heads"] = SIZES[size][2], f"args.model={model_name}"
        elif H in HEADS_BY_WIDTH:
            heads, sources["num_heads"] = HEADS_BY_WIDTH[H], f"preset width {H}"
        else:
            raise DardiagError(
                f"cannot read the number of attention heads from the weights (qkv is fused) for "
                f"hidden size {H}, which is not a preset width; pass --num-heads"
            )
    if H % heads:
        raise DardiagError(f"--num-heads {heads} does not divide the hidden size {H}")
    cfg = DiTConfig(
        input_size=latent, patch_size=p, in_channels=C, hidden_size=H, depth=depth,
        num_heads=heads, mlp_ratio=mlp_ratio, num_classes=num_classes, learn_sigma=learn_sigma,
        qk_norm="blocks.0.attn.q_norm.weight" in sd,
    )
    return cfg, sources


#################################################################################
#                                   Loading                                     #
#################################################################################


def build_and_load(cfg: DiTConfig, sd: dict, path: Path, device="cpu") -> tuple[DiT, list[str]]:
    """Strict copy of ``sd`` into a fresh model built on the meta device (no double allocation)."""
    with torch.device("meta"):
        model = DiT(cfg)
    expected = model.state_dict()
    rebuilt = []
    if "pos_embed" not in sd:
        sd = {**sd, "pos_embed": sincos_pos_embed(cfg.hidden_size, cfg.grid_size)}
        rebuilt.append("pos_embed")
    unexpected = sorted(set(sd) - set(expected))
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise DardiagError(
            f"{path}: {len(missing)} weights missing for a {cfg.routing_name} model, e.g. "
            f"{', '.join(missing[:4])}"
        )
    if unexpected:
        raise DardiagError(
            f"{path}: {len(unexpected)} unexpected weights, e.g. {', '.join(unexpected[:4])}; "
            "is this a DiT/SiT checkpoint?"
        )
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise DardiagError(
                f"{path}: shape mismatch for {k}: checkpoint {list(sd[k].shape)}, "
                f"model expects {list(v.shape)}"
            )
    sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.to(device).eval(), rebuilt


def _nonfinite(sd: dict) -> list[str]:
    bad = []
    for k, v in sd.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            n = int((~torch.isfinite(v)).sum())
            bad.append(f"{k} has {n} non-finite values (NaN/inf)")
    return bad


def load_model(
    path: str | os.PathLike,
    *,
    family: str | None = None,
    num_heads: int | None = None,
    input_size: int | None = None,
    weights: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[DiT, ModelInfo]:
    """Load any DiT/SiT/REPA/dardiag checkpoint as a ``DiT`` called like the official one.

    ``weights`` picks "ema" or "model" in training checkpoints (default: EMA when present).
    Raises ``DardiagError`` with one line for every problem with the file or the flags.
    """
    path = Path(path)
    if family is not None and family not in FAMILIES:
        raise DardiagError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    obj = read_file(path)
    sd, which, fmt, meta, args = unwrap(obj, path, weights)
    if path.suffix == ".safetensors":
        fmt = "safetensors"
    sd = _legacy_repa(strip_prefixes(sd))
    ignored = sorted(k for k in sd if any(p.match(k) for p in IGNORED_PATTERNS))
    sd = {k: v for k, v in sd.items() if k not in set(ignored)}
    args = _args_dict(args)
    step = None
    if meta:  # dardiag's own file: the config is authoritative
        try:
            cfg = DiTConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise DardiagError(f"{path}: damaged dardiag metadata ({e})") from None
        if num_heads is not None and num_heads != cfg.num_heads:
            raise DardiagError(f"--num-heads {num_heads} disagrees with the checkpoint's {cfg.num_heads}")
        stored_family = meta.get("family")
        if family is not None and family != stored_family:
            raise DardiagError(f"--family {family} disagrees with the checkpoint's {stored_family}")
        fam, sources = stored_family, {"config": "dardiag metadata"}
        step = meta.get("step")
    else:
        cfg, sources = infer_config(sd, num_heads=num_heads, args=args, path=path, input_size=input_size)
        read_fam, why = family_from_args(args, bool(ignored))
        if family is not None:
            if read_fam is not None and read_fam != family:
                raise DardiagError(f"--family {family} disagrees with the checkpoint ({why} says {read_fam})")
            fam, sources["family"] = family, "--family"
        elif read_fam is not None:
            fam, sources["family"] = read_fam, why
        else:
            raise DardiagError(
                f"{path}: DiT and SiT checkpoints are identical key for key, so the family cannot be "
                "read from the weights; pass --family dit or --family sit"
            )
        if isinstance(obj, dict) and isinstance(obj.get("steps", obj.get("step")), int):
            step = obj.get("steps", obj.get("step"))
    problems = _nonfinite(sd)
    for msg in problems:
        warnings.warn(f"{path}: {msg}", stacklevel=2)
    model, rebuilt = build_and_load(cfg, sd, path, device)
    info = ModelInfo(
        path=str(path), family=fam, config=cfg, sha256=sha256_file(path), weights=which,
        file_format=fmt, step=step, name=path.stem, ignored_keys=ignored, rebuilt=rebuilt,
        warnings=problems, sources=sources,
    )
    return model, info


#################################################################################
#                           dardiag's own checkpoints                           #
#################################################################################


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then rename over it."""
    atomic_write(path, lambda f: torch.save(obj, f))


def checkpoint_dict(model: DiT, *, family: str, ema: DiT | None = None, step: int | None = None,
                    extra: dict | None = None) -> dict:
    """A dardiag checkpoint: full config embedded, so ``load_model`` needs no flags."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")
    from dardiag import __version__

    meta = {"format": FORMAT_VERSION, "config": model.config.to_dict(), "family": family,
            "step": step, "version": __version__}
    obj = {"dardiag": meta, "model": model.state_dict()}
    if ema is not None:
        obj["ema"] = ema.state_dict()
    obj.update(extra or {})
    return obj


def save_checkpoint(path, model: DiT, *, family: str, ema: DiT | None = None, step: int | None = None,
                    extra: dict | None = None) -> None:
    atomic_save(checkpoint_dict(model, family=family, ema=ema, step=step, extra=extra), path)
