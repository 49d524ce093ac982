"""Weights sharded over torchrun's processes (``--shard``): torch's FSDP2, each process reading only its share.

Each block is its own FSDP2 unit (``fully_shard``), then the root (embeddings, final layer, routing):
every parameter is split in rows (dim 0) over the W processes, and a unit's whole weights exist only
while it works (gathered before its forward and again for its backward, then freed). The mesh is
torchrun's: one dimension over all processes of the process group (gloo on CPU, NCCL on CUDA).

Loading never holds the whole model in one process: the model is built on the meta device, sharded
there, given memory for its own rows only (``to_empty``), and each process copies its rows from the
files, which are mapped, not read (torch.save's zip format, or a safetensors file mapped in place):
only the pages of its rows are ever touched, and each tensor's are given back once its rows are copied. Buffers the constructors computed (position tables) are
kept; buffers the files hold are read whole (they are not sharded).

Facts: FSDP2 shards dim 0 as ``torch.chunk`` does (ceil(rows / W) per process, the last ones shorter or
empty); frozen parameters need no gradient reduction, so the backward only gathers.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from typing import Mapping, Sequence

import torch
from torch import nn

from dardiag.engine.distributed import is_sharded  # noqa: F401 (where sharding is asked about)
from dardiag.errors import DardiagError

def _fsdp():
    try:
        from torch.distributed.fsdp import FSDPModule, fully_shard
    except ImportError:
        raise DardiagError(f"--shard needs torch's FSDP2 (torch.distributed.fsdp.fully_shard, torch >= 2.6); this "
                           f"is torch {torch.__version__}: upgrade torch, or profile without --shard") from None
    return fully_shard, FSDPModule


def _group() -> tuple[int, int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        raise DardiagError("--shard spreads the weights over torchrun's processes: start the command with "
                           "torchrun --nproc-per-node N (N >= 2), e.g. torchrun --nproc-per-node 2 -m dardiag "
                           "profile MODEL --shard")
    return dist.get_rank(), dist.get_world_size()


def check_units(model: nn.Module, blocks: Sequence[str], world: int, name: str) -> None:
    """What FSDP2 would refuse only at the first forward, said before any weight is read: every block is a
    unit of its own (no weight shared with another unit), and every process holds rows of every block
    (W processes need W rows in each block's largest weight)."""
    if not blocks:
        raise DardiagError(f"{name}: dardiag does not know this model's blocks, so --shard cannot make them units; "
                           "profile it without --shard")
    owner: dict[int, str] = {}
    for path in blocks:
        for p in model.get_submodule(path).parameters():
            if owner.setdefault(id(p), path) != path:
                raise DardiagError(f"{name} ({type(model).__name__}): blocks {owner[id(p)]} and {path} share weights, "
                                   "so FSDP2 cannot make each block its own unit; profile it without --shard")
    for pname, p in model.named_parameters(remove_duplicate=False):
        inside = [b for b in blocks if pname.startswith(b + ".")]
        if id(p) in owner and not inside:
            raise DardiagError(f"{name} ({type(model).__name__}): {pname} is a weight of block {owner[id(p)]} too, "
                               "so FSDP2 cannot make each block its own unit; profile it without --shard")
    for path in blocks:
        rows = max((p.shape[0] for p in model.get_submodule(path).parameters() if p.dim() > 0), default=0)
        if rows < world:
            raise DardiagError(f"{name}: {world} processes cannot shard block {path}: its largest weight has {rows} "
                               f"rows, fewer than the processes; use at most {rows} processes, or no --shard")


def wrap(model: nn.Module, blocks: Sequence[str], device: torch.device, name: str) -> nn.Module:
    """FSDP2 over ``model``: each block its own unit, then the root; its weights frozen (a profile never
    needs their gradients, and FSDP2 then reduces none)."""
    fully_shard, _ = _fsdp()
    from torch.distributed.device_mesh import init_device_mesh

    _, world = _group()
    check_units(model, blocks, world, name)
    mesh = init_device_mesh(torch.device(device).type, (world,))
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for path in blocks:
            fully_shard(model.get_submodule(path), mesh=mesh)
        fully_shard(model, mesh=mesh)
    except DardiagError:
        raise
    except Exception as e:  # FSDP2's own checks: shared weights across units, parameters it cannot split, ...
        text = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise DardiagError(f"{name} ({type(model).__name__}): FSDP2 cannot make its blocks units ({text}); "
                           "profile it without --shard") from None
    return model


def _rows(full_rows: int, rank: int, world: int) -> slice:
    step = -(-full_rows // world)  # torch.chunk: ceil(rows / W) per process
    return slice(min(rank * step, full_rows), min((rank + 1) * step, full_rows))


def tensor_names(model: nn.Module) -> dict[int, str]:
    """Each parameter and buffer's name, by the tensor: taken before dardiag wraps blocks (``ImagePart``)
    it maps the wrapped model's names back to the files' (:func:`renamed`)."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return {id(t): n for n, t in named}


def renamed(model: nn.Module, before: Mapping[int, str]) -> dict[str, str]:
    return {n: before[i] for i, n in ((id(t), n) for n, t in [*model.named_parameters(), *model.named_buffers()])
            if i in before and before[i] != n}


def shard_from_files(model: nn.Module, blocks: Sequence[str], sources: Mapping[str, torch.Tensor], *,
                     dtype: torch.dtype = torch.float32, device="cpu", name: str = "the model",
                     rename: Mapping[str, str] | None = None) -> nn.Module:
    """A model built on the meta device, sharded (:func:`wrap`) and given this process' rows of every
    weight from ``sources`` (names -> tensors mapped from the files: only the rows read are touched).
    ``rename``: the model's names -> the files' (blocks dardiag wrapped since the model was built)."""
    for p in model.parameters():  # the dtype asked for, while no memory exists yet
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    computed = {n: b.detach().clone() for n, b in model.named_buffers() if not b.is_meta}  # position tables
    wrap(model, blocks, device, name)
    return _load_local(model, sources, computed, rename or {}, device, name)


def _load_local(model: nn.Module, sources: Mapping[str, torch.Tensor], computed: dict, rename: Mapping[str, str],
                device, where: str) -> nn.Module:
    rank, world = _group()
    model.to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            src = sources[rename.get(name, name)]
            local = p.to_local() if hasattr(p, "to_local") else p
            rows = _rows(src.shape[0], rank, world) if src.dim() > 0 and hasattr(p, "to_local") else slice(None)
            part = src[rows] if src.dim() > 0 else src
            if tuple(part.shape) != tuple(local.shape):  # a sharding dardiag does not know: refuse, never guess
                raise DardiagError(f"{where}: {name} is split as {list(local.shape)} here, not in rows of "
                                   f"{list(src.shape)}; profile it without --shard")
            local.copy_(part)
            _release(part)
        for name, b in model.named_buffers():
            if name in computed:
                b.copy_(computed[name])
            else:
                b.copy_(sources[rename.get(name, name)])
    return model.eval()


_PAGEOUT = 21  # Linux's MADV_PAGEOUT (5.4+): reclaim these pages; memory not backed by a file is left as it is


def _release(part: torch.Tensor) -> None:
    """Give back the pages of the file just copied from: a mapped page stays in the process once touched,
    so without this a process would end its loading holding its rows twice (copy and mapping), as much as
    the whole model. Harmless on memory that is not a file's (never written, so never lost) and where the
    kernel cannot (nothing happens)."""
    if not sys.platform.startswith("linux") or not part.numel():
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        page = mmap.PAGESIZE
        start = part.data_ptr() // page * page
        end = part.data_ptr() + part.numel() * part.element_size()
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), ctypes.c_int(_PAGEOUT))
    except (OSError, AttributeError):
        pass
