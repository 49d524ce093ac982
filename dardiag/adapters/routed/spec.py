"""What a routed diffusers transformer is: one frozen value, stored beside the weights as JSON.

``RoutingSpec`` says the level (whole blocks or sublayers), the query kind, the depth D (blocks of
every profiled stack, in call order), the width of the image stream, and how to read the noise level
off the timestep the model's ``forward`` receives (``static_t`` embeds it). Its aggregators and their
sources use the numbering of the table (``sublayer`` l = 2k-1 / 2k is block k's attention / MLP,
2D+1 the final aggregator; ``source`` 0 the stream entering the first block), so that a routed
diffusers model and dardiag's own DAR DiT are compared on one axis:

* ``level="sublayer"``: aggregator l (2..2D+1) mixes v_0 .. v_{l-1} (dense DAR, as the paper);
* ``level="block"``: the input of block k is aggregator 2k-1 (k = 2..D), the final one 2D+1; source
  2i is block i's contribution (it ends at block i's last sublayer), so block k mixes sources
  0, 2, ..., 2k-2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dardiag.errors import DardiagError

LEVELS = ("block", "sublayer")
QUERIES = ("static", "static_t", "dynamic")
FORMAT = 1  # version of the files below
ROUTER = "dar_routing"  # the router's attribute on the model


@dataclass(frozen=True)
class RoutingSpec:
    class_name: str
    level: str
    query: str
    depth: int  # D: profiled blocks in call order
    dim: int  # width of the image stream
    timestep_arg: str | None = None  # the forward's argument holding the timestep (static_t reads it)
    t_clean: float = 0.0  # that argument at noise level 0 ...
    t_noise: float = 1.0  # ... and at noise level 1 (pure noise)
    format: int = FORMAT

    def __post_init__(self):
        if self.level not in LEVELS:
            raise DardiagError(f"--level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.query not in QUERIES:
            raise DardiagError(f"--query must be one of {', '.join(QUERIES)}, got {self.query!r}")
        if self.depth < 1 or self.dim < 1:
            raise DardiagError(f"a routed model needs at least one block and a width; got depth {self.depth}, "
                               f"width {self.dim}")
        if self.query == "static_t" and (self.timestep_arg is None or self.t_noise == self.t_clean):
            raise DardiagError(f"{self.class_name}: static_t needs the timestep its forward receives, and none "
                               "was found; use --query static or dynamic")

    @property
    def name(self) -> str:
        """The routing column of the table, e.g. ``dar-static_t-block``."""
        return f"dar-{self.query}-{self.level}"

    def routes(self) -> dict[int, tuple[int, ...]]:
        """Aggregator l -> its source indices (see the module docstring); sublayer 1 has none (one source)."""
        D = self.depth
        if self.level == "sublayer":
            return {l: tuple(range(l)) for l in range(2, 2 * D + 2)}
        return {2 * k - 1: tuple(range(0, 2 * k - 1, 2)) for k in [*range(2, D + 1), D + 1]}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> "RoutingSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            if int(d.get("format", 0)) > FORMAT:
                raise DardiagError(f"{where} was written by a newer dardiag (routing format {d['format']}); "
                                   "upgrade dardiag")
            return cls(**{k: v for k, v in d.items() if k in known})
        except (TypeError, ValueError) as e:
            raise DardiagError(f"{where} is not a dardiag routing description ({e})") from None
