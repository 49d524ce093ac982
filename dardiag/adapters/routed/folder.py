"""Routed diffusers folders: ``dardiag to-dar DIR OUT_DIR`` writes one (``dardiag.convert.folder``),
every dardiag reader loads one (here).

OUT_DIR is SRC (a model folder or a whole pipeline) with two files beside the transformer's
``config.json``: ``dardiag_routing.json`` (the ``RoutingSpec``, where it came from, its measured start
gap) and ``dardiag_routing.safetensors`` (the router's parameters). The source's files are hard links
where the filesystem allows (no copy, no extra disk), else copies; the weights are not rewritten, since
a routed model keeps every tensor of its source. ``diffusers_subject`` (profile, inspect, train --init)
sees the JSON file and grafts the routing back after loading the class as usual (``attach_routing``);
a plain ``from_pretrained`` of OUT_DIR gives the source model, without routing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dardiag.adapters.classes import TABLE
from dardiag.adapters.routed.graft import graft
from dardiag.adapters.routed.spec import ROUTING_JSON, ROUTING_WEIGHTS, RoutingSpec
from dardiag.errors import DardiagError


def routed_folder(folder: Path) -> RoutingSpec | None:
    """The routing of a model folder written by ``to-dar``, or None for a plain diffusers folder."""
    file = Path(folder) / ROUTING_JSON
    if not file.is_file():
        return None
    try:
        doc = json.loads(file.read_text())
        spec = doc["routing"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DardiagError(f"{file} is not a readable routing description ({' '.join(str(e).split())[:100]}); "
                           "convert the source folder again with dardiag to-dar") from None
    if not (Path(folder) / ROUTING_WEIGHTS).is_file():
        raise DardiagError(f"{folder} has {ROUTING_JSON} but no {ROUTING_WEIGHTS}; convert the source folder again")
    return RoutingSpec.from_dict(spec, where=str(file))


def attach_routing(folder: Path, model, class_name: str, spec: RoutingSpec, *, count_tokens,
                   weights: bool = True) -> None:
    """Graft ``spec``'s routing onto ``model`` (just loaded from ``folder``) and load its parameters."""
    if spec.class_name != class_name:
        raise DardiagError(f"{folder / ROUTING_JSON} routes a {spec.class_name}, but config.json is a {class_name}")
    router = graft(model, TABLE[class_name], spec, count_tokens=count_tokens)
    if not weights:  # the plan only (dardiag inspect)
        return
    file = Path(folder) / ROUTING_WEIGHTS
    try:
        state = load_file(str(file))
    except Exception as e:  # a truncated or foreign file: safetensors raises its own types
        raise DardiagError(f"{file} is not a readable safetensors file ({' '.join(str(e).split())[:100]})") from None
    want = router.state_dict()
    if set(state) != set(want):
        missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
        raise DardiagError(f"{file} does not hold this routing's parameters ({len(missing)} missing, e.g. "
                           f"{missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]}); convert the source again")
    for k, v in state.items():
        if tuple(v.shape) != tuple(want[k].shape) or not torch.isfinite(v).all():
            raise DardiagError(f"{file}: {k} has shape {list(v.shape)} (the routing needs {list(want[k].shape)}) "
                               "or non-finite values; convert the source folder again")
    ref = want[next(iter(want))]
    router.load_state_dict({k: v.to(ref.device, ref.dtype) for k, v in state.items()})


def write_routing(folder: Path, router, extra: dict) -> None:
    """The two routing files of a model folder (inside a folder not yet visible, or replacing a run's own)."""
    save_file({k: v.detach().float().cpu().contiguous() for k, v in router.state_dict().items()},
              str(folder / ROUTING_WEIGHTS))
    os.chmod(folder / ROUTING_WEIGHTS, 0o644)  # safetensors writes 0600; the weights beside it are readable
    doc = {"routing": router.spec.to_dict(), **extra}
    (folder / ROUTING_JSON).write_text(json.dumps(doc, indent=2, default=str) + "\n")
