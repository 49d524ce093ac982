"""The reference DiT and its routings (dar.md), pinned on tiny configs against naive references.

Legend: N batch, T tokens, D hidden size, S sources of one aggregator.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch

from dardiag.checkpoints import load_model
from dardiag.models import DiT, DiTConfig, dar_sources, preset

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4,
            num_classes=10)  # 16 tokens
VARIANTS = [dict(routing="residual")] + [
    dict(routing="dar", query=q, chunk_size=s)
    for q in ("static", "static_t", "dynamic") for s in (1, 2, 4)
]


def variant_id(v: dict) -> str:
    return DiTConfig(**TINY, **v).routing_name


def tiny(seed: int = 0, **overrides) -> DiT:
    torch.manual_seed(seed)
    return DiT(DiTConfig(**{**TINY, **overrides})).eval()


def inputs(cfg: DiTConfig, n: int = 3, seed: int = 1, t=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)  # (N, C, H, W)
    if t is None:
        t = torch.randint(0, 1000, (n,), generator=g)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g)
    return x, torch.as_tensor(t), y


def zero_init_params(model: DiT) -> list[torch.nn.Parameter]:
    """The parameters the initialisation sets to zero on purpose (adaLN-Zero, output head, DAR)."""
    mods = [b.adaLN_modulation[-1] for b in model.blocks]
    mods += [model.final_layer.adaLN_modulation[-1], model.final_layer.linear]
    if model.config.routing == "dar" and model.config.query == "static_t":
        mods.append(model.t_embedder.mlp[2])  # e(t) = 0 at init (paper)
    params = [p for m in mods for p in m.parameters()]
    if model.config.routing == "dar":
        params += [p for name, p in model.routing.named_parameters() if "query" in name]
    return params


@torch.no_grad()
def randomise(model: DiT, std: float = 0.02, query_std: float | None = None, norm: bool = False):
    """Give the zero-initialised parameters small random values (at true init they are zero)."""
    for p in zero_init_params(model):
        p.normal_(0.0, std)
    if model.config.routing == "dar":
        D = model.config.hidden_size
        for agg in model.routing.aggregators.values():
            if query_std is not None:  # large enough to make routing visibly non-uniform
                q = agg.query.weight if isinstance(agg.query, torch.nn.Linear) else agg.query
                scale = query_std / math.sqrt(D) if q.dim() == 2 else query_std
                q.normal_(0.0, scale)
            if norm:
                agg.norm_weight.uniform_(0.5, 1.5)
    return model


@contextmanager
def capture(model: DiT, prefix: str):
    """Record the outputs of every ``sites.<prefix>*`` module for one forward; hooks removed after."""
    out, handles = {}, []
    for name, site in model.sites.items():
        if name.startswith(prefix):
            handles.append(site.register_forward_hook(
                lambda mod, args, res, name=name: out.__setitem__(name, res.detach().clone())))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


#################################################################################
#                          Fidelity to the official DiT                         #
#################################################################################


def test_official_checkpoint_reproduces_reference(official_ckpt, official_reference):
    model, info = load_model(official_ckpt, family="dit", num_heads=4)
    ref = official_reference
    assert not model.training
    with torch.no_grad():
        out = model(ref["x"], ref["t"], ref["y"])  # (N, 2C, H, W)
    assert out.shape == ref["out"].shape
    torch.testing.assert_close(out, ref["out"], atol=1e-5, rtol=0)


def test_residual_param_names_equal_official_keys(official_ckpt):
    official = torch.load(official_ckpt, map_location="cpu", weights_only=True)
    cfg = DiTConfig(input_size=16, patch_size=2, in_channels=1, hidden_size=128, depth=6,
                    num_heads=4, num_classes=10)
    ours = DiT(cfg).state_dict()
    assert list(ours) == list(official)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in official.items()}


def test_dit_xl2_parameter_count():
    with torch.device("meta"):
        model = DiT(preset("DiT-XL/2"))
    assert sum(p.numel() for p in model.parameters()) == 675_129_632  # checkpoints.md


#################################################################################
#                         Recording-free invariants                             #
#################################################################################


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_forward_is_deterministic_and_hooks_do_not_change_it(variant):
    model = randomise(tiny(**variant))
    x, t, y = inputs(model.config)
    with torch.no_grad():
        a = model(x, t, y)
        b = model(x, t, y)
        with capture(model, ""):  # every site hooked
            c = model(x, t, y)
    assert a.shape == (3, model.config.out_channels, 8, 8)
    assert torch.equal(a, b)
    assert torch.equal(a, c)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_parameter_gets_a_gradient(variant):
    model = randomise(tiny(**variant)).train()
    model.y_embedder.dropout_prob = 0.0  # keep the null-class row out of the comparison below
    x, t, y = inputs(model.config, n=4)
    out = model(x, t, y)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * w).sum().backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    no_grad = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert not any(p.requires_grad for n, p in model.named_parameters() if n == "pos_embed")


#################################################################################
#                                DAR routing                                    #
#################################################################################


def test_dar_sources_dense():
    for L in (2, 4, 8):
        for l in range(1, L + 1):
            assert dar_sources(l, L, 1) == tuple(range(l))
        assert dar_sources(L + 1, L, 1) == tuple(range(L + 1))


def test_dar_sources_chunked_examples():
    # depth 2, S = 2: chunks {1, 2}, {3, 4}; c_0 = v_0, c_1 = v_2
    assert [dar_sources(l, 4, 2) for l in range(1, 6)] == [
        (0,), (0, 1), (0, 2), (0, 2, 3), (0, 2, 3, 4)]
    # depth 28, S = 4 (the paper's c4 model)
    assert dar_sources(1, 56, 4) == (0,)
    assert dar_sources(4, 56, 4) == (0, 1, 2, 3)
    assert dar_sources(5, 56, 4) == (0, 4)
    assert dar_sources(8, 56, 4) == (0, 4, 5, 6, 7)
    assert dar_sources(9, 56, 4) == (0, 4, 8)


@pytest.mark.parametrize("S", [1, 2, 4])
def test_dar_sources_invariants_depth28(S):
    L = 56
    every = set()
    for l in range(1, L + 2):
        srcs = dar_sources(l, L, S)
        every |= set(srcs)
        assert list(srcs) == sorted(set(srcs)), "sources are distinct and in order"
        assert srcs[0] == 0, "the embedding is always a source"
        assert all(i < l for i in srcs), "only earlier outputs"
        if l <= L:  # dar.md §3, written as sets: chunk n holds sublayers (n-1)S+1 .. nS
            n = (l + S - 1) // S
            summaries = {m * S for m in range(n)}  # c_0 = v_0, c_m = v_{mS} of finished chunks
            own_chunk_before_l = set(range((n - 1) * S + 1, l))
            assert set(srcs) == summaries | own_chunk_before_l
            if l == (n - 1) * S + 1:  # first sublayer of a chunk sees only summaries
                assert set(srcs) == summaries
    assert every == set(range(L + 1))  # 57 distinct sources overall
    final = dar_sources(L + 1, L, S)
    assert final == tuple(range(0, L - S + 1, S)) + tuple(range(L - S + 1, L + 1))
    if S == 4:
        assert len(every) == 57
        assert len(final) == 18  # 14 summaries + the 4 raw outputs of the last chunk
    with pytest.raises(ValueError):
        dar_sources(0, L, S)
    with pytest.raises(ValueError):
        dar_sources(L + 2, L, S)


def test_model_routes_match_dar_sources():
    model = tiny(routing="dar", query="static", chunk_size=2)
    routes = model.routing.route_sources()
    assert routes == {l: dar_sources(l, 4, 2) for l in range(1, 6)}
    assert set(model.site_layout().routes) == set(range(2, 6))
    with capture(model, "alpha_") as alpha, torch.no_grad():
        model(*inputs(model.config))
    assert {name: a.shape[0] for name, a in alpha.items()} == {
        f"alpha_{l}": len(s) for l, s in routes.items() if l > 1}


def test_chunk_size_must_divide_sublayers():
    with pytest.raises(ValueError, match=r"use one of \[1, 2, 3, 6\]"):
        DiTConfig(depth=3, routing="dar", chunk_size=4)
    with pytest.raises(ValueError, match=r"\[1, 2, 3, 6\]"):
        DiTConfig(depth=3, routing="dar", chunk_size=0)
    DiTConfig(depth=3, routing="residual", chunk_size=4)  # ignored without DAR
    assert DiTConfig(depth=28, routing="dar", chunk_size=8).chunk_size == 8


@pytest.mark.parametrize("query", ["static", "static_t", "dynamic"])
@pytest.mark.parametrize("S", [1, 2, 4])
def test_dar_routing_is_uniform_at_init(query, S):
    model = tiny(routing="dar", query=query, chunk_size=S)
    with torch.no_grad():
        # adaLN-Zero makes every v_l (l >= 1) zero at init; give the gates values so that the
        # sources differ and uniformity comes from the zero queries alone
        for b in model.blocks:
            b.adaLN_modulation[-1].weight.normal_(0, 0.1)
    with capture(model, "alpha_") as alpha, torch.no_grad():
        model(*inputs(model.config))
    assert len(alpha) == 2 * model.config.depth  # aggregators for l = 2 .. 2D + 1
    for name, a in alpha.items():
        S_l = len(model.routing.sources[int(name.split("_")[1])])
        assert a.shape == (S_l, 3, 16)
        torch.testing.assert_close(a, torch.full_like(a, 1.0 / S_l), atol=1e-7, rtol=0)


@pytest.mark.parametrize("query", ["static", "static_t", "dynamic"])
def test_dar_routing_weights_sum_to_one(query):
    model = randomise(tiny(routing="dar", query=query, chunk_size=2), std=0.2, query_std=2.0)
    with capture(model, "alpha_") as alpha, torch.no_grad():
        model(*inputs(model.config))
    for name, a in alpha.items():
        assert a.dtype == torch.float32
        assert (a >= 0).all()
        torch.testing.assert_close(a.sum(0), torch.ones_like(a[0]), atol=1e-6, rtol=0)
    assert max((a - 1 / a.shape[0]).abs().max() for a in alpha.values()) > 0.05, "not uniform"


def _alphas_at(model, t):
    x, _, y = inputs(model.config, n=2)
    with capture(model, "alpha_") as alpha, torch.no_grad():
        model(x, torch.tensor([t, t]), y)
    return alpha


@pytest.mark.parametrize("query", ["static", "static_t"])
def test_only_static_t_routing_depends_on_t(query):
    model = tiny(routing="dar", query=query, chunk_size=2)
    with torch.no_grad():  # queries and e(t) random; adaLN stays zero, so the values ignore t
        model.t_embedder.mlp[2].weight.normal_(0, 0.5)
        model.t_embedder.mlp[2].bias.normal_(0, 0.5)
        for agg in model.routing.aggregators.values():
            agg.query.normal_(0, 1.0)
    a, b = _alphas_at(model, 10), _alphas_at(model, 900)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    if query == "static":
        assert diff == 0.0
    else:
        assert diff > 1e-3


def test_static_t_aggregator_query_follows_t():
    model = tiny(routing="dar", query="static_t", chunk_size=2)
    agg = model.routing.aggregators["3"]
    with torch.no_grad():
        agg.query.normal_()
    values = [torch.randn(2, 16, 32) for _ in model.routing.sources[3]]
    inv_rms = [v.pow(2).mean(-1, keepdim=True).add(agg.eps).rsqrt() for v in values]
    e1, e2 = torch.randn(2, 32), torch.randn(2, 32)
    with torch.no_grad():
        a1 = agg(values, inv_rms, agg.make_query(e1, values[-1]))
        a2 = agg(values, inv_rms, agg.make_query(e2, values[-1]))
        a0 = agg(values, inv_rms, agg.make_query(torch.zeros(2, 32), values[-1]))
    assert not torch.allclose(a1, a2)
    static = tiny(routing="dar", query="static", chunk_size=2).routing.aggregators["3"]
    with torch.no_grad():
        static.query.copy_(agg.query)
        s1 = static(values, inv_rms, static.make_query(e1, values[-1]))
    torch.testing.assert_close(s1, a0)  # static == static_t with e(t) = 0


def naive_dar(values: list[torch.Tensor], q: torch.Tensor, g: torch.Tensor, eps: float):
    """dar.md §1 literally: stack, RMSNorm keys with weight g, q . k / sqrt(D), softmax over sources."""
    V = torch.stack(values).double()  # (S, N, T, D)
    D = V.shape[-1]
    K = V / torch.sqrt(V.pow(2).mean(-1, keepdim=True) + eps) * g.double()  # (S, N, T, D)
    q = q.double()
    if q.dim() == 1:
        q = q.view(1, 1, D)
    elif q.dim() == 2:
        q = q.unsqueeze(1)  # (N, 1, D)
    logits = (K * q).sum(-1) / math.sqrt(D)  # (S, N, T)
    alpha = torch.softmax(logits, dim=0)  # (S, N, T)
    return (alpha.unsqueeze(-1) * V).sum(0), alpha  # (N, T, D), (S, N, T)


@pytest.mark.parametrize("query", ["static", "static_t", "dynamic"])
@pytest.mark.parametrize("S", [1, 2, 4])
def test_folded_dar_equals_naive_reference(query, S):
    model = randomise(tiny(routing="dar", query=query, chunk_size=S), std=0.2, query_std=1.5, norm=True)
    if query == "static_t":
        with torch.no_grad():
            model.t_embedder.mlp[2].weight.normal_(0, 0.3)
    x, t, y = inputs(model.config)
    with capture(model, "") as site, torch.no_grad():
        model(x, t, y)
        t_emb = model.t_embedder(t)  # (N, D)
    L = model.config.num_sublayers
    v = {0: site["z_0"], **{l: site[f"v_{l}"] for l in range(1, L + 1)}}
    torch.testing.assert_close(site["h_1"], v[0], atol=0, rtol=0)
    nonuniform = 0.0
    for l in range(2, L + 2):
        agg = model.routing.aggregators[str(l)]
        srcs = dar_sources(l, L, S)
        with torch.no_grad():
            if query == "static":
                q = agg.query  # (D,)
            elif query == "static_t":
                q = agg.query + t_emb  # (N, D)
            else:
                q = v[l - 1] @ agg.query.weight.T  # W_q v_{l-1}, (N, T, D)
        h_ref, alpha_ref = naive_dar([v[i] for i in srcs], q, agg.norm_weight.detach(), agg.eps)
        h = site[f"h_{l}"] if l <= L else site[f"z_{model.config.depth}"]
        torch.testing.assert_close(h.double(), h_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(site[f"alpha_{l}"].double(), alpha_ref, atol=1e-5, rtol=0)
        nonuniform = max(nonuniform, (alpha_ref - 1 / len(srcs)).abs().max().item())
    assert nonuniform > 0.05  # the test would be vacuous with uniform routing


@pytest.mark.parametrize("query", ["static", "static_t", "dynamic"])
def test_dar_gradient_matches_naive_reference(query):
    """Backward through the folded form (custom autograd inside) equals backward through the naive form."""
    from dardiag.models.routing import Aggregator

    torch.manual_seed(0)
    N, T, D = 2, 5, 32
    agg = Aggregator(D, query)
    with torch.no_grad():
        q = agg.query.weight if query == "dynamic" else agg.query
        q.normal_(0, 0.3)
        agg.norm_weight.uniform_(0.5, 1.5)
    # the first source in the transposed layout that v_0 has (it comes out of a conv)
    values = [torch.randn(N, D, T).transpose(1, 2).requires_grad_()]
    values += [torch.randn(N, T, D, requires_grad=True) for _ in range(3)]
    t_emb = torch.randn(N, D, requires_grad=True)
    w = torch.randn(N, T, D)
    inputs_ = values + [t_emb] + list(agg.parameters())

    inv = [v.pow(2).mean(-1, keepdim=True).add(agg.eps).rsqrt() for v in values]
    h = agg.mix(values, agg(values, inv, agg.make_query(t_emb, values[-1])))
    folded = torch.autograd.grad((h * w).sum(), inputs_, allow_unused=True)

    q_ref = {"static": lambda: agg.query, "static_t": lambda: agg.query + t_emb,
             "dynamic": lambda: agg.query(values[-1])}[query]()
    h_ref = naive_dar(values, q_ref, agg.norm_weight, agg.eps)[0]
    naive = torch.autograd.grad((h_ref * w).sum(), inputs_, allow_unused=True)
    for a, b in zip(folded, naive):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
