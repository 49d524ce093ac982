"""Multi-process sweeps: torchrun's environment in, single-process statistics out on rank 0.

``torchrun --nproc-per-node W -m dardiag profile ...`` (or ``--nnodes``: it is only torchrun's
environment) runs the same command on W processes. Each process takes every W-th minibatch of every
noise level (rank r: minibatches r, r + W, ...). After a level, the processes' collectors are merged
(``LevelCollector.merge``); this is exact, not an approximation, because every statistic is a sum over
minibatches (act/grad/cos sums and their counts, routing sums, the CKA minibatch-HSIC sums S_KL of
diagnostics.md section 4 and their minibatch count) that is turned into means only in
``LevelCollector.rows()``. Only the order of float additions changes. The timestep probe's pooled
features are gathered on rank 0, in sample order. Only rank 0 writes anything.

Backends: gloo on CPU, nccl with ``--device cuda`` (one GPU per process: ``cuda:LOCAL_RANK``).
Several nodes: ``torchrun --nnodes N --node-rank R --rdzv-endpoint HOST:PORT ...`` on each; every node
needs the checkpoints (and ``--inputs``) at the same paths, and OUT is written on rank 0's node.
Every helper is a no-op (or the identity) in a single process, so callers need no branches.

Stopping: torchrun forwards SIGINT / SIGTERM to every worker (a scheduler may signal just one). The
sweep asks every process at each minibatch boundary (:func:`max_over_ranks` of the signal numbers) so
that all stop after the same minibatch; a process that stops at once (a second signal) ends the
others' next collective with an error, which is that stop (:func:`_collective`), not a failure.

    torchrun --nproc-per-node 2 -m dardiag profile ckpt.pt --out runs/a          # 2 CPU processes
    torchrun --nproc-per-node 8 -m dardiag profile ckpt.pt --out runs/a --device cuda
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from dardiag.errors import DardiagError
from dardiag.runs import stop

__all__ = [
    "is_distributed", "rank", "world_size", "is_main", "init_if_needed", "rank_device", "shard",
    "reduce_collector", "gather_probe", "gather_object", "broadcast_object", "max_over_ranks", "all_ranks",
    "barrier", "shutdown", "peers",
]

T = TypeVar("T")
_created = None  # the process group init_if_needed made (a group made later by someone else is not dardiag's)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def _several() -> bool:
    return _active() and dist.get_world_size() > 1


# How long a failed collective waits for the stop that explains it. torchrun signals every worker once
# one has ended (its monitor polls every 0.1 s), but on a loaded machine that signal arrived after more
# than 2 s: the wait only ever runs after a collective failed, so it may be generous.
PEER_GONE_WAIT_S = 60.0


@contextmanager
def _collective() -> Iterator[None]:
    """A collective that fails because another process has gone: when this one is asked to stop too
    (torchrun signals every remaining worker once one ended), that is the stop, not an error."""
    try:
        yield
    except RuntimeError:  # gloo: "Connection closed by peer"; torch.distributed.DistBackendError
        halt = stop.current()
        deadline = time.monotonic() + (PEER_GONE_WAIT_S if halt.listening else 0.0)
        while not halt.requested and time.monotonic() < deadline:
            time.sleep(0.05)
        if not halt.requested:
            raise
        raise stop.Stopped(halt.signum) from None


@contextmanager
def peers(inside: bool = True) -> Iterator[None]:
    """Work with collectives inside it (a sharded model gathers its weights in every forward and backward):
    when another process has gone, this one's collective fails. Asked to stop already, that is the stop (a
    second signal stopped the other at once); otherwise the other process failed (its own line says why),
    and this one ends with one line too, deaf to the signal torchrun sends next. Nothing changes when
    ``inside`` is false or in a single process."""
    if not (inside and _several()):
        yield
        return
    try:
        yield
    except RuntimeError as e:
        if not isinstance(e, getattr(dist, "DistError", ())) and not _gone(str(e)):
            raise  # a failure of this process' own work: a bug, with its traceback
        halt = stop.current()
        if halt.requested:
            raise stop.Stopped(halt.signum) from None
        halt.leaving = True  # torchrun ends the remaining processes next: nothing more to say
        raise DardiagError(f"process {rank()}: another process of this run ended in the middle of a minibatch "
                           "(its own message says why), so this one stops too; run the same command again to "
                           "continue from the last finished noise level") from None


def _gone(message: str) -> bool:
    return any(s in message for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                      "NCCL", "Gloo", "gloo"))


def world_size() -> int:
    """Processes in the sweep: the process group's size, else torchrun's ``WORLD_SIZE``, else 1."""
    return dist.get_world_size() if _active() else _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process' global rank (0 in a single process); still valid after the group is destroyed."""
    return dist.get_rank() if _active() else _env_int("RANK", 0)


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """True on the one process that writes files and prints (rank 0)."""
    return rank() == 0


