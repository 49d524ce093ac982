"""The router of a routed diffusers transformer: DAR's softmax over depth on its image stream.

``DepthRouter`` owns every aggregator (dardiag's own ``Aggregator``: RMS-normalised keys folded into
the query, softmax over sources in float32, no stacked source tensor), the static_t timestep query,
and the probe sites; the model's grafted blocks (``graft.py``) call it. Two levels:

**Block level** (any class of the table). Source v_0 is the image stream entering the first block;
v_i (i >= 1) is what block i and anything the model does before block i+1 changed: the stream
arriving at block i+1 minus block i's routed input (the last block: its output minus its input). The
input of block k is h_k = g_k sum_i alpha_{i->k} v_i over i < k, and the final aggregate (read by the
model's output layers in place of the last block's output) mixes all D+1 sources.

The gain g_k is ours, not the paper's. The paper routes *sublayers* of a pre-norm DiT, whose stream is
read only by LayerNorms, so the uniform start (the sum / n) is harmless. A diffusers block is a black
box that also adds its input to its own output (its internal residual), so its input's scale is not
free: with uniform weights the mixture is the residual sum / k, and only g_k = k (the initial value,
one scalar per aggregator, trained in full) gives the block exactly what the source model gave it.

**Sublayer level** (classes whose image stream the sublayer table names, ``sublayers.py``): the
paper's gain-free form. Sublayer l (2k-1 attention, 2k MLP of block k) reads h_l = sum_i alpha v_i over
v_0 .. v_{l-1}; its LayerNorm gets eps / l^2, so the uniform start LN(sum / l; eps / l^2) = LN(sum; eps)
is exact (``dardiag.convert.to_dar`` derives it); v_{2k-1} is the block's state after its attention
minus its input, v_{2k} its output minus that state.

Our decisions, as for dardiag's DiT (dar.md §2): queries zero-initialised (uniform routing), softmax in
float32. static_t: the converted model's own timestep embedding is not reachable generically (each
class embeds time its own way), so the router embeds the noise level itself (DiT's sinusoid + MLP),
read off the timestep the model's forward receives; the MLP's last layer is zero-initialised, so
e(t) = 0 at the start.

Legend: N batch, T image tokens, D width, S sources of one aggregator.
"""

from __future__ import annotations

import torch
from torch import nn

from dardiag.adapters.routed.spec import RoutingSpec
from dardiag.errors import DardiagError
from dardiag.hooks.sites import Site
from dardiag.models.dit import TimestepEmbedder
from dardiag.models.routing import Aggregator

T_SCALE = 1000.0  # the router's timestep embedding sees the noise level times this (DiT's range)


class Pass:
    """One forward's routing state (set by the model's forward, read and written by its blocks)."""

    def __init__(self, timestep, first_input, image_tokens: int | None, count_tokens):
        self.timestep = timestep  # what the forward received (static_t embeds it)
        self.first_input = first_input  # its first tensor argument: the latents (image tokens, below)
        self.image_tokens = image_tokens  # T given by dardiag's call, or None
        self._count = count_tokens
        self.reset()

    def reset(self) -> None:
        """A fresh stream: the first block starts it (models that run their blocks twice restart it)."""
        self.values: dict[int, torch.Tensor] = {}  # v_i by source index
        self.inv_rms: dict[int, torch.Tensor] = {}  # 1 / rms(v_i), (N, T, 1) float32
        self.last: torch.Tensor | None = None  # the latest source (the dynamic query reads it)
        self.h: torch.Tensor | None = None  # the routed input of the block running now
        self.t_emb: torch.Tensor | None = None  # static_t's e(t), (N, D)

    def tokens(self) -> int:
        """T, the image tokens of a joint or folded stream: dardiag's call says it; else the first block's
        image-only input did; else counted from the latents the model received."""
        if self.image_tokens:
            return self.image_tokens
        x = self.first_input
        if torch.is_tensor(x) and x.dim() == 3:  # packed latents (N, T, C)
            self.image_tokens = x.shape[1]
        elif torch.is_tensor(x) and x.dim() in (4, 5):  # (N, C, [F,] H, W)
            self.image_tokens = int(self._count(tuple(x.shape[1:])))
        else:
            raise DardiagError("cannot tell the image tokens of this routed model's joint stream from its "
                               "inputs; call it inside dardiag.adapters.routed.image_tokens(model, T)")
        return self.image_tokens


