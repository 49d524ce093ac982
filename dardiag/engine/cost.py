"""What a profile will cost, said before any work: its size in passes and the memory it expects.

    memory ~ weights + one minibatch's backward + CKA buffers

* weights: the bytes of the model's parameters and buffers (already loaded when this is said);
* one minibatch's backward: what autograd keeps from the forward until the backward frees it, plus
  the states the probe keeps alive (z_k, v_l) until the minibatch ends. For a transformer that is
  about ``ACT_WORDS`` numbers per channel, token (text tokens too where they run through the blocks:
  joint text-image models) and block and image (LayerNorm input and output,
  modulated input, q/k/v, attention output, both MLP activations, the gated branch outputs, ...);
  the constant is checked against the measured peak of ``benchmarks/bench_xl_memory.py`` (DiT-XL/2)
  and ``bench_profile_overhead.py`` (S/2, B/2): see benchmarks/README.md;
* CKA buffers: the float64 Gram tiles the accumulator forms after the backward (its own bound).

The two levers for a backward that does not fit (``dardiag.engine.memory``, ``dardiag.engine.sharding``):

* checkpointed blocks keep about ``KEPT_WORDS`` numbers per channel, token, block and image (the states
  between blocks, which the probe holds anyway and each recomputation starts from; the attention's gated
  output, where the MLP's recomputation starts; the MLP's gated output, which the route importance reads
  in the backward), plus one block's ``ACT_WORDS`` while that block is recomputed (DiT-XL/2, 4 images,
  28 blocks, live tensors measured under a fixed mmap threshold: 0.39 GiB kept after the forward, 0.45
  GiB at the backward's peak; this estimate 0.45 + CKA 0.1 GiB);
* sharded weights (``--shard`` over W processes) leave each process its 1/W of every tensor, plus the
  weights it gathers while they work: the root's (embeddings, final layer) for the whole pass and two
  blocks at a time (the one running and the next, prefetched).

The line says the memory with checkpointing and without, whichever the run uses.

The width and the token count come from the model's config (dardiag DiT, diffusers transformers);
a model without one gets both estimated from its parameter count (said with a "~").
Pure arithmetic: nothing here allocates or runs the model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from dardiag.engine.config import CKA_MIN_ROWS, ProfileConfig
from dardiag.engine.inputs import minibatches
from dardiag.metrics.cka import ROWS_BYTES, CKAAccumulator

ACT_WORDS = 20  # numbers kept per (channel, token, block, image) through one backward; see the docstring
KEPT_WORDS = 3  # the same with every block checkpointed (and ACT_WORDS for the one block recomputed)
HEADROOM = 0.9  # plan against this share of the free memory: the allocator fragments, other programs grow
GiB = 2**30


@dataclass(frozen=True)
class Cost:
    model: str
    family: str
    depth: int
    width: int
    tokens: int
    estimated_shape: bool  # width and tokens from the parameter count, not a config
    parameters: int
    levels: int
    images: int
    batch_size: int
    minibatches: int  # per noise level
    weights_bytes: int
    minibatch_bytes: int  # one minibatch's backward (activations and kept states)
    cka_bytes: int
    free_bytes: int | None  # memory free on the device now (weights already loaded), None: unknown
    dtype_bytes: int
    min_batch: int = CKA_MIN_ROWS  # the smallest --batch-size the run takes (CKA over images needs 4)
    checkpointed_bytes: int = 0  # one minibatch's backward with every block checkpointed
    checkpoint: bool = False  # the run checkpoints its blocks
    processes: int = 1  # weights sharded over this many processes (weights_bytes: one process' share)
    model_bytes: int = 0  # the whole model's weights
    gathered_bytes: int = 0  # sharded: the weights gathered while they work (in weights_bytes, not yet allocated)

    @property
    def backward_bytes(self) -> int:
        """One minibatch's backward as this run does it (checkpointed or not)."""
        return self.checkpointed_bytes if self.checkpoint else self.minibatch_bytes

    @property
    def passes(self) -> int:
        """Forward+backward passes of one image over the whole grid."""
        return self.levels * self.images

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.backward_bytes + self.cka_bytes

    @property
    def work_bytes(self) -> int:
        """What the work needs beyond the (already loaded) weights."""
        return self.backward_bytes + self.cka_bytes + self.gathered_bytes

    def fits(self, checkpoint: bool | None = None) -> bool:
        """Whether the work fits the free memory (``checkpoint``: with or without checkpointing instead)."""
        work = self.work_bytes if checkpoint is None else (
            (self.checkpointed_bytes if checkpoint else self.minibatch_bytes) + self.cka_bytes + self.gathered_bytes)
        return self.free_bytes is None or work <= HEADROOM * self.free_bytes

    def suggested_batch_size(self) -> int | None:
        """The largest minibatch whose backward fits the free memory (None: not even the smallest)."""
        if self.free_bytes is None:
            return self.batch_size
        per_image = self.backward_bytes / self.batch_size
        b = int((HEADROOM * self.free_bytes - self.cka_bytes - self.gathered_bytes) // max(per_image, 1))
        b = min(b, self.batch_size)
        return b if b >= self.min_batch else None

    def line(self) -> str:
        """The one line said before any work (see the module docstring)."""
        approx = "~" if self.estimated_shape else ""
        backward = self.minibatch_bytes if self.checkpoint else self.checkpointed_bytes  # the other way
        other = self.weights_bytes + self.cka_bytes + backward
        how = (f"with every block checkpointed {_gib(self.checkpointed_bytes)}" if self.checkpoint
               else f"{_gib(self.minibatch_bytes)}")
        weights = f"weights {_gib(self.weights_bytes)}"
        if self.processes > 1:
            weights += f" (one process' share of {_gib(self.model_bytes)}, sharded over {self.processes})"
        mem = (f"memory ~{_gib(self.total_bytes)} GiB ({weights} + one minibatch's backward {how} + CKA "
               f"{_gib(self.cka_bytes)}; ~{_gib(other)} GiB "
               f"{'without checkpointing' if self.checkpoint else 'with --checkpoint-blocks'})")
        free = f", {_gib(self.free_bytes)} GiB free besides the weights" if self.free_bytes is not None else ""
        return (f"plan: {self.model} ({self.family}, {self.depth} blocks, width {approx}{self.width}, "
                f"{approx}{self.tokens} tokens, {_count(self.parameters)} parameters): {self.levels} levels x "
                f"{self.images} images = {self.levels * self.minibatches:,} minibatches of {self.batch_size} "
                f"({self.passes:,} image forward+backward passes); {mem}{free}")

    def warning(self) -> str | None:
        """A warning and a ``--batch-size`` that fits, when the work exceeds the free memory."""
        if self.fits():
            return None
        b = self.suggested_batch_size()
        need, free = _gib(self.work_bytes), _gib(self.free_bytes)
        if b is None:
            lever = "" if self.checkpoint else "--checkpoint-blocks, "
            return (f"warning: {self.model} needs ~{need} GiB for one minibatch besides its weights, but only "
                    f"{free} GiB is free, and even --batch-size {self.min_batch} will not fit; free memory, use "
                    f"{lever}--shard under torchrun, --dtype bfloat16, or --no-cka with a smaller --batch-size")
        small = self.backward_bytes * b / self.batch_size + self.cka_bytes + self.gathered_bytes
        lever = "" if self.checkpoint or not self.fits(checkpoint=True) else (
            f", or --checkpoint-blocks (~{_gib(self.checkpointed_bytes + self.cka_bytes + self.gathered_bytes)} GiB, "
            "the same table)")
        return (f"warning: {self.model} needs ~{need} GiB for one minibatch of {self.batch_size} besides its weights, "
                f"but only {free} GiB is free: pass --batch-size {b} (~{_gib(small)} GiB; the table is the same "
                f"but for grad_rms, which scales with 1/B){lever}")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def _gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f}"


