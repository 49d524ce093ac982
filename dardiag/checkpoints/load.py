"""Read the checkpoint files people actually have, strictly, and write dardiag's own.

Reads (facts in shared/design/checkpoints.md):
  * bare state dicts (released DiT-XL-2-256x256.pt, SiT-XL-2-256x256.pt, REPA last.pt), .pt or .safetensors
  * training checkpoints ``{"model", "ema", "opt", "args"}`` of DiT/SiT/REPA (EMA preferred)
  * dardiag checkpoints ``{"dardiag": {...config...}, "model", "ema", ...}``, which load with no flags
Always ``weights_only`` (or safetensors): a pickle that needs code to unpickle is refused, unrun.
What the weights cannot tell (attention heads for a non-preset width; DiT vs SiT) is never guessed.
Every bad input is one ``DardiagError`` line: opening the file is ``dardiag.checkpoints.files`` (the
first bytes name what a non-checkpoint is), and here keys, shapes, dtypes, metadata values and flags
are checked before anything is parsed, divided or copied.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dardiag import __version__
from dardiag.atomic import atomic_write
from dardiag.checkpoints.files import read_with_format, sha256_file
from dardiag.checkpoints.files import short_error as _short
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


def _has_tensors(obj) -> bool:
    return isinstance(obj, dict) and any(torch.is_tensor(v) for v in obj.values())


def unwrap(obj, path: Path, prefer: str | None = None):
    """-> (state_dict, weights used, file format, dardiag meta or None, training args or None)."""
    if not isinstance(obj, dict):
        raise DardiagError(
            f"{path} is not a checkpoint: it holds a {type(obj).__name__}, expected a state dict "
            "or a dict with 'model'/'ema' entries"
        )
    available = [k for k in ("ema", "model") if _has_tensors(obj.get(k))]
    if not available and _has_tensors(obj):
        return checked_entries(obj, path), "state_dict", "state_dict", None, None
    if not available:
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise DardiagError(
            f"{path} is not a checkpoint: expected a state dict or a dict with 'model'/'ema' "
            f"state dicts, found keys [{keys}]"
        )
    if prefer is not None and prefer not in available:
        raise DardiagError(f"{path} has no '{prefer}' weights; it has: {', '.join(available)}")
    which = prefer or available[0]
    meta = obj.get("dardiag")
    return checked_entries(obj[which], path), which, "dardiag" if meta else "training", meta, obj.get("args")


def checked_entries(sd: dict, path: Path) -> dict:
    """Names map to dense tensors: checked before any key is parsed or any value is used."""
    for k, v in sd.items():
        if not isinstance(k, str):
            raise DardiagError(
                f"{path}: state-dict key {k!r} is of type {type(k).__name__}; keys must be parameter names (str)"
            )
        if not torch.is_tensor(v):
            raise DardiagError(f"{path}: {k} holds a {type(v).__name__}, not a tensor; a state dict maps names to tensors")
        if v.layout != torch.strided:
            raise DardiagError(f"{path}: {k} is a {v.layout} tensor; dardiag reads dense tensors only")
        if v.is_meta:  # saved from a model built on the meta device: shapes without values
            raise DardiagError(f"{path}: {k} is a meta tensor (no values were saved); re-save the real weights")
    return sd


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


def _block_numbers(sd: dict, prefix: str, path: Path) -> set[int]:
    """The i of every ``{prefix}.{i}.`` key; a key whose i is not a number is named."""
    numbers = set()
    for k in sd:
        if k.startswith(prefix + "."):
            parts = k.split(".", 2)
            if len(parts) < 3 or not re.fullmatch(r"[0-9]+", parts[1]):
                raise DardiagError(f"{path}: key {k} has no block number (expected {prefix}.{{i}}.<name>)")
            numbers.add(int(parts[1]))
    return numbers


def _legacy_repa(sd: dict, path: Path) -> dict:
    """Legacy REPA files call later blocks ``decoder_blocks.{j}`` = ``blocks.{j + encoder_depth}``."""
    if not _block_numbers(sd, "decoder_blocks", path):
        return sd
    enc = 1 + max(_block_numbers(sd, "blocks", path), default=-1)
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


# The tensors infer_config reads, and the shape each must have (checkpoints.md, module table).
READ_SHAPES = {
    "x_embedder.proj.weight": "[H, C, p, p]",
    "y_embedder.embedding_table.weight": "[num_classes + 1, H]",
    "blocks.0.attn.qkv.weight": "[3H, H]",
    "blocks.0.mlp.fc1.weight": "[mlp_ratio * H, H]",
    "final_layer.linear.weight": "[p * p * out_channels, H]",
    "pos_embed": "[1, T, H]",
}


def _shape_error(path: Path, key: str, sd: dict, expected: str) -> DardiagError:
    return DardiagError(f"{path}: {key} has shape {list(sd[key].shape)}; expected {expected}")


def _check_read_shapes(sd: dict, path: Path) -> None:
    """Every shape infer_config reads, checked before it is unpacked or divided by."""
    for key, expected in READ_SHAPES.items():
        if key in sd and (sd[key].ndim != expected.count(",") + 1 or 0 in sd[key].shape):
            raise _shape_error(path, key, sd, expected)
    H, C, p, p2 = sd["x_embedder.proj.weight"].shape
    if p != p2:
        raise _shape_error(path, "x_embedder.proj.weight", sd, "[H, C, p, p] with a square patch")
    for key, expected in READ_SHAPES.items():
        if key in sd and expected.endswith(", H]") and sd[key].shape[-1] != H:
            raise _shape_error(path, key, sd, f"{expected} with H = {H} (from x_embedder.proj.weight)")
    if sd["blocks.0.attn.qkv.weight"].shape[0] != 3 * H:
        raise _shape_error(path, "blocks.0.attn.qkv.weight", sd, f"[{3 * H}, {H}]")
    if sd["y_embedder.embedding_table.weight"].shape[0] < 2:  # one class at least, plus the CFG null row
        raise _shape_error(path, "y_embedder.embedding_table.weight", sd, "[num_classes + 1, H], num_classes >= 1")
    if "pos_embed" in sd and sd["pos_embed"].shape[0] != 1:
        raise _shape_error(path, "pos_embed", sd, "[1, T, H]")


def _depth(sd: dict, path: Path) -> int:
    numbers = _block_numbers(sd, "blocks", path)
    gaps = sorted(set(range(max(numbers) + 1)) - numbers)
    if gaps:  # also stops a key like blocks.99999999.x from building a model that deep
        raise DardiagError(f"{path}: blocks must be numbered 0..{max(numbers)} without gaps; no blocks.{gaps[0]}.*")
    return max(numbers) + 1


def _latent_size(sd: dict, args: dict, input_size: int | None, p: int, path: Path) -> tuple[int, str]:
    """-> (latent side, where it was read from)."""
    if "pos_embed" in sd:
        T = sd["pos_embed"].shape[1]
        if math.isqrt(T) ** 2 != T:
            raise _shape_error(path, "pos_embed", sd, "[1, T, H] with T a square number of tokens")
        latent, source = math.isqrt(T) * p, "pos_embed"
        if input_size is not None and input_size != latent:
            raise DardiagError(f"--input-size {input_size} disagrees with the checkpoint's {latent}")
        return latent, source
    if input_size is not None:
        latent, source = input_size, "--input-size"
    elif "image_size" in args:
        image = args["image_size"]
        latent = image // 8 if isinstance(image, int) else 0  # the SD VAE downsamples 8x
        source = f"args.image_size={image!r} / 8"
    else:
        raise DardiagError(f"{path} has no pos_embed, so the latent size cannot be read; pass --input-size")
    if latent < p or latent % p:
        raise DardiagError(f"latent side {latent} ({source}) is not a positive multiple of the patch size {p}")
    return latent, source


def _heads(num_heads: int | None, args: dict, H: int, path: Path) -> tuple[int, str]:
    """-> (attention heads, source). The weights cannot say (qkv is fused); saved args can, and win."""
    model_name = str(args.get("model", ""))
    size = model_name.split("-", 1)[1].split("/")[0] if "-" in model_name else None
    saved = SIZES[size][2] if size in SIZES and SIZES[size][1] == H else None
    guess = HEADS_BY_WIDTH.get(H)
    if num_heads is not None:
        if saved is not None and saved != num_heads:
            raise DardiagError(
                f"--num-heads {num_heads} disagrees with the checkpoint (args.model={model_name} says {saved})"
            )
        if saved is None and guess is not None and guess != num_heads:  # a non-standard model: allowed
            return num_heads, f"--num-heads (overrides preset width {H} -> {guess})"
        return num_heads, "--num-heads"
    if saved is not None:
        return saved, f"args.model={model_name}"
    if guess is not None:
        return guess, f"preset width {H}"
    raise DardiagError(
        f"cannot read the number of attention heads from the weights (qkv is fused) for "
        f"hidden size {H}, which is not a preset width; pass --num-heads"
    )


def infer_config(sd: dict, *, num_heads: int | None, args: dict, path: Path, input_size: int | None):
    """Architecture from a bare state dict (checkpoints.md, 'Reading hyper-parameters')."""
    missing = [k for k in REQUIRED_KEYS if k not in sd]
    if missing:
        raise DardiagError(
            f"{path} is not a DiT/SiT checkpoint: missing {', '.join(missing)} "
            f"(expected keys like {', '.join(REQUIRED_KEYS)})"
        )
    _check_read_shapes(sd, path)
    sources = {}
    H, C, p, _ = sd["x_embedder.proj.weight"].shape
    mlp_ratio = sd["blocks.0.mlp.fc1.weight"].shape[0] / H if "blocks.0.mlp.fc1.weight" in sd else 4.0
    out_rows = sd["final_layer.linear.weight"].shape[0]
    if out_rows not in (p * p * C, p * p * 2 * C):
        raise DardiagError(
            f"final_layer.linear.weight has {out_rows} rows; a patch-{p} model with {C} channels "
            f"needs {p * p * C} or {2 * p * p * C}"
        )
    latent, sources["input_size"] = _latent_size(sd, args, input_size, p, path)
    heads, sources["num_heads"] = _heads(num_heads, args, H, path)
    if H % heads:
        raise DardiagError(f"--num-heads {heads} does not divide the hidden size {H}")
    cfg = DiTConfig(
        input_size=latent, patch_size=p, in_channels=C, hidden_size=H, depth=_depth(sd, path),
        num_heads=heads, mlp_ratio=mlp_ratio, num_classes=sd["y_embedder.embedding_table.weight"].shape[0] - 1,
        learn_sigma=out_rows == p * p * 2 * C, qk_norm="blocks.0.attn.q_norm.weight" in sd,
    )
    return cfg, sources


#################################################################################
#                                   Loading                                     #
#################################################################################


def check_tensors(expected: dict, sd: dict, path, *, have: str = "checkpoint", want: str = "model expects") -> None:
    """Shapes, and a floating dtype where the model has one, checked before anything is copied."""
    for k, ref in expected.items():
        if tuple(sd[k].shape) != tuple(ref.shape):
            raise DardiagError(
                f"{path}: shape mismatch for {k}: {have} {list(sd[k].shape)}, {want} {list(ref.shape)}"
            )
        if ref.is_floating_point() and not sd[k].is_floating_point():
            dtype = str(sd[k].dtype).replace("torch.", "")
            raise DardiagError(f"{path}: {k} is {dtype}; the weights must be floating point (float32/16, bfloat16)")


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
    check_tensors(expected, sd, path)
    sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.to(device).eval(), rebuilt


def _nonfinite(sd: dict) -> list[str]:
    bad = []
    for k, v in sd.items():
        if not v.is_floating_point():
            continue
        finite = torch.isfinite(v if v.element_size() > 1 else v.float())  # no isfinite for float8
        if not finite.all():
            bad.append(f"{k} has {int((~finite).sum())} non-finite values (NaN/inf)")
    return bad


def _check_flag(flag: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DardiagError(f"{flag} must be a positive integer, got {value!r}")


def _damaged(path: Path, what: str) -> DardiagError:
    return DardiagError(f"{path}: damaged dardiag metadata ({what}); re-save it with dardiag or load its weights "
                        "as a state dict")


def _config_problem(name: str, kind: str, value) -> str | None:
    """What a metadata config value should have been, or None if it is usable (``DiTConfig`` itself
    checks only routing and divisibility, and divides by zero first)."""
    if kind in ("bool", "str"):
        return None if type(value).__name__ == kind else f"a {kind}"
    in_range = (lambda v: 0 <= v < 1) if name == "class_dropout_prob" else (lambda v: 0 < v < math.inf)
    number = not isinstance(value, bool) and isinstance(value, int if kind == "int" else (int, float))
    if number and in_range(value):
        return None
    return "a float in [0, 1)" if name == "class_dropout_prob" else f"a positive {kind}"


def _config_from_meta(meta, path: Path) -> tuple[DiTConfig, str, int | None]:
    """-> (config, family, step) from dardiag's own metadata, every value checked."""
    config = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(config, dict):
        raise _damaged(path, "no config dict")
    for f in dataclasses.fields(DiTConfig):
        problem = _config_problem(f.name, f.type, config[f.name]) if f.name in config else None
        if problem:
            raise _damaged(path, f"config {f.name} is {config[f.name]!r}; expected {problem}")
    if meta.get("family") not in FAMILIES:
        raise _damaged(path, f"family {meta.get('family')!r} is not one of {', '.join(FAMILIES)}")
    step = meta.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise _damaged(path, f"step {step!r} is not an integer")
    try:
        return DiTConfig.from_dict(config), meta["family"], step
    except (TypeError, ValueError) as e:
        raise _damaged(path, _short(e)) from None


