"""A unit stopped between two of its steps: its collector saved, so the same command continues it.

A minibatch of a big model can take minutes, and a level holds several; dropping the finished ones of
a level at every Ctrl-C would waste them. When a stop is asked for mid-level, the sweep writes the
level's collector state (``LevelCollector.state()``: fixed-size float64 sums and the CKA
accumulator's per-minibatch terms, never an activation), its pooled probe features and how many of
the level's minibatches it holds to ``OUT/_work/partial-<unit>.pt``. The run that continues restores
it and goes on from the next minibatch: the sums are the same float64 numbers added in the same order,
so the level's rows equal an uninterrupted run's. The file goes when the level's part is written. A
trajectory keeps its collector the same way between two of its sampler runs ("batches" are then the
chunks of samples it runs).

Under torchrun each process holds its own share of the level's minibatches: the file holds one entry
per process, in rank order (rank 0 gathers and writes them, and hands each its own back), and a level
continues only when every process' entry is there for the same share, else all start it over.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dardiag.atomic import atomic_write
from dardiag.engine import distributed
from dardiag.engine.collector import LevelCollector
from dardiag.runs.layout import PARTIAL_PREFIX as PREFIX

_FORMAT = 2  # 2: {"ranks": [one entry per process]}; 1 (one process, the entry itself) is started over


def path_of(work: Path, unit: str) -> Path:
    return Path(work) / f"{PREFIX}{unit}.pt"


def save(work: Path, unit: str, state: dict, done: int, batches: list[slice]) -> None:
    """Keep the first ``done`` of ``unit``'s ``batches`` (``state``: what its collector holds after them,
    plain tensors); under torchrun every process calls it after the same batch, with its own share."""
    entry = {"done": done, "batches": [(b.start, b.stop) for b in batches], "collector": state}
    entries = distributed.gather_object(entry)  # rank 0 holds OUT
    if entries is not None:
        atomic_write(path_of(work, unit), lambda f: torch.save({"format": _FORMAT, "ranks": entries}, f))


def level_state(col: LevelCollector) -> dict:
    """What a level stopped part-way keeps: its collector's sums and its pooled probe features."""
    return {**col.state(), "probe_feats": {k: [t.cpu() for t in v] for k, v in col.probe_feats.items()},
            "probe_ids": [t.cpu() for t in col.probe_ids]}


def restored_level(spec, analyses, state: dict, device) -> LevelCollector:
    col = LevelCollector.restored(spec, analyses, state, device)
    col.probe_feats = {k: list(v) for k, v in state["probe_feats"].items()}
    col.probe_ids = list(state["probe_ids"])
    return col


def _entries(work: Path, unit: str) -> list[dict] | None:
    """Every process' entry of a saved partial unit, when one is saved for this many processes."""
    try:
        state = torch.load(path_of(work, unit), weights_only=True)
        ranks = state["ranks"] if state.get("format") == _FORMAT else None
        return ranks if ranks is not None and len(ranks) == distributed.world_size() else None
    except Exception:  # none saved, or a damaged scratch file: the unit's batches again, nothing else
        return None


def load(work: Path | None, unit: str, batches: list[slice], restore) -> tuple[object, int] | None:
    """``(restore(state), batches done)`` of a saved partial unit, or None (none saved, or saved for other
    batches: then it is ignored and the unit starts over). Every process calls it, and all continue the
    unit or none does (a process that starts over would run more batches than the others)."""
    if work is None:
        return None
    entries = distributed.broadcast_object(_entries(work, unit) if distributed.is_main() else None)
    mine = None
    try:
        entry = entries[distributed.rank()] if entries is not None else None
        if entry is not None and entry["batches"] == [(b.start, b.stop) for b in batches]:
            mine = restore(entry["collector"]), int(entry["done"])
    except Exception:  # a damaged entry: as above
        mine = None
    return mine if distributed.all_ranks(mine is not None) else None


def done_in(work: Path | None, unit: str) -> int:
    """How many of this process' minibatches a saved partial level holds (0: none), without restoring it."""
    entries = _entries(work, unit) if work is not None else None
    try:
        return int(entries[distributed.rank()]["done"]) if entries is not None else 0
    except Exception:
        return 0


def drop(work: Path | None, unit: str) -> None:
    if work is not None:
        path_of(work, unit).unlink(missing_ok=True)


def saved_units(work: Path) -> list[str]:
    """Units with a saved partial level in a run's scratch folder."""
    work = Path(work)
    if not work.is_dir():
        return []
    return sorted(p.name[len(PREFIX):-3] for p in work.glob(f"{PREFIX}*.pt"))
