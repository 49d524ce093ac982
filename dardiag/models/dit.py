"""The Diffusion Transformer of Peebles & Xie (2023) with a swappable routing.

Parameter names follow the official DiT (and SiT, REPA) code so that their checkpoints load with
``strict=True``; the code is our own. Numerically the ``residual`` routing is the official model
(tests/test_models.py checks it against a file written by the official code). The network does not
know its noise process: DiT (epsilon) and SiT (velocity) differ only outside it (dardiag.families).

Legend: N batch, C latent channels, H/W latent side, T tokens, D hidden size, P patch size.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dardiag.models.config import DiTConfig
from dardiag.models.routing import DARRouting, ResidualRouting
from dardiag.hooks.edits import BlockEdit
from dardiag.hooks.recompute import checkpointed
from dardiag.hooks.sites import Site, SiteLayout, site_names


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # (N, T, D)


#################################################################################
#                          Embeddings for inputs                                #
#################################################################################


class PatchEmbed(nn.Module):
    """Non-overlapping P x P patches -> tokens; the conv is named ``proj`` as in timm/DiT."""

    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        x = self.proj(x)  # (N, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (N, T, D)


class TimestepEmbedder(nn.Module):
    """Sinusoid of the native timestep (256 frequencies) -> MLP, as in DiT/SiT."""

    def __init__(self, dim: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )  # (half,)
        args = t[:, None].float() * freqs[None]  # (N, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, dim)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t):
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)  # (N, 256)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (N, D)


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; the extra last row is the classifier-free-guidance null class."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, y, train: bool, force_drop_ids=None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            if force_drop_ids is None:
                drop = torch.rand(y.shape[0], device=y.device) < self.dropout_prob
            else:
                drop = force_drop_ids == 1
            y = torch.where(drop, self.num_classes, y)
        return self.embedding_table(y)  # (N, D)


#################################################################################
#                                 Core DiT                                      #
#################################################################################


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv (names as in timm's ``Attention``)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        N, T, D = x.shape
        qkv = self.qkv(x).reshape(N, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (N, heads, T, D / heads)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v)  # (N, heads, T, D / heads)
        x = x.transpose(1, 2).reshape(N, T, D)  # (N, T, D)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """Two adaLN-Zero sublayers. The block does not add anything: the routing decides the inputs."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, bias=True))

    def modulation(self, c):
        return self.adaLN_modulation(c).chunk(6, dim=1)  # six (N, D)

    def attn_branch(self, h, mod, run=None):
        shift, scale, gate = mod[0], mod[1], mod[2]
        return gate.unsqueeze(1) * (run or _call)(self._attention, h, shift, scale)  # (N, T, D)

    def mlp_branch(self, h, mod, run=None):
        shift, scale, gate = mod[3], mod[4], mod[5]
        return gate.unsqueeze(1) * (run or _call)(self._mlp, h, shift, scale)  # (N, T, D)

    # ``run(function, *args)`` runs these two, checkpointed or not; the gate stays outside: a checkpoint
    # recomputes up to the last tensor its function saved for the backward, and the gate's product saves
    # the gate, so inside it would make every recomputation run to the end (the output projections too)
    def _attention(self, h, shift, scale):
        return self.attn(modulate(self.norm1(h), shift, scale))  # (N, T, D)

    def _mlp(self, h, shift, scale):
        return self.mlp(modulate(self.norm2(h), shift, scale))  # (N, T, D)

    def _mlp_of(self, make, shift, scale, *args):
        return self._mlp(make(*args), shift, scale)  # (N, T, D)

    def forward(self, h, c, route, checkpoint=None):
        """Both sublayers from the attention input ``h`` (N, T, D). The block adds nothing: ``route(j, v,
        recompute)`` hands sublayer j's output to the model's routing; for j = 0 it returns ``(make,
        args)``, the MLP's input being ``make(*args)``.

        One call per block, so that a wrapper of the module (FSDP2 gathering its weights) sees the
        block's whole work; returns the MLP's output, the tensor whose gradient reaches the block first
        in the backward. ``checkpoint(function, *args)``: each sublayer's activations recomputed in the
        backward (``DiT.enable_gradient_checkpointing``); the routing stays outside, but where it can
        say how to make the MLP's input again (residual: the stream plus the attention's output) that is
        recomputed too instead of kept.
        """
        run = checkpoint if checkpoint is not None and torch.is_grad_enabled() else None
        mod = self.modulation(c)  # six (N, D)
        make, args = route(0, self.attn_branch(h, mod, run), run is not None)
        shift, scale, gate = mod[3], mod[4], mod[5]
        v = gate.unsqueeze(1) * (run or _call)(self._mlp_of, make, shift, scale, *args)  # (N, T, D)
        route(1, v)
        return v