def _geometry(model: torch.nn.Module, depth: int, input_shape, parameters: int,
              known_tokens: int | None = None) -> tuple[int, int, bool]:
    """(width, tokens, estimated) from the model's config, else from its parameter count; ``known_tokens``:
    the image tokens its adapter counted (diffusers classes: packing, frames)."""
    cfg = getattr(model, "config", None)
    get = (lambda k: getattr(cfg, k, None) if not isinstance(cfg, dict) else cfg.get(k))  # noqa: E731
    H, W = input_shape[-2:]  # (C, H, W), or (C, F, H, W) for video
    width = get("hidden_size") if cfg is not None else None
    if width is None and cfg is not None and get("num_attention_heads") and get("attention_head_dim"):
        width = get("num_attention_heads") * get("attention_head_dim")  # diffusers transformers
    patch = (get("patch_size") if cfg is not None else None) or None
    if isinstance(patch, (list, tuple)):
        patch = patch[-1]
    estimated = width is None or patch is None
    if width is None:  # a transformer block holds about 12 width^2 weights (attention 4, MLP 8)
        width = max(1, int(math.sqrt(parameters / max(depth, 1) / 12)))
    tokens = known_tokens or (H // (patch or 2)) * (W // (patch or 2))
    return int(width), max(int(tokens), 1), estimated and not known_tokens


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now: CUDA's own count, else the host's MemAvailable (Linux); None: unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)  # a sharded tensor's numel is the whole one's


