"""Model configuration: one frozen dataclass and the DiT/SiT presets.

DiT and SiT share the network; they differ only in the noise process around it (see
``dardiag.families``), so the family is not part of this config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ROUTINGS = ("residual", "dar")
QUERIES = ("static", "static_t", "dynamic")

# size letter -> (depth, hidden_size, num_heads), from the DiT/SiT papers.
SIZES = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCHES = (2, 4, 8)
# hidden size -> heads for the official presets; any other width needs an explicit head count.
HEADS_BY_WIDTH = {h: n for (_, h, n) in SIZES.values()}


@dataclass(frozen=True)
class DiTConfig:
    input_size: int = 32  # latent side (tokens per side = input_size // patch_size)
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1  # > 0 adds the CFG null-class row to the label table
    learn_sigma: bool = True
    qk_norm: bool = False  # REPA's optional per-head LayerNorm on q and k
    routing: str = "residual"  # "residual" | "dar"
    query: str = "static_t"  # DAR only: "static" | "static_t" | "dynamic"
    chunk_size: int = 4  # DAR only: S consecutive sublayers per chunk; 1 = dense
    # DAR models converted from residual ones (dardiag.convert) start as the residual function:
    own_t_query: bool = False  # static_t: e(t) = routing.t_query(t_embedder(t)), a zero-init linear
    reader_eps_per_source: bool = False  # a LayerNorm reading n routed sources uses eps / n^2

    def __post_init__(self):
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        if self.query not in QUERIES:
            raise ValueError(f"DAR query must be one of {QUERIES}, got {self.query!r}")
        if self.input_size % self.patch_size:
            raise ValueError(
                f"input_size {self.input_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.routing == "dar":
            subs = self.num_sublayers
            if self.chunk_size < 1 or subs % self.chunk_size:
                divisors = [s for s in range(1, subs + 1) if subs % s == 0]
                raise ValueError(
                    f"chunk size {self.chunk_size} does not divide the {subs} sublayers of a "
                    f"depth-{self.depth} model; use one of {divisors}"
                )
        if self.own_t_query and (self.routing, self.query) != ("dar", "static_t"):
            raise ValueError("own_t_query is for DAR static_t models only")
        if self.reader_eps_per_source and self.routing != "dar":
            raise ValueError("reader_eps_per_source is for DAR models only")

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2

    @property
    def num_sublayers(self) -> int:
        return 2 * self.depth

    @property
    def routing_name(self) -> str:
        """Display name of the routing variant, e.g. ``residual`` or ``dar-static_t-c4``."""
        if self.routing == "residual":
            return "residual"
        return f"dar-{self.query}-c{self.chunk_size}"

    def replace(self, **changes) -> "DiTConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DiTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DiTConfig fields: {sorted(unknown)}")
        return cls(**d)


def preset_names() -> list[str]:
    """All registered preset names, e.g. ``DiT-XL/2``; SiT uses the same table."""
    return [f"DiT-{s}/{p}" for s in SIZES for p in PATCHES]


def preset(name: str, **overrides) -> DiTConfig:
    """``preset("DiT-S/2", routing="dar")``; accepts ``SiT-`` names and bare ``S/2`` too."""
    key = name.split("-", 1)[1] if "-" in name else name
    try:
        size, patch = key.split("/")
        depth, hidden, heads = SIZES[size]
        patch = int(patch)
    except (ValueError, KeyError):
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(preset_names())}") from None
    if patch not in PATCHES:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    return DiTConfig(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch, **overrides)
