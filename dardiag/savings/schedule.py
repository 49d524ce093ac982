"""A cached sampler: chosen (block, step) cells reuse the block's last computed contribution.

A :class:`CacheSchedule` names the cells (k, i): at sampler step i, block k is not computed; its
contribution (residual: z_k - z_{k-1}; DAR: its two sublayer outputs; ``dardiag.hooks.edits``) is the
one it produced at the last step where it was computed. Step 0 computes every block. This is the
reuse of FORA / Delta-DiT / Learning-to-Cache, applied for real: :class:`CachedForward` is the
sampler's ``forward`` option (``Subject.sample(..., forward=...)``, ``dardiag.sampler.sample(...,
forward=...)``), so on dardiag's DiT a reused block costs no block computation at all. An empty
schedule runs exactly the uncached sampler.

``dardiag.savings.plan`` derives a schedule from a ``--trajectory`` run and measures what applying it does.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dardiag.atomic import atomic_write
from dardiag.errors import DardiagError
from dardiag.hooks.edits import BlockEdit
from dardiag.hooks.recorder import Keep, record
from dardiag.subject import Subject

SCHEDULE_FORMAT = "dardiag-cache-schedule"


@dataclass(frozen=True)
class CacheSchedule:
    """Cells (block k in 1..D, sampler step i in 1..steps-1) that reuse instead of computing."""

    depth: int
    steps: int
    cells: frozenset[tuple[int, int]] = frozenset()
    meta: dict = field(default_factory=dict, compare=False)  # where it came from: run, model, tolerance

    def __post_init__(self):
        for name in ("depth", "steps"):
            if not _whole(getattr(self, name)) or getattr(self, name) < 1:
                raise DardiagError(f"cache schedule {name} must be a whole number >= 1, got {getattr(self, name)!r}")
        pair = (tuple, list)
        odd = [c for c in self.cells if not (isinstance(c, pair) and len(c) == 2 and all(_whole(v) for v in c))]
        if odd:
            raise DardiagError(f"cache schedule cells must be pairs of whole numbers [block, step], got "
                               f"{list(odd[0]) if isinstance(odd[0], pair) else odd[0]!r}")
        object.__setattr__(self, "cells", frozenset((int(k), int(i)) for k, i in self.cells))
        bad = sorted((k, i) for k, i in self.cells if not (1 <= k <= self.depth and 1 <= i < self.steps))
        if bad:
            raise DardiagError(f"cache schedule cells {bad[:3]} outside blocks 1..{self.depth} and steps "
                               f"1..{self.steps - 1} (step 0 computes every block)")

    @property
    def saved_fraction(self) -> float:
        """The share of the sampler's D x steps block evaluations the schedule skips."""
        return len(self.cells) / (self.depth * self.steps)

    def reused_at(self, i: int) -> list[int]:
        return sorted(k for k, s in self.cells if s == i)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"format": SCHEDULE_FORMAT, "depth": self.depth, "steps": self.steps,
                "cells": [list(c) for c in sorted(self.cells, key=lambda c: (c[1], c[0]))], "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "CacheSchedule":
        if not isinstance(d, dict) or d.get("format") != SCHEDULE_FORMAT:
            raise DardiagError(f"not a dardiag cache schedule (format is not {SCHEDULE_FORMAT!r})")
        try:
            cells = frozenset(tuple(c) if isinstance(c, list) else c for c in d["cells"])
            meta = d.get("meta", {})
        except (KeyError, TypeError) as e:
            raise DardiagError(f"a damaged cache schedule: {e}") from None
        if not isinstance(meta, dict):
            raise DardiagError(f"a damaged cache schedule: its meta is a {type(meta).__name__}, not a dict")
        return cls(d.get("depth"), d.get("steps"), cells, meta)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        if Path(path).exists() and not overwrite:
            raise DardiagError(f"{path} already exists; pass --force to replace it, or choose another --out")
        return atomic_write(path, lambda f: f.write(text.encode()), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> "CacheSchedule":
        try:
            d = json.loads(Path(path).read_bytes().decode("utf-8"))
        except OSError as e:
            raise DardiagError(f"cannot read the cache schedule {path}: {e.strerror or e}") from None
        except ValueError as e:  # UnicodeDecodeError (binary data) or JSONDecodeError
            raise DardiagError(f"{path} is not a cache schedule (not JSON: {e}); pass the file that "
                               "`dardiag cache-plan --out` wrote") from None
        return cls.from_dict(d)

    def check_weights(self, sha256: str, where) -> None:
        """Refuse to apply the schedule to weights other than those it was planned on (``meta["sha256"]``:
        the cells were chosen from that model's own measured errors)."""
        want = self.meta.get("sha256")
        if want and sha256 and sha256 != want:
            raise DardiagError(f"the cache schedule was planned for {self.meta.get('model', 'another model')} "
                               f"({self.meta.get('checkpoint', 'another file')}); {where} holds other weights: plan "
                               "one for it (dardiag profile --trajectory, then dardiag cache-plan)")


def _whole(v) -> bool:
    """An integer (3 or numpy's int64; not 3.5, "3" or true)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class CachedForward:
    """The sampler's ``forward(i, x, t, y)`` applying a schedule; counts what it computed and reused."""

    def __init__(self, subject: Subject, schedule: CacheSchedule):
        if subject.editing is None:
            raise DardiagError(f"{subject.name} has no block editing; it cannot be sampled with a cache")
        if schedule.depth != subject.spec.depth:
            raise DardiagError(f"the schedule is for {schedule.depth} blocks, {subject.name} has {subject.spec.depth}")
        self.s, self.schedule = subject, schedule
        names = {f"z_{k}" for k in range(subject.spec.depth + 1)} | set(subject.editing.part_taps)
        self.taps = [tp for tp in subject.spec.taps if tp.name in names]
        self.parts: dict[int, tuple[torch.Tensor, ...]] = {}  # block k -> its last computed contribution
        self.computed = 0  # block evaluations
        self.reused = 0

    @torch.no_grad()
    def __call__(self, i: int, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
        s, D = self.s, self.s.spec.depth
        reuse = self.schedule.reused_at(i) if i > 0 else []
        edits = {k: BlockEdit(reuse=self.parts[k]) for k in reuse}
        keep = Keep()
        # edits first: a hook-edited model's recorder must see the states as edited (hooks.edits.tap_editing)
        with s.editing.edit(edits), record(s.model, self.taps, keep, grads=False):
            out = s.call(s.model, x, t, y, None)
        for k in range(1, D + 1):
            if k not in edits:
                self.parts[k] = s.editing.parts(keep.seen, k)
        self.computed += D - len(edits)
        self.reused += len(edits)
        return out