def _local_bytes(tensors) -> int:
    return sum(_bytes([t.to_local()]) if hasattr(t, "to_local") else _bytes([t]) for t in tensors)


def _weights(model: torch.nn.Module, blocks) -> tuple[int, int, int, int]:
    """-> (whole model, one process' weights at their peak, of which gathered while working, processes)."""
    tensors = list(model.parameters()) + list(model.buffers())
    whole = _bytes(tensors)
    sharded = [t for t in tensors if hasattr(t, "to_local")]  # FSDP2 parameters are DTensors
    if not sharded:
        return whole, whole, 0, 1
    processes = sharded[0].device_mesh.size()
    in_blocks = {id(t) for b in blocks for t in model.get_submodule(b).parameters()}
    root = _bytes(t for t in model.parameters() if id(t) not in in_blocks)
    largest = max((_bytes(model.get_submodule(b).parameters()) for b in blocks), default=0)
    gathered = root + 2 * largest  # the root for the whole pass, a block and the next one prefetched
    return whole, _local_bytes(tensors) + gathered, gathered, processes


def estimate(plan, config: ProfileConfig, device) -> Cost:
    """The cost of profiling one model (a ``ModelPlan``: its subject, grid and inputs) with ``config``
    (``config.checkpoint_blocks`` None counts as off: ``dardiag.engine.memory.resolve`` decides it)."""
    s, inp = plan.subject, plan.inputs
    model = s.model
    parameters = sum(p.numel() for p in model.parameters())
    whole, weights, gathered, processes = _weights(model, s.blocks)
    depth = s.spec.depth
    width, tokens, estimated = _geometry(model, depth, s.input_shape, parameters, s.info.get("image_tokens"))
    B = min(config.batch_size, inp.count)
    word = 2 if config.dtype in ("bfloat16", "float16") else 4
    carried = s.info.get("stream_tokens") or tokens  # joint text-image models: the text tokens too
    minibatch = ACT_WORDS * word * width * carried * depth * B
    checkpointed = (KEPT_WORDS * depth + ACT_WORDS) * word * width * carried * B
    cka = 0
    if config.analyses.cka:
        P = depth + 1
        rows = B * tokens if config.analyses.cka_rows == "tokens" else B
        if config.analyses.cka_max_rows:
            rows = min(rows, config.analyses.cka_max_rows)
        acc = CKAAccumulator(P, max_rows=config.analyses.cka_max_rows)
        b = acc._blocks(rows, P, torch.device(device))[0][1]
        cka = P * b * b * 8 + min(ROWS_BYTES, P * b * width * 8)  # Gram tile + the stacked float64 rows
    return Cost(model=s.name, family=s.family.name, depth=depth, width=width, tokens=tokens,
                estimated_shape=estimated, parameters=parameters, levels=len(plan.grid), images=inp.count,
                batch_size=B, minibatches=len(minibatches(inp.count, config.batch_size)),
                weights_bytes=weights, minibatch_bytes=minibatch, cka_bytes=cka, free_bytes=free_memory(device),
                dtype_bytes=word, min_batch=CKA_MIN_ROWS if config.analyses.cka and config.analyses.cka_rows
                == "images" else 1, checkpointed_bytes=checkpointed, checkpoint=bool(config.checkpoint_blocks),
                processes=processes, model_bytes=whole, gathered_bytes=gathered)
