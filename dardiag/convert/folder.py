"""``dardiag to-dar DIR OUT_DIR``: a diffusers transformer (model folder or pipeline) with DAR routing
grafted on at the exact start (``dardiag.adapters.routed``), its start gap measured, written as a folder.

OUT_DIR is SRC with the routing files beside the transformer's config.json (``routed/folder.py``); the
source's files are hard links where the filesystem allows, else copies. Every check that can fail comes
before any weight is read; OUT_DIR appears in one rename when everything is written and never replaces
anything without ``force`` (the old one is then set aside until the new one is in place).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from dardiag.adapters.classes import TABLE
from dardiag.adapters.diffusers import check_supported, denoiser_folder, diffusers_subject
from dardiag.adapters.routed.folder import routed_folder, write_routing
from dardiag.adapters.routed.graft import graft, routed_call, token_counter
from dardiag.adapters.routed.spec import RoutingSpec
from dardiag.adapters.routed.start import check_batch, first_call, outputs
from dardiag.adapters.routed.sublayers import sublayer_refusal
from dardiag.atomic import write_failed
from dardiag.checkpoints.diffusers_dir import read_config
from dardiag.convert.gap import StartGap
from dardiag.engine.devices import resolve_device
from dardiag.errors import DardiagError
from dardiag.runs.lifecycle import check_writable


@dataclass(frozen=True)
class FolderResult:
    path: Path
    spec: RoutingSpec
    source: str  # the source model folder
    gap: StartGap | None  # None: not measured (check_samples 0)


def _check_paths(src: Path, out: Path, force: bool) -> None:
    if not src.is_dir():
        raise DardiagError(f"{src}: no such folder")
    if out.exists() and out.resolve() == src.resolve():
        raise DardiagError(f"OUT {out} is SRC; choose another folder for the routed model")
    if out.resolve().is_relative_to(src.resolve()) or src.resolve().is_relative_to(out.resolve()):
        raise DardiagError(f"OUT {out} and SRC {src} lie inside each other; choose a folder beside SRC")
    if (out.exists() or out.is_symlink()) and not force:
        raise DardiagError(f"{out} already exists; choose another OUT, or pass --force to replace it")
    check_writable(out, "OUT", directory=True)


def convert_folder(src, out, *, query: str = "static_t", level: str = "block", check_samples: int = 4,
                   seed: int = 0, device: str = "cpu", force: bool = False, options=None) -> FolderResult:
    """Write OUT, SRC's transformer with DAR routing at the exact start (see the module docstring)."""
    src, out = Path(src), Path(out)
    if check_samples < 0:
        raise DardiagError(f"--check-samples must be >= 0 (0 = skip the check), got {check_samples}")
    _check_paths(src, out, force)
    folder, pipeline = denoiser_folder(src)
    if routed_folder(folder) is not None:
        raise DardiagError(f"{src} is routed already ({routed_folder(folder).name}); to-dar converts residual models")
    raw, class_name = read_config(folder)
    check_supported(class_name, folder)
    if class_name not in TABLE:
        raise DardiagError(f"{folder}: {class_name} is not in dardiag's class table (its block stacks would only be "
                           "guessed); to-dar routes the classes of the table")
    RoutingSpec(class_name, level, query, 1, 1, "timestep", 0.0, 1.0)  # a bad level or query, before any weight
    if level == "sublayer" and sublayer_refusal(class_name):
        raise DardiagError(sublayer_refusal(class_name))
    dev = resolve_device(device)
    subject = diffusers_subject(folder, options, device=dev, dtype=torch.float32, seed=seed)
    entry = TABLE[class_name]
    seen = first_call(subject, entry)
    spec = RoutingSpec(class_name, level, query, subject.spec.depth, seen.dim, seen.timestep_arg, seen.t_clean,
                       seen.t_noise)
    batch = check_batch(subject, check_samples, seed) if check_samples else None
    before = outputs(subject, batch) if batch else None
    count = token_counter(subject.model, entry, raw)
    router = graft(subject.model, entry, spec, count_tokens=count)
    gap = None
    if batch:
        subject.call = routed_call(subject.call, count)
        after = outputs(subject, batch)
        fam, x0, noise, t = subject.family, batch["x0"], batch["noise"], batch["t"]
        scale = before.abs().max().item()
        diff = (after - before).abs().max().item()
        gap = StartGap(output=diff / scale if scale > 0 else diff, loss_source=fam.loss(before, x0, noise, t).item(),
                       loss_dar=fam.loss(after, x0, noise, t).item(), n=check_samples, dtype="float32")
    provenance = {"from": str(src), "model_folder": str(folder), "sha256": subject.weights_id,
                  "start_gap": gap.to_dict() if gap else None}
    rel = folder.relative_to(src) if pipeline else Path(".")
    _write(src, out, rel, router, {"converted": provenance}, force)
    return FolderResult(path=out, spec=router.spec, source=str(folder), gap=gap)


def _write(src: Path, out: Path, rel: Path, router, extra: dict, force: bool) -> None:
    tmp = out.parent / f".{out.name}.dardiag-tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.dardiag-old-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        mirror(src, tmp)
        write_routing(tmp / rel, router, extra)
        if out.exists() or out.is_symlink():  # force: set the old one aside until the new one is in place
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as e:
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise write_failed(out, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        elif old.exists() or old.is_symlink():
            old.unlink()


def mirror(src: Path, dst: Path) -> None:
    """Every file under ``src`` at the same place under ``dst``: a hard link of the file itself (a
    symbolic link, as in the Hugging Face cache, is followed), or a copy where links cannot be made."""
    for root, _, files in os.walk(src, followlinks=True):
        here = dst / Path(root).relative_to(src)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            real = os.path.realpath(Path(root) / name)
            try:
                os.link(real, here / name)
            except OSError:
                shutil.copy2(real, here / name)
