"""From what a user passes to a Subject: checkpoint files, diffusers model folders and pipelines, models
in memory. This is where paths are opened (through ``dardiag.checkpoints``); the engine only ever sees
the Subjects made here.

* a file: a DiT/SiT/REPA or dardiag checkpoint (``dardiag.checkpoints.load_model``);
* a folder with ``config.json``: a diffusers transformer (``dardiag.adapters.diffusers``, imported
  only then: diffusers is an optional extra);
* a folder with ``model_index.json``: a diffusers pipeline, profiled through its denoiser;
* a single original ``.safetensors`` (Flux, SD3.5, Wan, ... as released): through diffusers' single-file
  loader, its config from ``--config`` or the Hugging Face cache;
* a ``Subject``, a ``(model, ModelInfo)`` pair, or a dardiag ``DiT`` with ``family``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dardiag.adapters.dit import dit_subject
from dardiag.adapters.options import LoadOptions
from dardiag.checkpoints import ModelInfo, load_model
from dardiag.checkpoints.sharded import is_sharded, wrap
from dardiag.errors import DardiagError
from dardiag.models import DiT
from dardiag.subject import Subject

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _diffusers_subject():
    try:
        from dardiag.adapters.diffusers import diffusers_subject
    except ImportError:
        raise DardiagError("this is a diffusers model; install the extra: pip install 'dardiag[diffusers]'") from None
    return diffusers_subject


def _original_single_file(path: Path) -> bool:
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        from dardiag.adapters.diffusers import is_single_file
    except ImportError:  # diffusers is an optional extra: without it, a file is a DiT file or nothing
        return False
    return is_single_file(path)


def open_subject(obj, options: LoadOptions | None = None, *, device="cpu", name: str | None = None,
                 seed: int = 0) -> Subject:
    """A Subject for a path or an in-memory model (see the module docstring).

    ``options`` say what the files cannot (family, heads, latent side, ...); ``seed`` seeds the
    synthetic conditioning a text-to-image model gets when none is supplied.
    """
    options = options or LoadOptions()
    if not isinstance(obj, (str, Path)):
        subject = _in_memory(obj, options, name)
        if options.shard and not is_sharded(subject.model):  # every process holds the same model: each keeps its rows
            wrap(subject.model.to(device), subject.blocks, device, subject.name)
        return subject
    path = Path(obj)
    dtype = DTYPES[options.weights_dtype or "float32"]
    if path.is_dir() and ((path / "config.json").is_file() or (path / "model_index.json").is_file()):
        return _diffusers_subject()(path, options, device=device, name=name, dtype=dtype, seed=seed)
    if _original_single_file(path):  # e.g. flux1-dev.safetensors as released
        return _diffusers_subject()(path, options, device=device, name=name, dtype=dtype, seed=seed)
    model, info = load_model(path, family=options.family, num_heads=options.num_heads,
                             input_size=options.input_size, device=device, dtype=dtype, shard=options.shard)
    subject = dit_subject(model, info, name=name)
    subject.weights_id = info.sha256
    return subject


def _in_memory(obj, options: LoadOptions, name: str | None) -> Subject:
    if isinstance(obj, Subject):
        return obj
    if isinstance(obj, DiT):
        if options.family is None:
            raise DardiagError("a DiT in memory cannot say its noise process; pass family='dit', 'sit' or 'repa'")
        return dit_subject(obj, ModelInfo.in_memory(obj, family=options.family, name=name or "model"))
    if isinstance(obj, tuple) and len(obj) == 2:
        return dit_subject(obj[0], obj[1], name=name)
    raise DardiagError(f"cannot profile a {type(obj).__name__}; pass a path, a dardiag DiT, (model, info) "
                       "or a Subject")
