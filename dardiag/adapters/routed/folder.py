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

from pathlib import Path

from dardiag.adapters.classes import TABLE
from dardiag.adapters.routed.graft import graft
from dardiag.adapters.routed.spec import RoutingSpec
from dardiag.checkpoints.routing_files import (
    ROUTING_JSON, read_routing_doc, read_routing_weights, write_routing_files,
)
from dardiag.errors import DardiagError


def routed_folder(folder: Path) -> RoutingSpec | None:
    """The routing of a model folder written by ``to-dar``, or None for a plain diffusers folder."""
    spec = read_routing_doc(folder)
    return None if spec is None else RoutingSpec.from_dict(spec, where=str(Path(folder) / ROUTING_JSON))


def attach_routing(folder: Path, model, class_name: str, spec: RoutingSpec, *, count_tokens,
                   weights: bool = True) -> None:
    """Graft ``spec``'s routing onto ``model`` (just loaded from ``folder``) and load its parameters."""
    if spec.class_name != class_name or class_name not in TABLE:
        raise DardiagError(f"{folder / ROUTING_JSON} routes a {spec.class_name}, but config.json is a {class_name}")
    router = graft(model, TABLE[class_name], spec, count_tokens=count_tokens)
    if not weights:  # the plan only (dardiag inspect)
        return
    want = router.state_dict()
    state = read_routing_weights(folder, want)
    ref = want[next(iter(want))]
    router.load_state_dict({k: v.to(ref.device, ref.dtype) for k, v in state.items()})


def write_routing(folder: Path, router, extra: dict) -> None:
    """The two routing files of a model folder (inside a folder not yet visible)."""
    write_routing_files(Path(folder), {"routing": router.spec.to_dict(), **extra}, router.state_dict())
