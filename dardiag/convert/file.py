"""``dardiag to-dar SRC OUT``: read a residual checkpoint, convert it, measure the start, write OUT.

Every check that can fail (OUT, SRC, the chunk size) comes before OUT is written; OUT appears
atomically and never replaces a file without ``force``. OUT is a dardiag checkpoint: ``profile``,
``sample``, ``inspect`` and ``train --init`` read it with no flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dardiag.atomic import atomic_write
from dardiag.checkpoints import ModelInfo, checkpoint_dict, load_model
from dardiag.checkpoints.save import check_torch_name
from dardiag.convert.gap import StartGap, fixed_batch, start_gap
from dardiag.convert.to_dar import dar_config, to_dar
from dardiag.engine.devices import resolve_device
from dardiag.errors import DardiagError
from dardiag.families import get_family
from dardiag.models.config import DiTConfig
from dardiag.runs.lifecycle import check_writable


MAX_CHECK_SAMPLES = 1024  # the gap is a maximum over one batch: a few inputs show it, a huge batch only costs memory


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    source: ModelInfo
    config: DiTConfig
    gap: StartGap | None  # None: not measured (check_samples=0)


def _check_paths(src: Path, out: Path, force: bool) -> None:
    check_torch_name(out, "OUT")
    if src.is_dir():
        what = ("a diffusers model folder" if (src / "config.json").is_file() else
                "a diffusers pipeline folder" if (src / "model_index.json").is_file() else "a directory")
        raise DardiagError(f"{src} is {what}; convert_file converts DiT/SiT/REPA checkpoint files (.pt, "
                           ".safetensors); a diffusers folder: dardiag.convert.folder.convert_folder (dardiag to-dar DIR)")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise DardiagError(f"OUT {out} is SRC; choose another file for the DAR checkpoint")
    if (out.exists() or out.is_symlink()) and not force:
        raise DardiagError(f"{out} already exists; choose another OUT, or pass --force to replace it")
    check_writable(out, "OUT", directory=False)


def convert_file(src: str | os.PathLike, out: str | os.PathLike, *, query: str = "static_t", chunk_size: int = 1,
                 num_heads: int | None = None, family: str | None = None, input_size: int | None = None,
                 weights: str | None = None, device: str = "cpu", check_samples: int = 4, seed: int = 0,
                 force: bool = False) -> ConvertResult:
    """Write OUT, a DAR model that starts as SRC's residual one (exactly for ``chunk_size=1``)."""
    src, out = Path(src), Path(out)
    if not 0 <= check_samples <= MAX_CHECK_SAMPLES:
        raise DardiagError(f"--check-samples must be in 0..{MAX_CHECK_SAMPLES} (0 = skip the check), "
                           f"got {check_samples}")
    _check_paths(src, out, force)
    dev = resolve_device(device)
    model, info = load_model(src, family=family, num_heads=num_heads, input_size=input_size, weights=weights,
                             device=dev, finite=True)
    if info.config.routing != "residual":
        raise DardiagError(f"{src} is already a DAR model ({info.config.routing_name}); to-dar converts residual "
                           "checkpoints")
    dar_config(info.config, query=query, chunk_size=chunk_size)  # a bad chunk size, before any work
    dar = to_dar(model, query=query, chunk_size=chunk_size)
    gap = None
    if check_samples:  # on a CPU the check (two forwards per input) costs more than the conversion of a large model
        fam = get_family(info.family)
        gap = start_gap(model, dar, fam, fixed_batch(info.config, fam, n=check_samples, seed=seed))
    del model
    if dev.type != "cpu":
        dar = dar.cpu()
    provenance = {"from": str(src), "sha256": info.sha256, "weights": info.weights, "file_format": info.file_format,
                  "family_source": info.sources.get("family", ""), "ignored_keys": list(info.ignored_keys),
                  "start_gap": gap.to_dict() if gap else None}
    obj = checkpoint_dict(dar, family=info.family, step=info.step, extra={"converted": provenance})
    atomic_write(out, lambda f: torch.save(obj, f), overwrite=force)
    return ConvertResult(path=out, source=info, config=dar.config, gap=gap)