def _training_step(obj: dict, fmt: str, path: Path) -> tuple[int | None, str]:
    """-> (step, source): a "steps" (REPA) or "step" entry, else an all-digit file name (0400000.pt)."""
    for key in ("steps", "step"):
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value, f"'{key}' entry"
    if fmt == "training" and re.fullmatch(r"[0-9]+", path.stem):
        return int(path.stem), "file name"
    return None, ""


# The released files say what they are in their names: DiT-XL-2-256x256.pt, SiT-XL-2-256x256.pt
RELEASE_NAME = re.compile(r"^(DiT|SiT)-(S|B|L|XL)-(2|4|8)-(\d+)x(\d+)\b")


def family_from_name(path: Path) -> tuple[str | None, str]:
    """-> (family, source) from a released file's name, or (None, "")."""
    m = RELEASE_NAME.match(path.name)
    return (m.group(1).lower(), "the file name") if m else (None, "")


def _family(family: str | None, args: dict, has_projectors: bool, path: Path) -> tuple[str, str]:
    """-> (family, source) for a file without dardiag metadata: saved args (authoritative), else the
    flag, else a released file's name (a flag overrides a name: files get renamed)."""
    read_fam, why = family_from_args(args, has_projectors)
    if family is not None:
        if read_fam is not None and read_fam != family:
            raise DardiagError(f"--family {family} disagrees with the checkpoint ({why} says {read_fam})")
        return family, "--family"
    if read_fam is not None:
        return read_fam, why
    named, why = family_from_name(path)
    if named is not None:
        return named, why
    raise DardiagError(
        f"{path}: DiT and SiT checkpoints are identical key for key, so the family cannot be "
        "read from the weights; pass --family dit or --family sit"
    )


