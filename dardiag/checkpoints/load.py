"""Read the checkpoint files people actually have, strictly, into dardiag's DiT.

Reads (facts in shared/design/checkpoints.md):
  * bare state dicts (released DiT-XL-2-256x256.pt, SiT-XL-2-256x256.pt, REPA last.pt), .pt or .safetensors
  * training checkpoints ``{"model", "ema", "opt", "args"}`` of DiT/SiT/REPA (EMA preferred)
  * dardiag checkpoints ``{"dardiag": {...config...}, "model", "ema", ...}``, which load with no flags
Always ``weights_only`` (or safetensors): a pickle that needs code to unpickle is refused, unrun.
Opening the file is ``files`` (the first bytes name what a non-checkpoint is); what the contents say
about the architecture and family is ``infer``; here entries are unwrapped, keys and shapes checked
and the weights copied. Writing dardiag's own files is ``save``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dardiag.checkpoints.files import checked_entries, read_with_format, sha256_file
from dardiag.checkpoints.sharded import shard_from_files
from dardiag.checkpoints.infer import (
    args_dict,
    block_numbers,
    MissingFlags,
    detect_family,
    from_meta,
    read_architecture,
    training_step,
)
from dardiag.errors import DardiagError
from dardiag.families import DIT_FAMILIES
from dardiag.models.config import DiTConfig
from dardiag.models.dit import DiT, sincos_pos_embed

PREFIXES = ("module.", "_orig_mod.")
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


def _legacy_repa(sd: dict, path: Path) -> dict:
    """Legacy REPA files call later blocks ``decoder_blocks.{j}`` = ``blocks.{j + encoder_depth}``."""
    if not block_numbers(sd, "decoder_blocks", path):
        return sd
    enc = 1 + max(block_numbers(sd, "blocks", path), default=-1)
    out = {}
    for k, v in sd.items():
        if k.startswith("decoder_blocks."):
            _, j, rest = k.split(".", 2)
            k = f"blocks.{int(j) + enc}.{rest}"
        out[k] = v
    return out


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


def build_and_load(cfg: DiTConfig, sd: dict, path: Path, device="cpu",
                   dtype: torch.dtype = torch.float32, *, shard: bool = False) -> tuple[DiT, list[str]]:
    """Strict copy of ``sd`` into a fresh model built on the meta device (no random init, no second
    copy): each tensor goes to ``device`` in ``dtype`` once, and the model takes it as it is.
    ``shard`` (under torchrun): sharded over the processes, each copying only its rows of ``sd``."""
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
    if shard:
        blocks = [f"blocks.{k}" for k in range(cfg.depth)]
        return shard_from_files(model, blocks, sd, dtype=dtype, device=device, name=path.name), rebuilt
    sd = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval(), rebuilt


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


def load_model(
    path: str | os.PathLike,
    *,
    family: str | None = None,
    num_heads: int | None = None,
    input_size: int | None = None,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    finite: bool = False,
    shard: bool = False,
) -> tuple[DiT, ModelInfo]:
    """Load any DiT/SiT/REPA/dardiag checkpoint as a ``DiT`` called like the official one.

    ``weights`` picks "ema" or "model" in training checkpoints (default: EMA when present). The
    weights arrive on ``device`` in ``dtype`` (floating tensors), read once: no float32 copy first.
    Non-finite weights are a warning (a profile shows where they lead), or with ``finite`` an error
    (what samples, trains or converts from them makes only NaN).
    ``shard`` (under torchrun): the model sharded over the processes, each reading only its rows of the
    file, which is mapped, not read (``dardiag.checkpoints.sharded``).
    Raises ``DardiagError`` with one line for every problem with the file or the flags.
    """
    path = Path(path)
    if family is not None and family not in DIT_FAMILIES:
        raise DardiagError(f"unknown family {family!r}; choose one of {', '.join(DIT_FAMILIES)}")
    _check_flag("--num-heads", num_heads)
    _check_flag("--input-size", input_size)
    obj, how = read_with_format(path, mapped=shard)
    sd, which, fmt, meta, args = unwrap(obj, path, weights)
    if how == "safetensors":
        fmt = "safetensors"
    sd = _legacy_repa(strip_prefixes(sd), path)
    ignored = sorted(k for k in sd if any(p.match(k) for p in IGNORED_PATTERNS))
    sd = {k: v for k, v in sd.items() if k not in set(ignored)}
    args = args_dict(args)
    if meta:
        cfg, fam, sources, step = from_meta(meta, path, family, num_heads, input_size)
    else:
        fields, sources, missing = read_architecture(sd, num_heads=num_heads, args=args, path=path,
                                                     input_size=input_size)
        fam, why = detect_family(family, args, bool(ignored), path)
        if fam is None:
            missing["--family dit or --family sit"] = why
        else:
            sources["family"] = why
        if missing:  # everything the file cannot say, in one message (and what it does say, for inspect)
            raise MissingFlags(path, missing, {**fields, "family": fam}, sources)
        cfg = DiTConfig(**fields)
        step, step_source = training_step(obj, fmt, path)
        if step is not None:
            sources["step"] = step_source
    problems = [] if shard else _nonfinite(sd)  # sharded: each process checks the rows it read
    if not (finite and problems):
        model, rebuilt = build_and_load(cfg, sd, path, device, dtype, shard=shard)
        if shard:
            problems = _nonfinite({n: p.to_local() for n, p in model.named_parameters()})
    if finite and problems:
        more = f" (and {len(problems) - 1} more tensors)" if len(problems) > 1 else ""
        raise DardiagError(f"{path}: {problems[0]}{more}; nothing was done with it: pass a checkpoint whose weights "
                           "are finite (an earlier one?)")
    for msg in problems:
        warnings.warn(f"{path}: {msg}", stacklevel=2)
    info = ModelInfo(
        path=str(path), family=fam, config=cfg, sha256=sha256_file(path), weights=which,
        file_format=fmt, step=step, name=path.stem, ignored_keys=ignored, rebuilt=rebuilt,
        warnings=problems, sources=sources,
    )
    return model, info
