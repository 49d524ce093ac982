"""Profiling DAR models (dar.md; diagnostics.md §2, §3, §5): routing weights and aggregated states.

Tiny DAR DiTs (depth 2 = 4 sublayers, width 32, 16 tokens) in the SiT family, wrapped as in-memory
subjects. References are captured with plain forward hooks on the model's sites and recomputed by hand.

Legend: N images, T tokens, D hidden size, S sources of one aggregator.
"""

from __future__ import annotations

import math

import pytest
import torch

from dardiag.checkpoints import ModelInfo
from dardiag.models import DiT, DiTConfig, dar_sources
from dardiag.engine.config import Analyses
from dardiag.adapters.dit import dit_subject
from dardiag.api import profile

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
DEPTH, SUBLAYERS = 2, 4
LEVELS = (0.2, 0.5, 0.9)
N = 8
QUERIES = ("static", "static_t", "dynamic")
CHUNKS = (1, 2, 4)
FAST = Analyses(probe=False, cka=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


def dar_model(query: str, chunk: int, seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    return DiT(DiTConfig(**TINY, routing="dar", query=query, chunk_size=chunk)).eval()


@torch.no_grad()
def randomise(model: DiT, seed: int = 1) -> DiT:
    """Give the zero-initialised parameters (adaLN-Zero, output head, e(t), DAR queries) random values."""
    g = torch.Generator().manual_seed(seed)
    mods = [b.adaLN_modulation[-1] for b in model.blocks]
    mods += [model.final_layer.adaLN_modulation[-1], model.final_layer.linear, model.t_embedder.mlp[2]]
    params = [p for m in mods for p in m.parameters()]
    params += [p for name, p in model.routing.named_parameters() if "query" in name]
    for p in params:
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    for name, p in model.routing.named_parameters():
        if "norm_weight" in name:
            p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    return model


def subject(model: DiT, name: str):
    return dit_subject(model, ModelInfo.in_memory(model, family="sit", name=name))


def make_inputs(seed: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x0": torch.randn(N, 4, 8, 8, generator=g), "y": torch.randint(0, 10, (N,), generator=g),
            "noise": torch.randn(N, 4, 8, 8, generator=g)}


def run(model, name="dar", analyses=FAST, levels=LEVELS, batch_size=4, inputs=None):
    return profile(subject(model, name), inputs=inputs or make_inputs(), noise_levels=list(levels),
                   batch_size=batch_size, samples=None, analyses=analyses)


def alphas(df) -> dict[tuple[float, int], dict[int, float]]:
    """{(noise_level, sublayer): {source: mean alpha}}."""
    out: dict = {}
    for r in df[df.metric == "route_alpha"].itertuples():
        out.setdefault((round(r.noise_level, 6), int(r.sublayer)), {})[int(r.source)] = r.value
    return out


VARIANTS = pytest.mark.parametrize("query,chunk", [(q, s) for q in QUERIES for s in CHUNKS],
                                   ids=[f"{q}-c{s}" for q in QUERIES for s in CHUNKS])


#################################################################################
#                               Routing weights                                 #
#################################################################################


@VARIANTS
def test_alpha_at_init_is_uniform_over_the_dar_sources(query, chunk):
    model = dar_model(query, chunk)
    df = run(model)
    a = alphas(df)
    levels = sorted(df.noise_level.dropna().unique())
    assert len(levels) == len(LEVELS)
    # every aggregator (2..2D+1; sublayer 1 has none) at every level, with exactly the dar_sources
    assert sorted(a) == sorted((round(lv, 6), l) for lv in levels for l in range(2, SUBLAYERS + 2))
    for (lv, l), by_src in a.items():
        srcs = dar_sources(l, SUBLAYERS, chunk)
        assert tuple(sorted(by_src)) == srcs
        assert sum(by_src.values()) == pytest.approx(1.0, abs=1e-6)
        for v in by_src.values():
            assert v == pytest.approx(1.0 / len(srcs), abs=1e-6)
    ent = df[df.metric == "route_entropy"]
    assert len(ent) == len(LEVELS) * (SUBLAYERS + 1 - 1)
    for r in ent.itertuples():
        assert r.value == pytest.approx(math.log(len(dar_sources(int(r.sublayer), SUBLAYERS, chunk))), abs=1e-6)
    assert not (df.metric == "route_importance").any()  # counterfactual gates are for residual models
    assert set(df.routing) == {f"dar-{query}-c{chunk}"}


def test_source_sets_follow_the_chunk_layout():
    """The layout of dar.md §3 spelled out for 4 sublayers (v_0 = embedding, final aggregator l = 5)."""
    want = {
        1: {2: (0, 1), 3: (0, 1, 2), 4: (0, 1, 2, 3), 5: (0, 1, 2, 3, 4)},
        2: {2: (0, 1), 3: (0, 2), 4: (0, 2, 3), 5: (0, 2, 3, 4)},
        4: {2: (0, 1), 3: (0, 1, 2), 4: (0, 1, 2, 3), 5: (0, 1, 2, 3, 4)},
    }
    for chunk, table in want.items():
        a = alphas(run(dar_model("static", chunk), levels=(0.5,)))
        assert {l: tuple(sorted(s)) for (_, l), s in a.items()} == table


class Capture:
    """Forward hooks on the sites keep the live tensors (z states retain their gradients)."""

    def __init__(self, model: DiT):
        self.model, self.t = model, {}

    def __enter__(self):
        def hook(name):
            def fn(mod, args, out):
                if name.startswith("z_") and out.requires_grad:
                    out.retain_grad()
                self.t[name] = out
            return fn

        self.handles = [m.register_forward_hook(hook(n)) for n, m in self.model.sites.items()]
        self.handles.append(self.model.final_layer.register_forward_pre_hook(
            lambda mod, args: self.t.__setitem__("final_input", args[0])))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def sit_batch(inputs, level, sl):
    """SiT: t = 1 - noise_level, x_t = t x0 + (1 - t) eps, velocity target x0 - eps."""
    t = 1.0 - level
    x0, eps = inputs["x0"][sl], inputs["noise"][sl]
    return t * x0 + (1 - t) * eps, torch.full((x0.shape[0],), t), inputs["y"][sl], x0 - eps


def hand_metrics(model, inputs, level, batch_size):
    """act_rms / grad_rms of z_k, mean alpha and entropy, from hand captures, mean over minibatches."""
    sums: dict = {}
    nb = 0
    for start in range(0, N, batch_size):
        x_t, t, y, target = sit_batch(inputs, level, slice(start, start + batch_size))
        x_t.requires_grad_(True)
        with Capture(model) as cap:
            out = model(x_t, t, y)
        ((out[:, :4] - target) ** 2).mean().backward()
        c = cap.t
        for k in range(DEPTH + 1):
            l = 2 * k + 1  # z_k is the aggregator output feeding sublayer 2k+1 (2D+1: the final one)
            z = c[f"z_{k}"]
            if k > 0:
                vals = [c["z_0"] if i == 0 else c[f"v_{i}"] for i in dar_sources(l, SUBLAYERS, model.config.chunk_size)]
                alpha = c[f"alpha_{l}"]  # (S, N, T)
                mixed = sum(a.unsqueeze(-1) * v for a, v in zip(alpha, vals))  # (N, T, D)
                torch.testing.assert_close(z, mixed, rtol=1e-5, atol=1e-6)
                plain = sum(vals)  # what a residual stream would hold
                assert not torch.allclose(z, plain, rtol=1e-3, atol=1e-4)
            if k < DEPTH:
                # the attention input of block k+1 is z_k (a view of it: each site is its own node)
                assert c[f"h_{l}"]._base is z._base and torch.equal(c[f"h_{l}"], z)
            else:
                assert torch.equal(c["final_input"], z)
            sums.setdefault(("act", k), 0.0)
            sums[("act", k)] += z.detach().double().pow(2).mean(-1).sqrt().mean().item()
            sums.setdefault(("grad", k), 0.0)
            sums[("grad", k)] += z.grad.double().pow(2).mean(-1).sqrt().mean().item()
        for l in range(2, SUBLAYERS + 2):
            a = c[f"alpha_{l}"].detach().double()  # (S, N, T)
            srcs = dar_sources(l, SUBLAYERS, model.config.chunk_size)
            for i, src in enumerate(srcs):
                sums[("alpha", l, src)] = sums.get(("alpha", l, src), 0.0) + a[i].mean().item()
            ent = -(a * a.log()).sum(0).mean().item()
            sums[("entropy", l)] = sums.get(("entropy", l), 0.0) + ent
        nb += 1
    return {k: v / nb for k, v in sums.items()}


@pytest.mark.parametrize("query,chunk", [("static_t", 2), ("dynamic", 1), ("static", 4)])
@pytest.mark.parametrize("batch_size", [8, 4])
def test_trained_like_alpha_and_states_match_hand_capture(query, chunk, batch_size):
    model = randomise(dar_model(query, chunk))
    inputs = make_inputs()
    df = run(model, inputs=inputs, batch_size=batch_size)
    a = alphas(df)
    non_uniform = 0
    for lv in LEVELS:
        ref = hand_metrics(model, inputs, lv, batch_size)
        for l in range(2, SUBLAYERS + 2):
            got = a[(round(lv, 6), l)]
            assert sum(got.values()) == pytest.approx(1.0, abs=1e-6)
            srcs = dar_sources(l, SUBLAYERS, chunk)
            for src in srcs:
                assert got[src] == pytest.approx(ref[("alpha", l, src)], rel=1e-5, abs=1e-7)
            non_uniform += max(abs(v - 1 / len(srcs)) for v in got.values()) > 1e-3
            ent = df[(df.metric == "route_entropy") & (df.sublayer == l) & ((df.noise_level - lv).abs() < 1e-9)]
            assert ent.value.item() == pytest.approx(ref[("entropy", l)], rel=1e-5)
        for metric, key in (("act_rms", "act"), ("grad_rms", "grad")):
            rows = df[(df.metric == metric) & ((df.noise_level - lv).abs() < 1e-9)].sort_values("block")
            assert rows.block.tolist() == list(range(DEPTH + 1))
            for k, v in zip(rows.block, rows.value):
                assert v == pytest.approx(ref[(key, int(k))], rel=1e-5), (metric, k)
    assert non_uniform > 0  # randomised queries really route non-uniformly


def test_static_t_routing_changes_with_the_noise_level():
    model = randomise(dar_model("static_t", 1))
    a = alphas(run(model, levels=(0.05, 0.95)))
    diffs = [abs(a[(0.05, l)][s] - a[(0.95, l)][s]) for l in range(2, SUBLAYERS + 2) for s in a[(0.05, l)]]
    assert max(diffs) > 1e-3


def test_dar_profile_has_every_symptom_and_no_nan():
    model = randomise(dar_model("dynamic", 2))
    df = run(model, analyses=Analyses(probe=False, cka=True))
    for metric in ("act_rms", "grad_rms", "cos_prev", "cka", "h_rms", "v_rms", "route_alpha", "route_entropy", "loss"):
        assert (df.metric == metric).any(), metric
    assert df.value.notna().all()
    cka = df[(df.metric == "cka") & (df.block == df.other_block)]
    assert cka.value.to_numpy() == pytest.approx(1.0, abs=1e-9)
