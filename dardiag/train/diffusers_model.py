"""``train --init DIR`` for a diffusers transformer (residual, or routed by ``dardiag to-dar``).

``diffusers_init_config`` reads the folder's config (no weight) and fills the run's settings from it:
the class table's family (its loss: flow matching, epsilon, v), the routing and query of a routed
folder. A model flag is refused in one line: a diffusers folder's sizes are its config.json's.
``load_diffusers_init`` loads it for the trainer as a Subject (its call, its conditioning), checks the
files are still the ones the run started from, and prepares it for training: LoRA on the attention and
MLP linears of the profiled blocks (``lora_targets``; the routing trains in full), gradient checkpointing
of every block's own forward (``dardiag.adapters.routed.enable_checkpointing``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dardiag.adapters.classes import TABLE
from dardiag.adapters.image_stream import entry_streams, stream_blocks
from dardiag.adapters.routed import enable_checkpointing
from dardiag.adapters.routed.folder import routed_folder
from dardiag.adapters.routed.spec import ROUTER
from dardiag.errors import DardiagError
from dardiag.subject import Subject
from dardiag.train import lora
from dardiag.train.config import TrainConfig, flag

# flags of dardiag's own DiT: a diffusers folder's config.json says all of this
DIT_ONLY = ("depth", "hidden_size", "num_heads", "patch_size", "chunk_size", "class_dropout", "input_size")
# parts of a block that are not its attention or MLP: conditioning, modulation, normalisation
NOT_ADAPTED = ("norm", "mod", "emb", "time", "scale_shift")


def diffusers_init_config(init, *, given: dict, preset: str | None = None, **settings) -> TrainConfig:
    """A TrainConfig for fine-tuning the diffusers folder ``init`` (``given``: the model flags passed)."""
    from dardiag.adapters.diffusers import (  # diffusers is an optional extra
        check_supported, denoiser_folder, files_sha256, model_files, read_config,
    )

    path = Path(init)
    folder, _ = denoiser_folder(path)
    raw, class_name = read_config(folder)
    check_supported(class_name, folder)
    if class_name not in TABLE:
        raise DardiagError(f"--init {path}: {class_name} is not in dardiag's class table; train --init fine-tunes "
                           "the classes of the table")
    if preset is not None:
        raise DardiagError(f"--preset {preset} does not apply to the diffusers folder {path} (its config.json says "
                           "the sizes); drop the flag")
    for k in DIT_ONLY:
        if k in given:
            raise DardiagError(f"{flag(k)} {given[k]} does not apply to the diffusers folder {path} (its config.json "
                               "says the architecture); drop the flag")
    spec = routed_folder(folder)
    have = {"routing": "dar" if spec else "residual", "family": TABLE[class_name].family}
    if spec:
        have["query"] = spec.query
    for k, v in given.items():
        if k == "routing" and v == "dar" and not spec:
            raise DardiagError(f"--routing dar contradicts the --init folder {path}, a residual model (convert it "
                               "first: dardiag to-dar)")
        if k == "query" and not spec:
            raise DardiagError(f"--query is a DAR setting; the --init folder {path} is a residual model (convert it "
                               "first: dardiag to-dar)")
        if k in have and v != have[k]:
            raise DardiagError(f"{flag(k)} {v} contradicts the --init folder {path}, which has {k} {have[k]}; "
                               "drop the flag")
    if settings.get("data", "digits") == "digits":
        raise DardiagError("--data: a diffusers model trains on a latents file in its own layout (x0 and its "
                           "conditioning, from dardiag latents / prompts / generate); the digits are for dardiag's "
                           "own DiT")
    sha, _ = files_sha256(model_files(folder))
    return TrainConfig(**settings, **have, init=str(path), init_sha256=sha)


def load_diffusers_init(config: TrainConfig, device) -> Subject:
    """The ``--init`` folder as a Subject whose model is ready to train (float32 master weights)."""
    from dardiag.adapters.diffusers import diffusers_subject  # diffusers is an optional extra

    subject = diffusers_subject(config.init, device=device, dtype=torch.float32, seed=config.seed)
    if config.init_sha256 is not None and subject.weights_id != config.init_sha256:
        raise DardiagError(f"--init {config.init} is not the folder this run started from (its files changed); "
                           "put the original back, or use another --out")
    return subject


def lora_targets(model: nn.Module, class_name: str) -> list[str]:
    """The linears of the attention and MLP of every profiled block (module names), conditioning and
    modulation linears (``NOT_ADAPTED``) left out."""
    entry = TABLE[class_name]
    names = []
    for path, _ in stream_blocks(model, entry, entry_streams(model, entry)):
        for name, m in model.get_submodule(path).named_modules():
            parts = name.lower().split(".")
            if isinstance(m, nn.Linear) and not any(w in p for p in parts for w in NOT_ADAPTED):
                names.append(f"{path}.{name}")
    if not names:
        raise DardiagError(f"--lora: found no attention or MLP linear in {class_name}'s blocks")
    return names


def prepare_model(subject: Subject, config: TrainConfig) -> tuple[nn.Module, str]:
    """LoRA (``config.lora``) and gradient checkpointing on the subject's model; -> (model, what was done)."""
    model, class_name = subject.model, subject.info["class_name"]
    blocks = enable_checkpointing(model, TABLE[class_name])
    trained = f"gradient checkpointing of {blocks} blocks"
    if config.lora:
        targets = lora_targets(model, class_name)
        model = lora.add_lora(model, config.lora, targets=targets, train=(f"{ROUTER}.",))
        subject.model = model
        trained = f"LoRA rank {config.lora} on {len(targets)} attention/MLP linears (e.g. {targets[0]})" + (
            ", the routing in full" if hasattr(model, ROUTER) else "") + f"; {trained}"
    else:
        trained = f"every weight; {trained}"
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, f"trains {n:,} parameters: {trained}"
