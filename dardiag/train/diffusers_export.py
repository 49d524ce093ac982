"""``train --init DIR --export OUT_DIR``: a diffusers fine-tune's EMA as a diffusers folder again.

OUT_DIR is what ``--init`` was (a model folder, or a whole pipeline with the other components hard-linked)
with the transformer's weights replaced by the EMA's (LoRA merged: W + B A, under the class's own keys)
and, for a routed model, its routing files replaced by the EMA's routing. ``profile``, ``inspect``,
``to-dar``, ``train --init`` and ``from_pretrained`` read it as they read the source.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from dardiag.adapters.diffusers import denoiser_folder, model_files
from dardiag.adapters.routed import router_of
from dardiag.adapters.routed.folder import write_routing
from dardiag.adapters.routed.spec import ROUTER
from dardiag.atomic import write_failed
from dardiag.checkpoints.diffusers_dir import WEIGHTS
from dardiag.convert.folder import mirror
from dardiag.errors import DardiagError
from dardiag.runs.lifecycle import check_writable
from dardiag.train import lora
from dardiag.train.config import TrainConfig
from dardiag.train.diffusers_model import load_diffusers_init, prepare_model
from dardiag.train.outdir import is_written_by_training


def check_export_dir(path: Path, out: Path, *, overwrite: bool) -> None:
    """Before any work: not a file of the run in ``out``, not an existing path without ``overwrite``, writable."""
    if is_written_by_training(out, path) or path.resolve() == out.resolve():
        raise DardiagError(f"--export {path} is part of the training run in {out}; choose a folder beside it, such "
                           f"as {out.parent / (out.name + '-ema')}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise DardiagError(f"--export {path} already exists; choose another folder, or delete it first (--force "
                           "also replaces it, but starts the training run over)")
    check_writable(path, "--export", directory=True)


def plain_state_dict(model: nn.Module, state: dict) -> dict:
    """``state`` under the class's own keys: dardiag's probe wrappers (``wraps_block``) add a ``.block``."""
    wrapped = sorted((name for name, m in model.named_modules() if getattr(m, "wraps_block", False)),
                     key=len, reverse=True)
    out = {}
    for key, value in state.items():
        for name in wrapped:
            if key.startswith(f"{name}.block."):
                key = f"{name}.{key[len(name) + len('.block.'):]}"
                break
        out[key] = value
    return out


def export_diffusers(checkpoint, path, *, overwrite: bool = False) -> Path:
    """Write ``path`` from the run checkpoint ``checkpoint`` (its EMA), as the module docstring says."""
    checkpoint, path = Path(checkpoint), Path(path)
    obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = TrainConfig.from_dict(obj["train"]["config"])
    subject = load_diffusers_init(config, "cpu")
    model, _ = prepare_model(subject, config)
    lora.load_trainable(model, obj["ema"], str(checkpoint), like=model)
    state = lora.merged_state_dict(model) if config.lora else model.state_dict()
    state = plain_state_dict(model, state)
    base = {k: v.detach().float().contiguous() for k, v in state.items() if not k.startswith(f"{ROUTER}.")}
    init = Path(config.init)
    folder, pipeline = denoiser_folder(init)
    rel = folder.relative_to(init) if pipeline else Path(".")
    tmp = path.parent / f".{path.name}.dardiag-tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        mirror(init if pipeline else folder, tmp)
        for f in model_files(folder):  # the source's weights (and routing): replaced below
            (tmp / rel / f.name).unlink()
        for index in (tmp / rel).glob(f"{WEIGHTS}*.index.json"):
            index.unlink()
        save_file(base, str(tmp / rel / f"{WEIGHTS}.safetensors"))
        os.chmod(tmp / rel / f"{WEIGHTS}.safetensors", 0o644)  # safetensors writes 0600
        if hasattr(model, ROUTER):
            provenance = {"fine_tuned": {"from": str(init), "checkpoint": str(checkpoint),
                                         "step": int(obj["dardiag"]["step"]), "lora": config.lora}}
            write_routing(tmp / rel, router_of(model), provenance)
        if path.exists() and overwrite:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except OSError as e:
        raise write_failed(path, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    json.loads((path / rel / "config.json").read_text())  # reads back
    return path
