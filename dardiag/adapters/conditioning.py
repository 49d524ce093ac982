"""Per-sample conditioning a model needs besides latents and labels (text embeddings, ...).

``Conditioning`` is a ``Subject.make_cond``: ``make_cond(N, sample_ids)`` returns one tensor per
name, either supplied by the user (``--inputs`` keys such as ``encoder_hidden_states``, one row per
sample) or synthesised: standard normal, drawn per sample from (seed, name, sample id), so a sample
gets the same conditioning at every noise level and in every minibatch split. The Subject's
``info["conditioning"]`` always says which is which.

A supplied text sequence may come with its padding mask, ``<name>_mask`` (N, L), 1 = a real token (as
``dardiag prompts`` stores the pipeline's own); ``make_cond`` then returns it, as bool, under that name,
and the class's call passes it where its pipeline passes the attention mask. Synthetic sequences have
no padding, so no mask.

Legend: N samples, L text tokens, D width.
"""

from __future__ import annotations

import zlib

import torch

from dardiag.errors import DardiagError


class Conditioning:
    """``make_cond(N, sample_ids) -> {name: tensor (N, ...)}`` for a Subject (see the module docstring).

    ``shapes`` gives the per-sample shape of each tensor; ``notes`` describe fixed, non-random
    conditioning the model's call adds itself (ids, guidance scale), for ``describe()``.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], *, seed: int = 0, notes: tuple[str, ...] = (),
                 info: dict | None = None):
        self.shapes = dict(shapes)  # per-sample shapes, e.g. {"encoder_hidden_states": (L, D_text)}
        self.seed = seed
        self.notes = notes  # the fixed, non-random conditioning, in words
        self.info = info  # a Subject's info: its "conditioning" entry follows supply()
        self.supplied: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}  # {sequence name: (M, L) bool, True = a real token}

    def supply(self, tensors: dict) -> None:
        """Use these (M, ...) tensors instead of synthetic ones; row i belongs to input sample i.
        ``<name>_mask`` (M, L) is the padding mask of the sequence ``<name>`` supplied with it."""
        masks = {k: v for k, v in tensors.items() if k.endswith("_mask") and k not in self.shapes}
        for key, value in tensors.items():
            if key in masks:
                continue
            if key not in self.shapes:
                raise DardiagError(
                    f"inputs hold {key!r}, which this model does not take; it takes: {', '.join(self.shapes)}"
                )
            value = torch.as_tensor(value).float()
            shape = self.shapes[key]
            # token sequences (L, D) may have any length L; everything else must match exactly
            ok = value.dim() == len(shape) + 1 and value.shape[-1] == shape[-1] and (
                len(shape) == 2 or tuple(value.shape[1:]) == shape)
            if not ok:
                want = "L, " + str(shape[-1]) if len(shape) == 2 else ", ".join(map(str, shape))
                raise DardiagError(f"inputs {key} has shape {list(value.shape)}; the model takes [N, {want}]")
            if not torch.isfinite(value).all():
                raise DardiagError(f"inputs {key} holds NaN or inf values")
            self.shapes[key] = tuple(value.shape[1:])
            self.supplied[key] = value
            self.masks.pop(key, None)  # a new sequence: an old mask no longer fits it
        for key, value in masks.items():
            name = key[: -len("_mask")]
            self.masks[name] = self._check_mask(key, name, value)
        if self.info is not None:
            self.info["conditioning"] = self.describe()

    def _check_mask(self, key: str, name: str, value) -> torch.Tensor:
        """-> the padding mask ``key`` of sequence ``name`` as bool (M, L), or a one-line error."""
        if name not in self.shapes:
            raise DardiagError(f"inputs hold {key!r}, a mask of {name!r}, which this model does not take; "
                               f"it takes: {', '.join(self.shapes)}")
        if name not in self.supplied:
            raise DardiagError(f"inputs hold {key!r} but not {name!r}: a padding mask goes with the text "
                               f"sequence it masks; supply both, or drop {key!r}")
        seq = self.supplied[name]  # (M, L, D)
        if len(self.shapes[name]) != 2:
            raise DardiagError(f"inputs hold {key!r}, but {name} {list(seq.shape)} is not one token sequence "
                               f"[N, L, D]; drop {key!r}")
        value = torch.as_tensor(value)
        if value.dim() != 2 or tuple(value.shape) != tuple(seq.shape[:2]):
            raise DardiagError(f"inputs {key} has shape {list(value.shape)}; it must be {list(seq.shape[:2])} "
                               f"(one 0/1 per token of {name}); re-encode the prompts with `dardiag prompts`")
        if value.dtype != torch.bool and not ((value == 0) | (value == 1)).all():
            bad = value[(value != 0) & (value != 1)].flatten()[0].item()
            raise DardiagError(f"inputs {key} holds {bad:g}; a padding mask holds only 0 (padding) and 1 "
                               f"(a real token); re-encode the prompts with `dardiag prompts`")
        value = value.bool()  # (M, L)
        empty = (~value.any(dim=1)).nonzero().flatten()
        if len(empty):  # attention over no key at all is NaN in most classes
            raise DardiagError(f"inputs {key}: row {int(empty[0])} masks every token of {name}; each prompt "
                               "needs at least one real token (1)")
        return value

    def padding(self) -> dict[str, float]:
        """{sequence name: the fraction of its supplied tokens that are padding}, for masked sequences."""
        return {k: 1.0 - m.float().mean().item() for k, m in self.masks.items()}

    def use_inputs(self, tensors: dict, *, seed: int) -> None:
        """The sweep's hook: conditioning found in ``--inputs`` (rows = samples) and the run's seed."""
        self.seed = seed
        self.supply(tensors)

    def _draw(self, key: str, sample_id: int) -> torch.Tensor:
        seed = (self.seed * 1_000_003 + zlib.crc32(key.encode()) * 7_919 + sample_id) % (2**63 - 1)
        return torch.randn(self.shapes[key], generator=torch.Generator().manual_seed(seed))

    def __call__(self, n: int, sample_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        ids = [int(i) for i in sample_ids]
        out = {}
        for key in self.shapes:
            if key in self.supplied:
                out[key] = self.supplied[key][ids]  # (N, ...)
                if key in self.masks:
                    out[f"{key}_mask"] = self.masks[key][ids]  # (N, L) bool
            else:
                out[key] = torch.stack([self._draw(key, i) for i in ids])  # (N, ...)
        return out

    def describe(self) -> str:
        parts = []
        for key, shape in self.shapes.items():
            dims = "x".join(map(str, shape))
            if key in self.masks:
                parts.append(f"{key} [{dims}] from the inputs, with its padding mask "
                             f"({self.padding()[key]:.0%} padding)")
            elif key in self.supplied:
                parts.append(f"{key} [{dims}] from the inputs")
            else:
                parts.append(f"{key} [{dims}] N(0, 1) drawn per sample id (seed {self.seed})")
        synthetic = "synthetic: " if len(self.supplied) < len(self.shapes) else ""
        return synthetic + "; ".join(parts + list(self.notes))
