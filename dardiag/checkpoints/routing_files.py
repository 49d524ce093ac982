"""The two files ``dardiag to-dar DIR`` puts beside a diffusers transformer's config.json: read and written
strictly here (what they mean is ``dardiag.adapters.routed``).

``dardiag_routing.json``: ``{"routing": {...RoutingSpec...}, "converted" | "fine_tuned": {...}}``;
``dardiag_routing.safetensors``: the router's parameters, float32, keys without the ``dar_routing.`` prefix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dardiag.errors import DardiagError

ROUTING_JSON = "dardiag_routing.json"  # beside config.json: this folder is a routed model
ROUTING_WEIGHTS = "dardiag_routing.safetensors"


def read_routing_doc(folder: Path) -> dict | None:
    """The JSON file's ``routing`` entry, or None for a plain diffusers folder; one line for a damaged file."""
    file = Path(folder) / ROUTING_JSON
    if not file.is_file():
        return None
    try:
        spec = json.loads(file.read_text())["routing"]
        if not isinstance(spec, dict):
            raise TypeError(f"routing is a {type(spec).__name__}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DardiagError(f"{file} is not a readable routing description ({' '.join(str(e).split())[:100]}); "
                           "convert the source folder again with dardiag to-dar") from None
    if not (Path(folder) / ROUTING_WEIGHTS).is_file():
        raise DardiagError(f"{folder} has {ROUTING_JSON} but no {ROUTING_WEIGHTS}; convert the source folder again")
    return spec


def read_routing_weights(folder: Path, want: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The router's parameters, checked against ``want`` (its state dict): every key, shape, finite values."""
    file = Path(folder) / ROUTING_WEIGHTS
    try:
        state = load_file(str(file))
    except Exception as e:  # a truncated or foreign file: safetensors raises its own types
        raise DardiagError(f"{file} is not a readable safetensors file ({' '.join(str(e).split())[:100]})") from None
    if set(state) != set(want):
        missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
        raise DardiagError(f"{file} does not hold this routing's parameters ({len(missing)} missing, e.g. "
                           f"{missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]}); convert the source again")
    for k, v in state.items():
        if tuple(v.shape) != tuple(want[k].shape) or not torch.isfinite(v).all():
            raise DardiagError(f"{file}: {k} has shape {list(v.shape)} (the routing needs {list(want[k].shape)}) "
                               "or non-finite values; convert the source folder again")
    return state


def write_routing_files(folder: Path, doc: dict, state: dict[str, torch.Tensor]) -> None:
    """Both files into ``folder`` (a folder not yet visible: the caller renames it into place)."""
    save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()}, str(folder / ROUTING_WEIGHTS))
    os.chmod(folder / ROUTING_WEIGHTS, 0o644)  # safetensors writes 0600; the weights beside it are readable
    (folder / ROUTING_JSON).write_text(json.dumps(doc, indent=2, default=str) + "\n")