class DepthRouter(nn.Module):
    """Aggregators, gains, the static_t timestep query and the probe sites of one routed model."""

    def __init__(self, spec: RoutingSpec):
        super().__init__()
        self.spec = spec
        self.routes = spec.routes()
        self.aggregators = nn.ModuleDict({str(l): Aggregator(spec.dim, spec.query) for l in self.routes})
        self._slot = {l: j for j, l in enumerate(self.routes)}
        # block level: g_l, one per aggregator, starts at its source count (the module docstring says why)
        self.gain = nn.Parameter(torch.ones(len(self.routes))) if spec.level == "block" else None
        self.t_embedder = TimestepEmbedder(spec.dim) if spec.query == "static_t" else None
        names = [f"z_{k}" for k in range(spec.depth + 1)] + [f"alpha_{l}" for l in self.routes]
        if spec.level == "sublayer":
            names += [f"{s}_{l}" for s in ("h", "v") for l in range(1, 2 * spec.depth + 1)]
        self.sites = nn.ModuleDict({n: Site() for n in names})
        self.current: Pass | None = None  # the forward running now (graft.py sets it)
        self.block_ctx: dict | None = None  # sublayer level: the block running now
        self.count_tokens = None  # (C, [F,] H, W) -> T, set by graft
        self.forced_tokens: int | None = None  # T given by the caller (graft.image_tokens)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The exact start: queries 0 (uniform weights), key norm weights 1, gains = source counts, e(t) = 0."""
        for agg in self.aggregators.values():
            agg.norm_weight.fill_(1.0)
            (agg.query.weight if isinstance(agg.query, nn.Linear) else agg.query).zero_()
        if self.gain is not None:
            self.gain.copy_(torch.tensor([float(len(s)) for s in self.routes.values()]))
        if self.t_embedder is not None:  # DiT's init for the first layer (seeded: a conversion is reproducible)
            first, last = self.t_embedder.mlp[0], self.t_embedder.mlp[2]
            g = torch.Generator().manual_seed(0)
            first.weight.copy_(torch.randn(first.weight.shape, generator=g) * 0.02)
            first.bias.zero_()
            last.weight.zero_()
            last.bias.zero_()

    # ------------------------------------------------------------------ sources and mixtures
    def tap(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.sites[name](x)

    def add(self, p: Pass, i: int, v: torch.Tensor) -> torch.Tensor:
        p.values[i], p.inv_rms[i], p.last = v, self._inv_rms(v), v
        return v

    def _inv_rms(self, v: torch.Tensor) -> torch.Tensor:
        eps = self.aggregators[str(next(iter(self.routes)))].eps
        norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True, dtype=torch.float32)  # one fused pass  (N, T, 1)
        return torch.rsqrt(norm.square() / v.shape[-1] + eps)  # (N, T, 1)

    def mix(self, l: int, values: list, inv_rms: list, t_emb, last) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_l (N, T, D), alpha (S, N, T)) of aggregator ``l`` over ``values`` in its source order."""
        agg = self.aggregators[str(l)]
        alpha = agg(values, inv_rms, agg.make_query(t_emb, last))  # (S, N, T), float32
        # the gain scales the weights, not the (N, T, D) sum: one pass fewer each way, and at the start
        # g alpha_i = k / k, so the sum is the residual sum itself
        weights = alpha * self.gain[self._slot[l]] if self.gain is not None else alpha  # (S, N, T)
        # contiguous: the sum takes the layout of v_0, which a patch embedding leaves transposed, and every op of
        # the next block would then run on that layout (3x slower layer norms on Wan-shaped models)
        return agg.mix(values, weights).contiguous(), alpha  # (N, T, D)

    def _mix_pass(self, p: Pass, l: int) -> torch.Tensor:
        srcs = self.routes[l]
        h, alpha = self.mix(l, [p.values[i] for i in srcs], [p.inv_rms[i] for i in srcs], p.t_emb, p.last)
        self.tap(f"alpha_{l}", alpha)
        return h

    def _start(self, p: Pass, a: torch.Tensor) -> torch.Tensor:
        """The first block: a fresh stream whose source v_0 is the arriving image ``a`` (N, T, D)."""
        p.reset()
        if self.t_embedder is not None:
            p.t_emb = self.t_embedder(self._noise_level(p.timestep, a) * T_SCALE)  # (N, D)
        return self.add(p, 0, self.tap("z_0", a))

    def _noise_level(self, timestep, a: torch.Tensor) -> torch.Tensor:
        """Each sample's noise level (N,) from the timestep the forward received: per sample, or per frame
        or token (then the noisiest: clean anchor frames sit at 0)."""
        N, s = a.shape[0], self.spec
        if timestep is None:
            raise DardiagError(f"this static_t model reads its timestep from the forward's {s.timestep_arg!r} "
                               "argument, and the call passed none")
        t = torch.as_tensor(timestep, device=a.device).float()
        t = t.reshape(t.shape[0] if t.dim() else 1, -1)  # (N or 1, tokens or 1)
        t = t.amax(1) if s.t_noise > s.t_clean else t.amin(1)  # (N,)
        if t.shape[0] not in (1, N):
            raise DardiagError(f"the timestep holds {t.shape[0]} samples, the image stream {N}")
        return ((t - s.t_clean) / (s.t_noise - s.t_clean)).expand(N)  # (N,)

    # ------------------------------------------------------------------ block level
    def enter(self, p: Pass, k: int, a: torch.Tensor) -> torch.Tensor:
        """Block k's routed input, from the image ``a`` (N, T, D) arriving at it."""
        if k == 1:
            h = self._start(p, a)
        else:
            self.add(p, 2 * k - 2, a - p.h)  # v_{k-1}: what happened since block k-1's input
            h = self.tap(f"z_{k - 1}", self._mix_pass(p, 2 * k - 1))
        p.h = h
        return h

    def leave(self, p: Pass, k: int, o: torch.Tensor) -> torch.Tensor:
        """The last block: its image output ``o`` (N, T, D) -> the final aggregate."""
        self.add(p, 2 * k, o - p.h)  # v_D
        return self.tap(f"z_{k}", self._mix_pass(p, 2 * k + 1))

    # ------------------------------------------------------------------ sublayer level
    def sub_enter(self, p: Pass, k: int, a: torch.Tensor) -> dict:
        """Block k's attention input h_{2k-1}; -> the block's context (``sub_mlp`` reads it)."""
        if k == 1:
            h = self._start(p, a)  # h_1 = v_0
        else:
            h = self.tap(f"z_{k - 1}", self._mix_pass(p, 2 * k - 1))
        p.h = h = self.tap(f"h_{2 * k - 1}", h)
        # a snapshot: under gradient checkpointing the block runs again in the backward, and must then
        # read the same sources (the stream has grown since)
        return {"k": k, "h": h, "values": dict(p.values), "inv_rms": dict(p.inv_rms), "t_emb": p.t_emb}

    def sub_mlp(self, ctx: dict, x: torch.Tensor) -> torch.Tensor:
        """Inside block k: its state ``x`` after the attention (its input + v_{2k-1}) -> h_{2k}. Writes
        only into ``ctx`` (a recomputation under checkpointing may call it twice)."""
        if ctx is None:
            raise RuntimeError("a routed norm ran outside its routed block")
        l = 2 * ctx["k"]
        v = x - ctx["h"]  # v_{2k-1}  (N, T, D)
        r = self._inv_rms(v)
        srcs = self.routes[l][:-1]  # all but v_{l-1}, which is v
        h, alpha = self.mix(l, [ctx["values"][i] for i in srcs] + [v], [ctx["inv_rms"][i] for i in srcs] + [r],
                            ctx["t_emb"], v)
        ctx.update(v_attn=v, inv_attn=r, h_mlp=h, alpha_mlp=alpha, x_mid=x)
        return h

    def sub_leave(self, p: Pass, ctx: dict, o: torch.Tensor, last: bool) -> torch.Tensor | None:
        """After block k: its sources v_{2k-1}, v_{2k} into the stream; the last block: the final aggregate."""
        if "v_attn" not in ctx:
            raise RuntimeError(f"block {ctx['k']}'s MLP norm never ran: its sublayers are not as the table says")
        k = ctx["k"]
        self.tap(f"alpha_{2 * k}", ctx["alpha_mlp"])
        self.tap(f"h_{2 * k}", ctx["h_mlp"])
        p.values[2 * k - 1], p.inv_rms[2 * k - 1] = self.tap(f"v_{2 * k - 1}", ctx["v_attn"]), ctx["inv_attn"]
        self.add(p, 2 * k, self.tap(f"v_{2 * k}", o - ctx["x_mid"]))
        if not last:
            return None
        return self.tap(f"z_{k}", self._mix_pass(p, 2 * k + 1))
