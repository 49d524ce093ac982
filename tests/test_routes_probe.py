"""The timestep probe of a profile (diagnostics.md §6): which rows exist, that they equal a ridge probe
on hand-captured pooled states with a pair-disjoint split, and that a state that encodes t scores high.

Legend: N images (pairs), K noise levels, M = N * K probe rows, D hidden size.
"""

from __future__ import annotations

import pytest
import torch

from dardiag.checkpoints import ModelInfo
from dardiag.metrics import group_split, ridge_r2
from dardiag.models import DiT, DiTConfig
from dardiag.engine.config import Analyses
from dardiag.adapters.dit import dit_subject
from dardiag.engine.sweep import default_grid, make_inputs, profile

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
DEPTH = 2
N, K, SEED = 32, 12, 0
PROBE_ONLY = Analyses(cka=False, routes=False, probe=True)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


@torch.no_grad()
def t_encoding_dar(seed: int = 0) -> DiT:
    """A DAR static_t model whose states encode t almost linearly: random e(t), adaLN and queries
    (so every sublayer output v_l is gated by a smooth function of t), and a weak patch embedding
    (so the image content adds little on top)."""
    torch.manual_seed(seed)
    model = DiT(DiTConfig(**TINY, routing="dar", query="static_t", chunk_size=2)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if name.startswith("t_embedder"):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        elif "adaLN_modulation" in name or name.startswith("final_layer.linear") or "query" in name:
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    model.x_embedder.proj.weight.mul_(0.1)
    return model


def subject(model, name="m"):
    return dit_subject(model, ModelInfo.in_memory(model, family="sit", name=name))


@pytest.fixture(scope="module")
def dar_run():
    model = t_encoding_dar()
    s = subject(model, "dar")
    df = profile(s, inputs=None, samples=N, batch_size=8, noise_levels=default_grid(K), seed=SEED,
                 analyses=PROBE_ONLY)
    return model, s, df


def probe_table(df) -> dict[str, float]:
    out = {}
    for r in df[df.metric == "probe_r2"].itertuples():
        key = "x_t" if r.site == "x_t" else f"z_{int(r.block)}" if r.site == "z" else f"h_{int(r.sublayer)}"
        assert key not in out
        out[key] = r.value
    return out


def hand_features(model, s, levels):
    """Mean-pooled states captured with plain forward hooks: {site: [M, F]}, targets [M], pair ids [M]."""
    inp = make_inputs(None, s, N, SEED)  # the profiler's own seeded synthetic inputs
    feats: dict[str, list] = {}
    targets, groups = [], []
    names = [f"z_{k}" for k in range(DEPTH + 1)] + [f"h_{l}" for l in range(1, 2 * DEPTH + 1)]
    for lv in levels:
        t = 1.0 - lv  # SiT: 1 = data
        x_t = t * inp.x0 + (1 - t) * inp.noise  # (N, C, H, W)
        keep = {}
        hooks = [model.sites[n].register_forward_hook(lambda m, a, o, n=n: keep.__setitem__(n, o)) for n in names]
        try:
            with torch.no_grad():
                model(x_t, torch.full((N,), t), inp.y)
        finally:
            for h in hooks:
                h.remove()
        feats.setdefault("x_t", []).append(x_t.flatten(2).mean(-1))  # (N, C)
        for n in names:
            feats.setdefault(n, []).append(keep[n].mean(1))  # (N, D)
        targets.append(torch.full((N,), lv, dtype=torch.float64))
        groups.append(torch.arange(N))
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(targets), torch.cat(groups)


#################################################################################
#                                  Tests                                        #
#################################################################################


def test_probe_rows_exist_for_x_t_every_block_and_every_sublayer_input(dar_run):
    _, _, df = dar_run
    rows = df[df.metric == "probe_r2"]
    assert set(probe_table(df)) == {"x_t"} | {f"z_{k}" for k in range(DEPTH + 1)} | {
        f"h_{l}" for l in range(1, 2 * DEPTH + 1)}
    assert rows.noise_level.isna().all() and rows.t_native.isna().all()
    assert set(rows.n_samples) == {N}
    assert rows[rows.site == "z"].sublayer.isna().all() and rows[rows.site == "h"].block.isna().all()
    assert not (df.metric == "route_alpha").any()  # routes were switched off


def test_residual_model_probe_rows(tmp_path):
    torch.manual_seed(0)
    model = DiT(DiTConfig(**TINY)).eval()
    df = profile(subject(model), inputs=None, samples=8, batch_size=4, noise_levels=[0.1, 0.5, 0.9],
                 analyses=PROBE_ONLY, out=tmp_path / "run")
    keys = set(probe_table(df))
    assert keys == {"x_t"} | {f"z_{k}" for k in range(DEPTH + 1)} | {f"h_{l}" for l in range(1, 2 * DEPTH + 1)}
    assert df[df.metric == "probe_r2"].value.between(-100, 1).all()


def test_states_that_encode_t_score_high(dar_run):
    r2 = probe_table(dar_run[2])
    for k in range(1, DEPTH + 1):
        assert r2[f"z_{k}"] > 0.9, r2
    for l in range(2, 2 * DEPTH + 1):
        assert r2[f"h_{l}"] > 0.9, r2
    # mean-pooled x_t and its linear embedding carry the noise level in their spread, not their mean
    assert r2["x_t"] < 0.5 and r2["z_0"] < 0.5 and r2["h_1"] == r2["z_0"]


def test_probe_equals_ridge_on_hand_captured_states_with_a_pair_disjoint_split(dar_run):
    model, s, df = dar_run
    levels = sorted(df.noise_level.dropna().unique())
    assert len(levels) == K
    feats, target, groups = hand_features(model, s, levels)
    table = probe_table(df)
    for site, X in feats.items():
        assert X.shape[0] == N * K
        want = ridge_r2(X, target, groups, seed=SEED)
        assert table[site] == pytest.approx(want, rel=1e-6, abs=1e-9), site
    # the same features split by rows instead of pairs give another number: the table used pairs
    X = feats["z_1"]
    by_row = ridge_r2(X, target, torch.arange(X.shape[0]), seed=SEED)
    assert by_row != pytest.approx(table["z_1"], rel=1e-6, abs=1e-9)


def test_group_split_keeps_every_pair_on_one_side():
    groups = torch.arange(N).repeat(K)  # the probe's rows: every pair at every level
    train, test = group_split(groups, 0.25, seed=SEED)
    assert (train ^ test).all()  # a partition of the rows
    tr, te = set(groups[train].tolist()), set(groups[test].tolist())
    assert not tr & te and tr | te == set(range(N))
    assert len(te) == round(0.25 * N)
    for gid in range(N):  # all K rows of a pair land together
        assert int(test[groups == gid].sum()) in (0, K)
    again = group_split(groups[torch.randperm(groups.numel(), generator=torch.Generator().manual_seed(1))], 0.25,
                        seed=SEED)
    assert int(again[1].sum()) == len(te) * K


def test_too_few_pairs_give_no_probe_rows():
    torch.manual_seed(0)
    model = DiT(DiTConfig(**TINY)).eval()
    df = profile(subject(model), inputs=None, samples=4, batch_size=4, noise_levels=[0.2, 0.8], analyses=PROBE_ONLY)
    assert not (df.metric == "probe_r2").any()
    assert (df.metric == "act_rms").any()
