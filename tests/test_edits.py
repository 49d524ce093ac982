"""Block edits (dardiag.hooks.edits): skipping a block equals an independent forward without it, for the
residual DiT (the block replaced by the identity) and for DAR (its outputs removed from every later
softmax, against a naive stacked-softmax forward); reusing a contribution on some rows equals doing it on
the whole batch; the hook-based editing of any block list does the same on a plain residual network."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dardiag.adapters.generic import generic_subject
from dardiag.hooks.edits import BlockEdit
from dardiag.hooks.recorder import Keep, record
from dardiag.models.routing import dar_sources
from dardiag.adapters.dit import dit_editing, dit_subject
from dardiag.checkpoints import ModelInfo
from helpers import randomised_dit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(input_size=8, patch_size=2, in_channels=2, hidden_size=32, depth=3, num_heads=2, num_classes=3,
            learn_sigma=False)


def _inputs(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 8, 8, generator=g), torch.rand(n, generator=g), torch.randint(0, 3, (n,), generator=g)


def _identity_block(model, k):
    """An independent copy whose block k adds exactly nothing: both adaLN gates are zero."""
    ref = copy.deepcopy(model)
    D = model.config.hidden_size
    lin = ref.blocks[k - 1].adaLN_modulation[-1]
    with torch.no_grad():
        for chunk in (2, 5):  # gate_msa, gate_mlp
            lin.weight[chunk * D:(chunk + 1) * D] = 0
            lin.bias[chunk * D:(chunk + 1) * D] = 0
    return ref


@pytest.mark.parametrize("k", [1, 2, 3])
def test_residual_skip_equals_the_block_replaced_by_identity(k):
    model = randomised_dit(TINY, seed=1)
    x, t, y = _inputs()
    with torch.no_grad():
        with dit_editing(model).edit({k: BlockEdit()}):
            got = model(x, t, y)
        want = _identity_block(model, k)(x, t, y)
        plain = model(x, t, y)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert not torch.allclose(got, plain, atol=1e-3)  # the block mattered: the test can fail


def _naive_dar(model, x, t, y, skip=None):
    """DAR written out (dar.md §1-4): explicit RMSNorm keys, the sources stacked, softmax over the
    sources present; block ``skip`` computes nothing and is absent from every later softmax."""
    cfg = model.config
    L, S, D = 2 * cfg.depth, cfg.chunk_size, cfg.hidden_size
    vals = {0: model.x_embedder(x) + model.pos_embed}
    t_emb = model.t_embedder(t)
    c = t_emb + model.y_embedder(y, False)

    def mix(l):
        agg = model.routing.aggregators[str(l)]
        srcs = [i for i in dar_sources(l, L, S) if i in vals]
        V = torch.stack([vals[i] for i in srcs])  # (S, N, T, D)
        keys = V * torch.rsqrt(V.pow(2).mean(-1, keepdim=True) + agg.eps) * agg.norm_weight
        latest = vals[max(vals)]  # the latest output written: v_{l-1}, or the one before a skipped block
        if cfg.query == "dynamic":
            q = agg.query(latest)  # (N, T, D)
        elif cfg.query == "static_t":
            q = (agg.query + t_emb)[:, None]  # (N, 1, D)
        else:
            q = agg.query
        alpha = torch.softmax((keys * q).sum(-1) / math.sqrt(D), dim=0)  # (S, N, T)
        return (alpha[..., None] * V).sum(0)

    for k, block in enumerate(model.blocks):
        if k + 1 == skip:
            continue
        mod = block.modulation(c)
        for j, branch in enumerate((block.attn_branch, block.mlp_branch)):
            l = 2 * k + j + 1
            vals[l] = branch(vals[0] if l == 1 else mix(l), mod)
    return model.unpatchify(model.final_layer(mix(L + 1), c))


@pytest.mark.parametrize("query,chunk", [("static_t", 2), ("dynamic", 1)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_dar_skip_removes_the_block_from_every_later_softmax(query, chunk, k):
    model = randomised_dit({**TINY, "routing": "dar", "query": query, "chunk_size": chunk}, seed=2)
    x, t, y = _inputs(1)
    with torch.no_grad():
        assert torch.allclose(model(x, t, y), _naive_dar(model, x, t, y), atol=1e-5)  # the reference is DAR
        with dit_editing(model).edit({k: BlockEdit()}):
            got = model(x, t, y)
        want = _naive_dar(model, x, t, y, skip=k)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, model(x, t, y), atol=1e-3)


def _recorded_parts(model, x, t, y):
    ed = dit_editing(model)
    keep = Keep()
    taps = list(dit_subject(model, ModelInfo.in_memory(model, family="sit", name="m")).spec.taps)
    with torch.no_grad(), record(model, taps, keep, grads=False):
        model(x, t, y)
    return {k: ed.parts(keep.seen, k) for k in range(1, model.config.depth + 1)}


@pytest.mark.parametrize("routing", ["residual", "dar"])
def test_reuse_on_some_rows_equals_reuse_on_the_whole_batch(routing):
    """The batched measurement (rows) and the cached sampler (whole batch: the block is not computed)
    are two code paths of one edit: they must agree."""
    model = randomised_dit({**TINY, "routing": routing, "chunk_size": 2}, seed=3)
    x, t, y = _inputs(2)
    x_old, _, _ = _inputs(3)
    parts = _recorded_parts(model, x_old, t, y)  # block 2's contribution at another input
    ed = dit_editing(model)
    with torch.no_grad():
        with ed.edit({2: BlockEdit(reuse=parts[2])}):
            whole = model(x, t, y)
        stacked = torch.cat([x, x])
        rows = BlockEdit(reuse=parts[2], rows=slice(4, 8))
        with ed.edit({2: rows}):
            both = model(stacked, torch.cat([t, t]), torch.cat([y, y]))
        plain = model(x, t, y)
    assert torch.allclose(both[4:], whole, atol=1e-5)
    assert torch.allclose(both[:4], plain, atol=1e-5)  # the other rows compute as usual
    assert not torch.allclose(whole, plain, atol=1e-4)


def test_reusing_the_contribution_of_the_same_input_changes_nothing():
    model = randomised_dit({**TINY, "routing": "dar", "chunk_size": 2}, seed=4)
    x, t, y = _inputs(4)
    parts = _recorded_parts(model, x, t, y)
    with torch.no_grad(), dit_editing(model).edit({k: BlockEdit(reuse=parts[k]) for k in (1, 3)}):
        got = model(x, t, y)
    assert torch.allclose(got, model(x, t, y), atol=1e-6)


class _Residual(nn.Module):
    """A plain residual network: z_k = z_{k-1} + f_k(z_{k-1}), blocks in a ModuleList."""

    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(d, d), nn.Tanh())

        def forward(self, x):
            return x + self.f(x)

    def __init__(self, d=8, depth=3):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(2, d)
        self.blocks = nn.ModuleList(self.Block(d) for _ in range(depth))
        self.out = nn.Linear(d, 2)

    def forward(self, x, skip=None, delta=None):
        h = self.inp(x.flatten(2).transpose(1, 2))  # (N, T, d)
        for k, b in enumerate(self.blocks, start=1):
            if k == skip:
                h = h + (delta if delta is not None else 0)
                continue
            h = b(h)
        return self.out(h).transpose(1, 2).reshape(x.shape)


def test_hook_editing_of_any_block_list():
    net = _Residual().eval()
    subject = generic_subject(net, blocks="blocks", family="sit", input_shape=(2, 4, 4),
                              call=lambda m, x_t, t, y, cond: m(x_t))
    x = torch.randn(3, 2, 4, 4)
    with torch.no_grad():
        with subject.editing.edit({2: BlockEdit()}):
            skipped = net(x)
        assert torch.allclose(skipped, net(x, skip=2), atol=1e-6)
        keep = Keep()
        with record(net, list(subject.spec.taps), keep, grads=False):
            net(x + 1)
        (delta,) = subject.editing.parts(keep.seen, 2)  # z_2 - z_1 at another input
        rows = torch.cat([x, x])
        with subject.editing.edit({2: BlockEdit(reuse=(delta,), rows=slice(3, 6))}):
            both = net(rows)
    assert torch.allclose(both[3:], net(x, skip=2, delta=delta), atol=1e-6)
    assert torch.allclose(both[:3], net(x), atol=1e-6)
    assert not torch.allclose(skipped, net(x), atol=1e-3)


def test_a_skip_cannot_apply_to_some_rows_only():
    with pytest.raises(ValueError, match="whole batch"):
        BlockEdit(rows=slice(0, 2))
