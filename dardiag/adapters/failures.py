"""Where a failure inside a diffusers model's own forward came from, so that it can be said in one line:
the diffusers function and module it was raised in, and which package a missing import belongs to (read
from that module's source: diffusers' code, not a model file)."""

from __future__ import annotations

import re
from pathlib import Path

import diffusers

_DIFFUSERS = str(Path(diffusers.__file__).parent)
_DARDIAG = str(Path(__file__).parents[1])


def model_frame(tb) -> str | None:
    """Where in diffusers an exception was raised ("function in module"), or None when it came from
    dardiag's own code (its innermost frame is dardiag's) or never passed through the model."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    if not frames or frames[-1].co_filename.startswith(_DARDIAG):
        return None
    ours = [f for f in frames if f.co_filename.startswith(_DIFFUSERS)]
    if not ours:
        return None
    f = ours[-1]
    return f"{f.co_name} in diffusers/{Path(f.co_filename).relative_to(_DIFFUSERS).as_posix()}"


def optional_import(where: str, name: str) -> str | None:
    """The package a diffusers module imports ``name`` from (``from torchvision import transforms``), read
    from the module's source; ``where`` as :func:`model_frame` says it."""
    try:
        source = (Path(_DIFFUSERS) / where.split(" in diffusers/", 1)[1]).read_text()
    except (IndexError, OSError):
        return None
    hit = re.search(rf"^\s*from\s+([\w.]+)\s+import\s+[^\n]*\b{re.escape(name)}\b", source, re.M) or \
        re.search(rf"^\s*import\s+([\w.]+)\s+as\s+{re.escape(name)}\b", source, re.M)
    return hit.group(1).split(".")[0] if hit else None
