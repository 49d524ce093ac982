"""``--lora R``: low-rank adapters on the attention and MLP linears, through peft (the optional extra
``dardiag[lora]``); the base weights stay frozen, the DAR routing parameters train in full.

peft's ``lora.Linear`` computes ``base(x) + B(A(x)) * alpha / r`` with B = 0 at the start, so the
model starts exactly as it was. We set alpha = r (scale 1). What a checkpoint holds: the merged weights
under the usual keys (``W + B A``: every dardiag command reads them as a plain DiT), and the trainable
tensors alone (``trainable_state``) to continue a run on top of the ``--init`` weights.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from dardiag.errors import DardiagError

# the linears of every block's attention and MLP (not the adaLN or embedding ones: the paper's LoRA
# fine-tune adapts the transformer's attention and feed-forward weights)
TARGETS = r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
ADAPTER = "default"


def _peft():
    try:
        import peft
    except ImportError:
        raise DardiagError("--lora needs peft; install the extra: pip install 'dardiag[lora]'") from None
    return peft


def _targeted(targets, name: str) -> bool:
    """peft's rule: a string is a regex over the whole name, a list names modules by their last parts."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def check_rank(model: nn.Module, rank: int, targets=TARGETS) -> None:
    """A rank above a target's smaller side (the width, for DiT's linears) adds nothing a full fine-tune
    lacks, at a larger cost in memory and time than the full fine-tune itself."""
    if rank < 1:
        raise DardiagError(f"--lora must be a rank >= 1, got {rank}")
    sides = [min(m.in_features, m.out_features) for name, m in model.named_modules()
             if _targeted(targets, name) and isinstance(m, nn.Linear)]
    if sides and rank > min(sides):
        raise DardiagError(f"--lora {rank} is above the rank of the layers it adapts (width {min(sides)}): a rank "
                           f"beyond that adds nothing; use a rank up to {min(sides)} (often far less), or "
                           "--lora 0 for a full fine-tune")


def add_lora(model: nn.Module, rank: int, *, targets=TARGETS, train: tuple[str, ...] = ("routing.",)) -> nn.Module:
    """Wrap ``model``'s targets (a regex, or module names) in place; only LoRA factors and the parameters
    under ``train`` (the DAR routing) keep requires_grad."""
    check_rank(model, rank, targets)
    peft = _peft()
    config = peft.LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets, bias="none")
    model.requires_grad_(False)
    model = peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name or name.startswith(train))
    return model


def is_lora(model: nn.Module) -> bool:
    return any(".lora_" in name for name, _ in model.named_parameters())


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain model: each wrapped linear as ``W + B A * scale`` under its own keys."""
    from peft.tuners.lora import LoraLayer

    sd = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
    for name, m in model.named_modules():
        if isinstance(m, LoraLayer):
            sd[f"{name}.weight"] = m.base_layer.weight + m.get_delta_weight(ADAPTER).to(m.base_layer.weight.dtype)
    return sd


def _trainable(model: nn.Module, like: nn.Module | None) -> dict[str, torch.Tensor]:
    """``model``'s parameters that ``like`` (default: ``model``) trains; an EMA copy trains none itself."""
    names = {name for name, p in (like or model).named_parameters() if p.requires_grad}
    return {name: p for name, p in model.named_parameters() if name in names}


def trainable_state(model: nn.Module, like: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """What a LoRA run changes: the factors and the routing, by parameter name."""
    return {name: p.detach().clone() for name, p in _trainable(model, like).items()}


def load_trainable(model: nn.Module, state: dict, where: str, like: nn.Module | None = None) -> None:
    """Put ``trainable_state`` back; every trainable tensor must be there with its shape."""
    params = _trainable(model, like)
    if set(state) != set(params):
        raise DardiagError(f"cannot resume from {where}: its LoRA state does not match this model "
                           f"({len(set(params) - set(state))} tensors missing, {len(set(state) - set(params))} unexpected)")
    with torch.no_grad():
        for name, p in params.items():
            if tuple(state[name].shape) != tuple(p.shape):
                raise DardiagError(f"cannot resume from {where}: {name} has shape {list(state[name].shape)}, "
                                   f"the model {list(p.shape)}")
            p.copy_(state[name])
