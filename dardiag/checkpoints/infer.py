"""What a checkpoint is, read off its contents: the architecture from a bare state dict's shapes,
dardiag's own metadata, and the noise family from saved ``args``, a flag or a released file's name.

Facts: shared/design/checkpoints.md, "Reading hyper-parameters from a bare state dict". What the
weights cannot say (attention heads for a non-preset width; DiT vs SiT) is never guessed. Every shape
and metadata value is checked before it is unpacked, divided by or used. No file is opened here.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from pathlib import Path

from dardiag.checkpoints.files import short_error as _short
from dardiag.errors import DardiagError
from dardiag.families import DIT_FAMILIES
from dardiag.models.config import HEADS_BY_WIDTH, SIZES, DiTConfig

REQUIRED_KEYS = (
    "x_embedder.proj.weight",
    "t_embedder.mlp.0.weight",
    "y_embedder.embedding_table.weight",
    "blocks.0.attn.qkv.weight",
    "final_layer.linear.weight",
)


def block_numbers(sd: dict, prefix: str, path: Path) -> set[int]:
    """The i of every ``{prefix}.{i}.`` key; a key whose i is not a number is named."""
    numbers = set()
    for k in sd:
        if k.startswith(prefix + "."):
            parts = k.split(".", 2)
            if len(parts) < 3 or not re.fullmatch(r"[0-9]+", parts[1]):
                raise DardiagError(f"{path}: key {k} has no block number (expected {prefix}.{{i}}.<name>)")
            numbers.add(int(parts[1]))
    return numbers



def args_dict(args) -> dict:
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
    numbers = block_numbers(sd, "blocks", path)
    gaps = sorted(set(range(max(numbers) + 1)) - numbers)
    if gaps:  # also stops a key like blocks.99999999.x from building a model that deep
        raise DardiagError(f"{path}: blocks must be numbered 0..{max(numbers)} without gaps; no blocks.{gaps[0]}.*")
    return max(numbers) + 1


class MissingFlags(DardiagError):
    """What a bare file cannot say, all of it in one message, with what it does say (``known``: DiTConfig
    fields and where each was read), which ``dardiag inspect`` shows before the message."""

    def __init__(self, path: Path, missing: dict[str, str], known: dict, sources: dict):
        self.missing, self.known, self.sources = missing, known, sources
        asks = "; ".join(f"{flag} ({why})" for flag, why in missing.items())
        super().__init__(f"{path}: the file cannot say {len(missing)} thing{'s' if len(missing) > 1 else ''} "
                         f"dardiag needs; pass {asks}")


def _latent_size(sd: dict, args: dict, input_size: int | None, p: int, path: Path) -> tuple[int | None, str]:
    """-> (latent side, where it was read from), or (None, why it cannot be read)."""
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
        return None, "the latent side: the file has no pos_embed and no saved image_size"
    if latent < p or latent % p:
        raise DardiagError(f"latent side {latent} ({source}) is not a positive multiple of the patch size {p}")
    return latent, source


def _heads(num_heads: int | None, args: dict, H: int, path: Path) -> tuple[int | None, str]:
    """-> (attention heads, source), or (None, why the file cannot say). The weights cannot say (qkv is
    fused); saved args can, and win."""
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
    return None, (f"the attention heads: the weights cannot say them (qkv is fused) for hidden size {H}, "
                  "which is not a preset width")


def read_architecture(sd: dict, *, num_heads: int | None, args: dict, path: Path,
                      input_size: int | None) -> tuple[dict, dict, dict]:
    """What a bare state dict says of its architecture (checkpoints.md, 'Reading hyper-parameters'):
    -> (DiTConfig fields, where each was read, {flag: what is missing and why})."""
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
    fields = dict(patch_size=p, in_channels=C, hidden_size=H, depth=_depth(sd, path), mlp_ratio=mlp_ratio,
                  num_classes=sd["y_embedder.embedding_table.weight"].shape[0] - 1,
                  learn_sigma=out_rows == p * p * 2 * C, qk_norm="blocks.0.attn.q_norm.weight" in sd)
    missing = {}
    for field, flag, (value, source) in (("input_size", "--input-size N", _latent_size(sd, args, input_size, p, path)),
                                         ("num_heads", "--num-heads N", _heads(num_heads, args, H, path))):
        if value is None:
            missing[flag] = source
        else:
            fields[field], sources[field] = value, source
    if fields.get("num_heads") and H % fields["num_heads"]:
        raise DardiagError(f"--num-heads {fields['num_heads']} does not divide the hidden size {H}")
    return fields, sources, missing


def infer_config(sd: dict, *, num_heads: int | None, args: dict, path: Path, input_size: int | None):
    """Architecture from a bare state dict: -> (DiTConfig, sources); one error naming every flag missing."""
    fields, sources, missing = read_architecture(sd, num_heads=num_heads, args=args, path=path, input_size=input_size)
    if missing:
        raise MissingFlags(path, missing, fields, sources)
    return DiTConfig(**fields), sources



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
    if meta.get("family") not in DIT_FAMILIES:
        raise _damaged(path, f"family {meta.get('family')!r} is not one of {', '.join(DIT_FAMILIES)}")
    step = meta.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise _damaged(path, f"step {step!r} is not an integer")
    try:
        return DiTConfig.from_dict(config), meta["family"], step
    except (TypeError, ValueError) as e:
        raise _damaged(path, _short(e)) from None


def training_step(obj: dict, fmt: str, path: Path) -> tuple[int | None, str]:
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


def detect_family(family: str | None, args: dict, has_projectors: bool, path: Path) -> tuple[str | None, str]:
    """-> (family, source) for a file without dardiag metadata: saved args (authoritative), else the
    flag, else a released file's name (a flag overrides a name: files get renamed); (None, why) when
    none says."""
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
    return None, "the noise family: DiT and SiT checkpoints are identical key for key"


def from_meta(meta, path: Path, family, num_heads, input_size) -> tuple[DiTConfig, str, dict, int | None]:
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
