"""Reference DiT/SiT with plain residual or DAR routing."""

from dardiag.models.config import DiTConfig, preset, preset_names
from dardiag.models.dit import DiT
from dardiag.models.routing import DARRouting, ResidualRouting, dar_sources

__all__ = ["DiT", "DiTConfig", "preset", "preset_names", "DARRouting", "ResidualRouting", "dar_sources"]