def _from_meta(meta, path: Path, family, num_heads, input_size) -> tuple[DiTConfig, str, dict, int | None]:
    """dardiag's own file: the config is authoritative, and every flag given must agree with it."""
    cfg, fam, step = _config_from_meta(meta, path)
    if num_heads is not None and num_heads != cfg.num_heads:
        raise DardiagError(f"--num-heads {num_heads} disagrees with the checkpoint's {cfg.num_heads}")
    if input_size is not None and input_size != cfg.input_size:
        raise DardiagError(f"--input-size {input_size} disagrees with the checkpoint's {cfg.input_size}")
    if family is not None and family != fam:
        raise DardiagError(f"--family {family} disagrees with the checkpoint's {fam}")
    sources = {"config": "dardiag metadata", **({"step": "dardiag metadata"} if step is not None else {})}
    return cfg, fam, sources, step


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
    _check_flag("--num-heads", num_heads)
    _check_flag("--input-size", input_size)
    obj, how = read_with_format(path)
    sd, which, fmt, meta, args = unwrap(obj, path, weights)
    if how == "safetensors":
        fmt = "safetensors"
    sd = _legacy_repa(strip_prefixes(sd), path)
    ignored = sorted(k for k in sd if any(p.match(k) for p in IGNORED_PATTERNS))
    sd = {k: v for k, v in sd.items() if k not in set(ignored)}
    args = _args_dict(args)
    if meta:
        cfg, fam, sources, step = _from_meta(meta, path, family, num_heads, input_size)
    else:
        cfg, sources = infer_config(sd, num_heads=num_heads, args=args, path=path, input_size=input_size)
        fam, sources["family"] = _family(family, args, bool(ignored), path)
        step, step_source = _training_step(obj, fmt, path)
        if step is not None:
            sources["step"] = step_source
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
