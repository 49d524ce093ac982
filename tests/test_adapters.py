"""The generic escape hatch: any nn.Module with a block list profiles like our DiT."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dardiag.adapters import generic_subject
from dardiag.errors import DardiagError
from dardiag.engine.config import Analyses
from dardiag.api import profile


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


class TwoStreamBlock(nn.Module):
    """Returns (context, hidden) like SD3/Flux blocks: the image stream is the second element."""

    def __init__(self, dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, *, hidden_states, context):
        return context, hidden_states + self.mlp(hidden_states + context.mean(1, keepdim=True))


class Toy(nn.Module):
    """Patchify 1x1, a few two-stream blocks, a linear head; called as ``toy(x, t)``."""

    def __init__(self, channels=3, dim=16, depth=3):
        super().__init__()
        self.embed = nn.Linear(channels, dim)
        self.t_embed = nn.Linear(1, dim)
        self.layers = nn.ModuleList(TwoStreamBlock(dim) for _ in range(depth))
        self.head = nn.Linear(dim, channels)

    def forward(self, x, t):
        N, C, H, W = x.shape
        h = self.embed(x.flatten(2).transpose(1, 2))  # (N, T, D)
        ctx = self.t_embed(t.float().view(N, 1, 1) / 1000.0).expand(N, 2, -1)  # (N, 2, D)
        for block in self.layers:
            ctx, h = block(hidden_states=h, context=ctx)
        return self.head(h).transpose(1, 2).reshape(N, C, H, W)


def toy_subject(**kw):
    torch.manual_seed(0)
    model = Toy()
    args = dict(blocks="layers", family="flow1000", input_shape=(3, 4, 4), name="toy",
                call=lambda m, x_t, t, y, cond: m(x_t, t), pick=lambda out: out[1])
    return generic_subject(model, **{**args, **kw})


def test_generic_subject_profiles():
    s = toy_subject()
    assert s.spec.depth == 3 and s.family.name == "flow1000" and s.num_classes == 0
    df = profile(s, samples=8, batch_size=4, noise_levels=[0.2, 0.8], analyses=Analyses(probe=False))
    for metric in ("act_rms", "grad_rms", "cos_prev", "cka"):
        rows = df[df.metric == metric]
        assert set(rows.block.astype(int)) == set(range(1 if metric == "cos_prev" else 0, 4)), metric
    assert (df[df.metric == "grad_rms"].value > 0).all()
    # z_0 is the embedded input (keyword hidden_states of the first block)
    act0 = df[(df.metric == "act_rms") & (df.block == 0)].value
    assert (act0 > 0).all()


def test_generic_block_lists_in_order():
    model = Toy(depth=2)
    model.extra = nn.ModuleList([TwoStreamBlock(16)])
    s = generic_subject(model, blocks=["layers", "extra"], call=lambda m, x, t, y, c: m(x, t), family="repa",
                        input_shape=(3, 4, 4), pick=lambda out: out[1])
    assert [t.module for t in s.spec.taps] == ["layers.0", "layers.0", "layers.1", "extra.0"]
    assert s.info["blocks"] == ["layers.0", "layers.1", "extra.0"]


def test_generic_errors():
    with pytest.raises(DardiagError, match="no submodule 'blocks'; its children are: embed, t_embed, layers"):
        toy_subject(blocks="blocks")
    with pytest.raises(DardiagError, match="unknown family"):
        toy_subject(family="ddim")
    with pytest.raises(DardiagError, match=r"input_shape must be \(C, H, W\)"):
        toy_subject(input_shape=(3, 4))
    s = toy_subject(pick=None)  # tuple outputs need pick: the error says so instead of guessing
    with pytest.raises(TypeError, match="pass pick="):
        profile(s, samples=4, batch_size=4, noise_levels=[0.5], analyses=Analyses(probe=False))


def test_generic_call_may_return_sample_objects():
    class Out:
        def __init__(self, sample):
            self.sample = sample

    s = toy_subject(call=lambda m, x_t, t, y, cond: Out(m(x_t, t)))
    out = s.call(s.model, torch.zeros(2, 3, 4, 4), torch.zeros(2), None, None)
    assert out.shape == (2, 3, 4, 4)
