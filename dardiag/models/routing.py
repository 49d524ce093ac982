"""How a sublayer's input is built from earlier sublayer outputs: the swappable part of the DiT.

Both routings share one interface, driven by ``DiT.forward``::

    stream = routing.begin(v0, t_emb, tap)      # v0 = token embedding (N, T, D)
    for l in 1 .. 2D:
        h = routing.read(stream, l)             # input of sublayer l      (N, T, D)
        v = sublayer_l(h)                       # gated output             (N, T, D)
        routing.write(stream, l, v)
    z_D = routing.end(stream)                   # input of the final layer (N, T, D)

``tap(name, x)`` passes ``x`` through the model's site of that name (see
``dardiag.hooks.sites``). Routings tap the block states ``z_k`` (and DAR its weights ``alpha_l``);
the DiT taps ``h_l`` and ``v_l`` itself.

Legend: N batch, T tokens, D channels, S sources of one aggregator.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.autograd.function import once_differentiable

Tap = Callable[[str, torch.Tensor], torch.Tensor]


class _Stream:
    """Per-forward state of a routing (never stored on the module: forwards stay re-entrant)."""

    def __init__(self, tap: Tap, t_emb: torch.Tensor):
        self.tap = tap
        self.t_emb = t_emb
        self.x: torch.Tensor | None = None  # residual: the stream
        self.values: dict[int, torch.Tensor] = {}  # DAR: v_i by source index
        self.inv_rms: dict[int, torch.Tensor] = {}  # DAR: 1 / rms(v_i), (N, T, 1)
        self.last: torch.Tensor | None = None  # DAR: the latest output written (v_{l-1} when l is read)


#################################################################################
#                              Plain residual                                   #
#################################################################################


class ResidualRouting(nn.Module):
    """The pre-norm residual stream of DiT: ``x = x + v_l``; every source weighs 1 at every t."""

    def __init__(self, depth: int):
        super().__init__()
        self.depth = depth

    def begin(self, v0, t_emb, tap: Tap) -> _Stream:
        stream = _Stream(tap, t_emb)
        stream.x = tap("z_0", v0)  # (N, T, D)
        return stream

    def read(self, stream: _Stream, l: int) -> torch.Tensor:
        return stream.x  # the h_l site is applied by the caller on the branch side only

    def write(self, stream: _Stream, l: int, v: torch.Tensor) -> None:
        stream.x = stream.x + v  # (N, T, D)
        if l % 2 == 0:  # after block k = l / 2 the stream is z_k
            stream.x = stream.tap(f"z_{l // 2}", stream.x)

    def end(self, stream: _Stream) -> torch.Tensor:
        return stream.x

    def write_read(self, stream: _Stream, l: int, v: torch.Tensor, recompute: bool = False):
        """``write`` then ``read`` of sublayer l + 1 (l odd), as ``(make, args)``: the input is ``make(*args)``.
        With ``recompute`` it is made from the stream before and ``v`` (the same sum, bit for bit), so a
        checkpoint that makes it again keeps only those two (the probe holds them anyway)."""
        before = stream.x
        self.write(stream, l, v)
        return (torch.add, (before, v)) if recompute else (_same, (stream.x,))

    def route_sources(self) -> dict[int, tuple[int, ...]]:
        return {}


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


#################################################################################
#                     DAR: Diffusion-Adaptive Routing                           #
#################################################################################


def dar_sources(l: int, num_sublayers: int, chunk_size: int) -> tuple[int, ...]:
    """Source indices i (v_0 = embedding) that the aggregator of sublayer ``l`` mixes (dar.md §3).

    Sublayer l in chunk n = ceil(l / S) sees the summaries c_m = v_{mS} of finished chunks m < n and
    the raw outputs of chunk n that precede it. ``l = num_sublayers + 1`` is the final aggregator:
    every chunk summary plus the raw outputs of the whole last chunk.
    """
    S, L = chunk_size, num_sublayers
    if not 1 <= l <= L + 1:
        raise ValueError(f"sublayer index {l} outside 1..{L + 1}")
    if l == L + 1:
        n_chunks = L // S
        return tuple(m * S for m in range(n_chunks)) + tuple(range((n_chunks - 1) * S + 1, L + 1))
    n = (l + S - 1) // S
    return tuple(m * S for m in range(n)) + tuple(range((n - 1) * S + 1, l))


class Aggregator(nn.Module):
    """One softmax-over-depth mixer: h = sum_i alpha_i v_i, alpha = softmax_i(q . RMSNorm(v_i) / sqrt(D)).

    The RMSNorm keys are never built: with RMSNorm weight g, q . RMSNorm(v) = (v . (q * g)) / rms(v)
    (dar.md §6), so each source costs one dot product with the folded query and its ``1/rms`` is
    computed once when the source is produced. Sources are never stacked into an (S, N, T, D) tensor,
    and the weighted sum accumulates in place (``_WeightedSum``), with no fresh (N, T, D) per source.
    """

    def __init__(self, dim: int, query: str, eps: float = 1e-6):
        super().__init__()
        self.kind = query
        self.scale = 1.0 / math.sqrt(dim)
        self.eps = eps
        self.norm_weight = nn.Parameter(torch.ones(dim))  # RMSNorm weight g of the keys
        if query == "dynamic":
            self.query = nn.Linear(dim, dim, bias=False)  # W_q, applied to v_{l-1} per token
            nn.init.zeros_(self.query.weight)
        else:
            self.query = nn.Parameter(torch.zeros(dim))  # w_l; zero init -> uniform routing (ours)

    def make_query(self, t_emb: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        if self.kind == "dynamic":
            return self.query(prev)  # (N, T, D)
        if self.kind == "static_t":
            return self.query + t_emb  # (N, D)
        return self.query  # (D,)

    def forward(self, values, inv_rms, q):
        gq = (q * self.norm_weight) * self.scale  # folded query: (D,) | (N, D) | (N, T, D)
        logits = []
        for v, r in zip(values, inv_rms):
            if gq.dim() == 1:
                dot = v @ gq.to(v.dtype)  # (N, T)
            elif gq.dim() == 2:
                dot = _SampleDot.apply(v, gq.to(v.dtype))  # (N, T)
            else:
                dot = torch.linalg.vecdot(v, gq.to(v.dtype))  # (N, T)
            logits.append(dot.float() * r.squeeze(-1))  # (N, T), float32 even under bf16
        alpha = torch.softmax(torch.stack(logits), dim=0)  # (S, N, T)
        return alpha

    def mix(self, values, alpha):
        """h = sum_i alpha_i v_i, differentiable in ``alpha`` (S, N, T) and every value (N, T, D)."""
        return _WeightedSum.apply(alpha, *values)  # (N, T, D)


class _WeightedSum(torch.autograd.Function):
    """h = sum_i alpha_i v_i into one output buffer, bit-identical to the autograd expression
    ``sum_i alpha_i.to(v_i.dtype) * v_i`` (same roundings: products in v_i's dtype, then the sum).

    Autograd's version allocates a fresh (N, T, D) product and a fresh partial sum per source, and on
    CPU those allocations (page faults in glibc's allocator) cost more than the arithmetic. Here the
    products go through one scratch buffer and the sum accumulates in place: dense DAR on DiT-S/2 went
    from about 1.30x to 1.20x the residual step (benchmarks/bench_dar_overhead.py, one CPU thread). (``addcmul_`` would save the scratch pass but fuses multiply-add,
    which changes the last bit.) Once differentiable: nothing takes second derivatives of routing.
    """

    @staticmethod
    def forward(ctx, alpha, *values):
        a = alpha.unsqueeze(-1)  # (S, N, T, 1), float32
        out_dtype = values[0].dtype
        for v in values[1:]:
            out_dtype = torch.promote_types(out_dtype, v.dtype)
        h = (a[0].to(values[0].dtype) * values[0]).to(out_dtype)  # (N, T, D)
        scratch = {}  # dtype -> (N, T, D) buffer for the products
        for a_i, v in zip(a[1:], values[1:]):
            buf = scratch.setdefault(v.dtype, torch.empty_like(v))
            torch.mul(a_i.to(v.dtype), v, out=buf)  # (N, T, D)
            h.add_(buf)
        ctx.save_for_backward(alpha, *values)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h):
        alpha, *values = ctx.saved_tensors
        a = alpha.unsqueeze(-1)  # (S, N, T, 1)
        grad_alpha = torch.zeros_like(alpha) if ctx.needs_input_grad[0] else None  # (S, N, T)
        grads = []
        for i, (a_i, v) in enumerate(zip(a, values)):
            g = grad_h.to(v.dtype)  # (N, T, D)
            if grad_alpha is not None:
                grad_alpha[i] = torch.linalg.vecdot(g, v)  # (N, T)
            grads.append(g * a_i.to(v.dtype) if ctx.needs_input_grad[i + 1] else None)  # (N, T, D)
        return (grad_alpha, *grads)


class _SampleDot(torch.autograd.Function):
    """dot[n, t] = v[n, t] . q[n] for a per-sample query (static_t). The forward is the batched matmul
    that ``einsum("ntd,nd->nt")`` runs (same numbers); the backward is written out because the one
    autograd derives (a batched outer product and a transposed batched matmul) cost several times the
    forward on CPU. Both gradients are exact products or the same reduction as autograd's (bit for bit
    on CPU, checked against the einsum form in float32 and in the source layouts the model produces).
    """

    @staticmethod
    def forward(ctx, v, q):
        ctx.save_for_backward(v, q)
        return torch.bmm(v, q.unsqueeze(-1)).squeeze(-1)  # (N, T)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        v, q = ctx.saved_tensors
        grad_v = grad.unsqueeze(-1) * q.unsqueeze(1) if ctx.needs_input_grad[0] else None  # (N, T, D)
        grad_q = None
        if ctx.needs_input_grad[1]:  # q_grad[n] = v[n]^T grad[n], (N, D)
            if v.is_contiguous():  # (1 x T) @ (T x D): fast; on CPU the same numbers as the form below
                grad_q = torch.bmm(grad.unsqueeze(1), v).squeeze(1)
            else:  # autograd's form, fast when v^T is contiguous (v_0 comes from a transposed conv)
                grad_q = torch.bmm(v.transpose(1, 2), grad.unsqueeze(-1)).squeeze(-1)
        return grad_v, grad_q


class DARRouting(nn.Module):
    """Every sublayer input is a learned, timestep-aware softmax mixture of earlier outputs (dar.md).

    Our decisions where the paper is silent (dar.md §2, §5): queries zero-initialised (uniform
    routing at init), softmax in float32, the adaLN gate stays inside v_l. Also ours: sublayer 1 has
    no aggregator, because its only source is v_0 and a softmax over one source is identically 1
    (its parameters could never learn); ``h_1 = v_0`` as in dar.md §1.
    """

    def __init__(self, depth: int, dim: int, query: str = "static_t", chunk_size: int = 4,
                 own_t_query: bool = False):
        super().__init__()
        self.depth = depth
        # A model converted from a residual one keeps its t_embedder for conditioning, so static_t
        # cannot zero that layer to start as static (dar.md §2): its e(t) passes through a linear of
        # its own instead, zero-initialised, so that e(t) = 0 at the start all the same.
        self.t_query = nn.Linear(dim, dim) if own_t_query else None
        self.num_sublayers = 2 * depth
        self.chunk_size = chunk_size
        self.sources = {
            l: dar_sources(l, self.num_sublayers, chunk_size) for l in range(2, self.num_sublayers + 2)
        }
        self.aggregators = nn.ModuleDict({str(l): Aggregator(dim, query) for l in self.sources})
        # last aggregator that reads each source, so finished sources can be released early
        self._last_use = {}
        for l, srcs in self.sources.items():
            for i in srcs:
                self._last_use[i] = max(self._last_use.get(i, 0), l)

    def route_sources(self) -> dict[int, tuple[int, ...]]:
        return {1: (0,), **self.sources}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The uniform start: every query 0 (w_l, W_q and the own t_query), every key norm weight 1."""
        for agg in self.aggregators.values():
            agg.norm_weight.fill_(1.0)
            q = agg.query.weight if isinstance(agg.query, nn.Linear) else agg.query
            q.zero_()
        if self.t_query is not None:
            self.t_query.weight.zero_()
            self.t_query.bias.zero_()

    def _add_source(self, stream: _Stream, i: int, v: torch.Tensor) -> None:
        stream.values[i] = v
        stream.last = v
        ms = v.float().pow(2).mean(-1, keepdim=True)  # (N, T, 1)
        stream.inv_rms[i] = torch.rsqrt(ms + self.aggregators[str(2)].eps)

    def begin(self, v0, t_emb, tap: Tap) -> _Stream:
        stream = _Stream(tap, t_emb if self.t_query is None else self.t_query(t_emb))  # (N, D)
        self._add_source(stream, 0, tap("z_0", v0))
        return stream

    def _aggregate(self, stream: _Stream, l: int) -> torch.Tensor:
        agg = self.aggregators[str(l)]
        # a skipped block (DiT.edited) wrote no outputs: its sources leave the softmax, which renormalises
        srcs = [i for i in self.sources[l] if i in stream.values]
        values = [stream.values[i] for i in srcs]
        # dynamic queries read v_{l-1}, the latest output (after a skipped block: the one before it)
        q = agg.make_query(stream.t_emb, stream.last)
        alpha = stream.tap(f"alpha_{l}", agg(values, [stream.inv_rms[i] for i in srcs], q))  # (S, N, T)
        h = agg.mix(values, alpha)  # (N, T, D)
        for i in srcs:  # drop what no later aggregator reads (autograd keeps what it needs)
            if self._last_use[i] == l:
                stream.values.pop(i)
                stream.inv_rms.pop(i)
        return h

    def read(self, stream: _Stream, l: int) -> torch.Tensor:
        if l == 1:
            return stream.values[0]  # h_1 = v_0
        h = self._aggregate(stream, l)
        if l % 2 == 1:  # the attention input of block k + 1 is the state z_k
            h = stream.tap(f"z_{(l - 1) // 2}", h)
        return h

    def write(self, stream: _Stream, l: int, v: torch.Tensor) -> None:
        self._add_source(stream, l, v)

    def end(self, stream: _Stream) -> torch.Tensor:
        h = self._aggregate(stream, self.num_sublayers + 1)
        return stream.tap(f"z_{self.depth}", h)  # (N, T, D)

    def write_read(self, stream: _Stream, l: int, v: torch.Tensor, recompute: bool = False):
        """``write`` then ``read`` of sublayer l + 1, as ``(make, args)``; an aggregate is kept as it is
        (it reads sources the stream lets go once read)."""
        self.write(stream, l, v)
        return _same, (self.read(stream, l + 1),)
