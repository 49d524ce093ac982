"""How to open a model: what its files cannot say about themselves, as one frozen value.

``LoadOptions`` is separate from the measurement settings (``dardiag.engine.config.ProfileConfig``):
the engine never sees it, only the Subjects it produced. It is still part of what a run measured (the
family fixes the loss), so the run metadata compares it on resume: the fields that older runs already
stored (family, num_heads, input_size) always, the newer ones only when they are set, so a run
written before they existed continues.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dardiag.errors import DardiagError

DTYPES = ("float32", "bfloat16", "float16")
ALWAYS_COMPARED = ("family", "num_heads", "input_size")
NOT_COMPARED = ("shard",)  # how the weights are spread over processes: the same table either way


@dataclass(frozen=True)
class LoadOptions:
    """What a checkpoint cannot say; every field None = read it from the files (or the default)."""

    family: str | None = None  # noise process: a dardiag.families.FAMILIES name
    num_heads: int | None = None  # attention heads of a non-preset DiT width (qkv is fused)
    input_size: int | None = None  # latent side (files without pos_embed; diffusers: else sample_size)
    frames: int | None = None  # video models: latent frames (default: the adapter's)
    text_tokens: int | None = None  # length of synthetic text embeddings (default: the pipeline's)
    weights_dtype: str | None = None  # weights dtype (None: float32, or the profile's --dtype)
    blocks: tuple[str, ...] | None = None  # block lists of an unknown class, in call order
    config: str | None = None  # a single original file: the folder of its diffusers config.json
    shard: bool = False  # under torchrun: weights sharded over the processes, each loading its share (FSDP2)

    def __post_init__(self):
        for name in ("num_heads", "input_size", "frames", "text_tokens"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                flag = "--" + name.replace("_", "-")
                raise DardiagError(f"{flag} must be a positive integer, got {v!r}")
        if not isinstance(self.shard, bool):
            raise DardiagError(f"shard must be True or False, got {self.shard!r}")
        if self.weights_dtype is not None and self.weights_dtype not in DTYPES:
            raise DardiagError(f"unknown weights dtype {self.weights_dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.blocks is not None:
            blocks = (self.blocks,) if isinstance(self.blocks, str) else tuple(self.blocks)
            blocks = tuple(b.strip() for part in blocks for b in str(part).split(",") if b.strip())
            if not blocks:
                raise DardiagError("--blocks is empty; name the block list(s), e.g. --blocks transformer_blocks")
            object.__setattr__(self, "blocks", blocks)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["blocks"] is not None:
            d["blocks"] = list(d["blocks"])
        return d

    def compared(self) -> dict[str, Any]:
        """What a resumed run must share (see the module docstring)."""
        return {k: v for k, v in self.to_dict().items()
                if (k in ALWAYS_COMPARED or v is not None) and k not in NOT_COMPARED}

    @classmethod
    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def replace(self, **changes) -> "LoadOptions":
        return dataclasses.replace(self, **changes)
