"""The two digit models shipped inside the package, and the held-out digits they are profiled on."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from dardiag.data import TEST_FRACTION, digits_latents
from dardiag.errors import DardiagError

BUNDLED = {"residual": "residual.pt", "DAR static_t c4": "dar_static_t_c4.pt"}


def bundled_checkpoints() -> dict[str, Path]:
    """Display name -> path of the bundled residual and DAR (static_t, chunk 4) checkpoints."""
    root = Path(str(files("dardiag") / "assets"))
    paths = {name: root / file for name, file in BUNDLED.items()}
    missing = [p.name for p in paths.values() if not p.exists()]
    if missing:
        raise DardiagError(f"bundled checkpoints missing from the installation: {', '.join(missing)}; reinstall dardiag")
    return paths


def held_out_digits() -> dict:
    """The digits split the bundled models never trained on: {x0 [N,1,16,16], y [N], meta}.

    ``meta["source"]`` names them wherever a profile shows its inputs (table, CLI, figures)."""
    data = digits_latents("test")
    return {**data, "meta": {"source": f"held-out digits (scikit-learn, {TEST_FRACTION:.0%} split)"}}