def rank_device(device: str | torch.device) -> torch.device:
    """The device this process uses: with several processes, ``cuda`` means ``cuda:LOCAL_RANK``."""
    device = torch.device(device)
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return device


def init_if_needed(device: str | torch.device = "cpu") -> bool:
    """Join the process group torchrun describes (env ``WORLD_SIZE`` > 1) unless one exists.

    gloo for CPU devices, nccl for CUDA (after selecting ``cuda:LOCAL_RANK``). Returns True when dardiag
    created the group (this call, or an earlier one that left it to the caller: ``--shard`` joins before
    loading), i.e. the caller should destroy it with :func:`shutdown` when done.
    """
    global _created
    if _active():
        return _created is not None and _created is dist.group.WORLD
    if _env_int("WORLD_SIZE", 1) <= 1:
        return False
    if not dist.is_available():
        raise DardiagError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    device = rank_device(device)
    if device.type == "cuda":
        if _env_int("LOCAL_RANK", 0) >= torch.cuda.device_count():
            raise DardiagError(
                f"LOCAL_RANK {_env_int('LOCAL_RANK', 0)} but only {torch.cuda.device_count()} CUDA devices: "
                "start at most one process per GPU (torchrun --nproc-per-node <= GPUs)"
            )
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    _created = dist.group.WORLD
    return True


def shutdown(created: bool) -> None:
    """Wait for every process, then destroy the group if :func:`init_if_needed` created it."""
    if not _active():
        return
    barrier()
    if created:
        dist.destroy_process_group()


def barrier() -> None:
    if _several():
        with _collective():
            dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This process' share: items r, r + W, r + 2W, ... (all of them in a single process)."""
    return list(items[rank()::world_size()])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every process (picklable objects; the identity in one process)."""
    if not _several():
        return obj
    box = [obj if rank() == src else None]
    with _collective():
        dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_object(obj: Any) -> list | None:
    """Every process' ``obj`` on rank 0, in rank order (None elsewhere); ``[obj]`` in one process."""
    if not _several():
        return [obj]
    parts = [None] * dist.get_world_size() if rank() == 0 else None
    with _collective():
        dist.gather_object(obj, parts, dst=0)
    return parts


def _all_reduce_int(value: int, op) -> int:
    if not _several():
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.int64, device=device)
    with _collective():
        dist.all_reduce(t, op=op)
    return int(t.item())


def max_over_ranks(value: int) -> int:
    """The largest ``value`` over all processes (a stop: the signal number, 0 for none)."""
    return _all_reduce_int(int(value), dist.ReduceOp.MAX)


def all_ranks(flag: bool) -> bool:
    """True when ``flag`` is true on every process (all continue a stopped level, or none does)."""
    return bool(_all_reduce_int(int(bool(flag)), dist.ReduceOp.MIN))


def reduce_collector(col):
    """The collector of the whole level: every process' collector merged, in rank order, on every process.

    Each process sends its collector's ``state()`` (fixed-size sums and the CKA accumulator's state:
    small, whatever the number of images) and merges all of them through ``LevelCollector.merge``, so the
    reduction knows nothing about what a collector holds. Returns ``col`` itself in a single process.
    """
    if not _several():
        return col
    states = [None] * dist.get_world_size()
    with _collective():
        dist.all_gather_object(states, col.state())
    total = type(col).restored(col.spec, col.an, states[0], col.device)
    for state in states[1:]:
        total.merge(type(col).restored(col.spec, col.an, state, col.device))
    return total


def gather_probe(feats: dict[str, torch.Tensor], ids: torch.Tensor):
    """Pooled probe features of all processes on rank 0, rows in ascending sample id (as one process
    would hold them); returns ``(feats, ids)`` on rank 0 and None elsewhere. Identity in one process.

    ``feats`` maps a site to [M, D] CPU features whose rows belong to the sample ``ids`` [M]. The
    payload is small (images x sites x width), so it travels pickled via ``gather_object``.
    """
    if not _several():
        return feats, ids
    parts = gather_object((feats, ids))
    if parts is None:
        return None
    all_ids = torch.cat([p[1] for p in parts])  # (M_total,)
    order = torch.argsort(all_ids, stable=True)
    merged = {k: torch.cat([p[0][k] for p in parts])[order] for k in feats}
    return merged, all_ids[order]


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` is sharded by FSDP2 (its forward then gathers weights from every process)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)