def _call(function, *args):
    return function(*args)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # two (N, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, T, P*P*C_out)


class DiT(nn.Module):
    """``model(x, t, y)`` with the family's native ``t``; returns ``(N, C_out, H, W)`` as DiT does."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        cfg = self.config = config
        D = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, D)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D, cfg.class_dropout_prob)
        # fixed 2-D sin-cos table; a parameter (not a buffer) because official files store it
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, D), requires_grad=False)
        self.blocks = nn.ModuleList(
            DiTBlock(D, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm) for _ in range(cfg.depth)
        )
        self.final_layer = FinalLayer(D, cfg.patch_size, cfg.out_channels)
        if cfg.routing == "residual":
            self.routing = ResidualRouting(cfg.depth)
        else:
            self.routing = DARRouting(cfg.depth, D, cfg.query, cfg.chunk_size, cfg.own_t_query)
            if cfg.reader_eps_per_source:
                self._scale_reader_eps()
        names = site_names(cfg.depth) + [f"alpha_{l}" for l in self.routing.route_sources() if l > 1]
        self.sites = nn.ModuleDict({name: Site() for name in names})
        self._edits: dict[int, BlockEdit] = {}  # set only inside ``edited``
        self._checkpoint = None  # set by enable_gradient_checkpointing
        if self.pos_embed.device.type != "meta":  # the loader builds on meta, then assigns weights
            self.initialize_weights()

    # ------------------------------------------------------------------ init
    def initialize_weights(self):
        """DiT's initialisation (xavier linears, adaLN-Zero, zero output head) plus DAR's zero queries."""

        def _basic_init(module):
            if isinstance(module, nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        self.pos_embed.data.copy_(sincos_pos_embed(self.config.hidden_size, self.config.grid_size))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)
        if self.config.routing == "dar":
            self.routing.reset_parameters()  # xavier above touched W_q and t_query: uniform start again
            if self.config.query == "static_t" and not self.config.own_t_query:
                # paper: e(t) = 0 at init, so static_t starts as pure static
                nn.init.zeros_(self.t_embedder.mlp[2].weight)
                nn.init.zeros_(self.t_embedder.mlp[2].bias)

    def _scale_reader_eps(self):
        """LN(x / n; eps / n^2) = LN(x; eps) exactly: each LayerNorm that reads a mixture of n routed
        sources gets eps / n^2, so a uniform mixture (the sum / n) normalises exactly as the sum did
        (dardiag.convert: a dense DAR model then starts as the residual function, eps included)."""
        counts = {l: len(srcs) for l, srcs in self.routing.route_sources().items()}
        for k, block in enumerate(self.blocks):
            block.norm1.eps = block.norm1.eps / counts[2 * k + 1] ** 2
            block.norm2.eps = block.norm2.eps / counts[2 * k + 2] ** 2
        norm = self.final_layer.norm_final
        norm.eps = norm.eps / counts[2 * self.config.depth + 1] ** 2

    # ------------------------------------------------------------------ site interface
    def site_layout(self) -> SiteLayout:
        D = self.config.depth
        routes = {
            l: (f"sites.alpha_{l}", srcs) for l, srcs in self.routing.route_sources().items() if l > 1
        }
        return SiteLayout(
            depth=D,
            states=tuple(f"sites.z_{k}" for k in range(D + 1)),
            inputs=tuple(f"sites.h_{l}" for l in range(1, 2 * D + 1)),
            outputs=tuple(f"sites.v_{l}" for l in range(1, 2 * D + 1)),
            routes=routes,
        )

    def _tap(self, name, x):
        return self.sites[name](x)

    @contextmanager
    def edited(self, edits: dict[int, BlockEdit]):
        """Inside, every forward applies ``edits`` {block k (1..D): BlockEdit} (``dardiag.hooks.edits``):
        block k skipped, or its two sublayer outputs replaced by given ones. An edit of the whole batch
        does not compute the block (nor, in DAR, its aggregators), and its sites do not fire."""
        bad = [k for k in edits if not 1 <= k <= self.config.depth]
        if bad:
            raise ValueError(f"blocks {bad} outside 1..{self.config.depth}")
        before, self._edits = self._edits, dict(edits)
        try:
            yield
        finally:
            self._edits = before

    # ------------------------------------------------------------------ memory
    _supports_gradient_checkpointing = True  # the protocol of diffusers' models, which dardiag drives alike
    checkpoints_every_block = True  # and its own checkpointing covers every block (dardiag.engine.memory)

    @property
    def gradient_checkpointing(self) -> bool:
        return self._checkpoint is not None

    def enable_gradient_checkpointing(self, gradient_checkpointing_func=None) -> None:
        """Every sublayer's activations recomputed in the backward instead of kept (``torch.utils.checkpoint``,
        non-reentrant; ``gradient_checkpointing_func(function, *args)`` instead, when given). The states
        between sublayers are kept: the routing reads them, and the probe sites sit on them."""
        self._checkpoint = gradient_checkpointing_func or checkpointed

    def disable_gradient_checkpointing(self) -> None:
        self._checkpoint = None

    # ------------------------------------------------------------------ forward
    def unpatchify(self, x):
        c, p, g = self.config.out_channels, self.config.patch_size, self.config.grid_size
        x = x.reshape(x.shape[0], g, g, p, p, c)  # (N, H/P, W/P, P, P, C_out)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, g * p, g * p)  # (N, C_out, H, W)

    def forward(self, x, t, y, force_drop_ids=None):
        v0 = self.x_embedder(x) + self.pos_embed  # (N, T, D), token embedding v_0
        t_emb = self.t_embedder(t)  # (N, D)
        c = t_emb + self.y_embedder(y, self.training, force_drop_ids)  # (N, D)
        stream = self.routing.begin(v0, t_emb, self._tap)
        for k, block in enumerate(self.blocks):
            edit = self._edits.get(k + 1)
            if edit is not None and edit.rows is None:  # block k+1 is not computed (ablation, a cache hit)
                for j in range(2 if edit.reuse is not None else 0):  # skip: nothing written, no source
                    self.routing.write(stream, 2 * k + j + 1, edit.reuse[j])
                continue

            def route(j, v, recompute=False, l0=2 * k + 1, edit=edit):  # sublayer l0 + j wrote v
                if edit is not None:  # some rows take a reused output instead
                    v = edit.put(j, v)
                v = self._tap(f"v_{l0 + j}", v)
                if j == 1:
                    return self.routing.write(stream, l0 + 1, v)
                make, args = self.routing.write_read(stream, l0, v, recompute)  # the input of sublayer l0 + 1
                return (lambda *a, l=l0 + 1: self._tap(f"h_{l}", make(*a))), args

            block(self._tap(f"h_{2 * k + 1}", self.routing.read(stream, 2 * k + 1)), c, route, self._checkpoint)
        z = self.routing.end(stream)  # (N, T, D)
        out = self.final_layer(z, c)  # (N, T, P*P*C_out)
        return self.unpatchify(out)  # (N, C_out, H, W)


def sincos_pos_embed(dim: int, grid_size: int) -> torch.Tensor:
    """2-D sin-cos position table (1, grid^2, dim): first half encodes the row, second the column."""

    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))  # (d/2,)
        out = np.einsum("m,d->md", pos.reshape(-1), omega)  # (M, d/2)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, d)

    ww, hh = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))
    emb = np.concatenate([one_axis(dim // 2, ww), one_axis(dim // 2, hh)], axis=1)  # (grid^2, dim)
    return torch.from_numpy(emb).float().unsqueeze(0)
