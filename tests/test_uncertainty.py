"""Every number with its standard error (diagnostics.md section 8), against computations written here:

* per-image averages: a loop over images of hand-captured states (plain forward hooks on the model's
  sites, ``retain_grad`` for dL/dz), then sd(ddof 1) / sqrt(N) with numpy;
* CKA: explicit Gram matrices per minibatch, the HSIC formula, and the jackknife written out;
* NaN (never 0) with one image or one minibatch.

On a tiny random residual model, a tiny DAR model and the official DiT fixture.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dardiag.adapters.dit import dit_subject
from dardiag.checkpoints import ModelInfo, load_model
from dardiag.engine.config import Analyses
from dardiag.api import profile
from tests.helpers import brute_hsic1 as _brute_hsic1
from tests.helpers import randomised_dit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
N, BS, LEVEL = 12, 4, 0.4
PER_IMAGE = Analyses(probe=False, cka=False)


randomised = randomised_dit


def make_inputs(shape, n=N, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x0": torch.randn(n, *shape, generator=g), "y": torch.randint(0, 10, (n,), generator=g),
            "noise": torch.randn(n, *shape, generator=g)}


def capture(model, subject, inputs, t_native, bs):
    """Per minibatch: {site name: state}, dL/dz_k, per-image losses, with plain hooks on the sites."""
    fam = subject.family
    batches = []
    names = [n for n in model.sites]
    for start in range(0, inputs["x0"].shape[0], bs):
        sl = slice(start, start + bs)
        x0, noise, y = inputs["x0"][sl], inputs["noise"][sl], inputs["y"][sl]
        t = torch.full((x0.shape[0],), t_native)
        t = t.long() if fam.integer_time else t.float()
        keep = {}

        def hook(mod, args, out, name):
            if name.startswith("z_"):
                out.retain_grad()
            keep[name] = out

        handles = [model.sites[n].register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n)) for n in names]
        try:
            out = model(fam.corrupt(x0, noise, t).requires_grad_(True), t, y)
        finally:
            for h in handles:
                h.remove()
        target = fam.target(x0, noise, t)
        per_image = ((out[:, : x0.shape[1]] - target) ** 2).flatten(1).mean(1)  # (n,)
        per_image.mean().backward()
        batches.append({"states": {k: v.detach().double() for k, v in keep.items()},
                        "grads": {k: v.grad.double() for k, v in keep.items() if k.startswith("z_")},
                        "loss": per_image.detach().double()})
    return batches


def mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def token_rms_per_image(x):  # (N, T, D) -> (N,): each image's mean over tokens of the channel RMS
    return x.pow(2).mean(-1).sqrt().mean(-1)


def table_cell(df, metric, **where):
    d = df[df.metric == metric]
    for k, v in where.items():
        d = d[d[k] == v]
    assert len(d) == 1, (metric, where, len(d))
    return float(d.value.iloc[0]), float(d.stderr.iloc[0])


def check(df, metric, values, *, scale: float = 0.0, **where):
    """``scale``: the size of the terms summed into each value; float32 rounding is relative to it, so a
    value far smaller than its terms (a near-zero importance) is compared to within 1e-4 of ``scale``."""
    want_v, want_se = mean_se(values)
    got_v, got_se = table_cell(df, metric, **where)
    assert got_v == pytest.approx(want_v, rel=1e-5, abs=max(1e-9, 1e-4 * scale)), (metric, where)
    assert got_se == pytest.approx(want_se, rel=1e-4, abs=max(1e-12, 1e-4 * scale)), (metric, where)


def per_image_checks(model, subject, inputs, t_native, df, bs):
    batches = capture(model, subject, inputs, t_native, bs)
    depth = len(model.blocks)
    cat = lambda f: torch.cat([f(b) for b in batches]).tolist()  # noqa: E731 (one value per image, in order)
    check(df, "loss", cat(lambda b: b["loss"]))
    for k in range(depth + 1):
        check(df, "act_rms", cat(lambda b: token_rms_per_image(b["states"][f"z_{k}"])), block=k)
        check(df, "grad_rms", cat(lambda b: token_rms_per_image(b["grads"][f"z_{k}"])), block=k)
        if k:
            cos = lambda b: torch.nn.functional.cosine_similarity(  # noqa: E731
                b["states"][f"z_{k - 1}"], b["states"][f"z_{k}"], dim=-1).mean(-1)
            check(df, "cos_prev", cat(cos), block=k)
    for l in range(1, 2 * depth + 1):
        check(df, "h_rms", cat(lambda b: token_rms_per_image(b["states"][f"h_{l}"])), sublayer=l)
        check(df, "v_rms", cat(lambda b: token_rms_per_image(b["states"][f"v_{l}"])), sublayer=l)
    return batches


def test_per_image_standard_errors_match_a_loop_over_images_residual():
    model = randomised(TINY, 0)
    s = dit_subject(model, ModelInfo.in_memory(model, family="sit", name="res"))
    inputs = make_inputs((4, 8, 8))
    df = profile(s, inputs=inputs, noise_levels=[LEVEL], batch_size=BS, analyses=PER_IMAGE)
    per_image_checks(model, s, inputs, 1 - LEVEL, df, BS)
    # a per-image average's error does not depend on how images are grouped into minibatches
    other = profile(s, inputs=inputs, noise_levels=[LEVEL], batch_size=6, analyses=PER_IMAGE)
    a, b = table_cell(df, "act_rms", block=2), table_cell(other, "act_rms", block=2)
    assert a == pytest.approx(b, rel=1e-6)


def test_per_image_standard_errors_match_a_loop_over_images_official_fixture(official_ckpt):
    model, info = load_model(official_ckpt, family="dit", num_heads=4)
    s = dit_subject(model, info)
    inputs = make_inputs((1, 16, 16), n=12, seed=9)
    df = profile(s, inputs=inputs, timesteps=[400], batch_size=4, analyses=PER_IMAGE)
    per_image_checks(model, s, inputs, 400, df, 4)


def test_route_weights_of_a_dar_model_carry_per_image_errors():
    model = randomised(dict(TINY, routing="dar", query="static_t", chunk_size=2), 1)
    s = dit_subject(model, ModelInfo.in_memory(model, family="sit", name="dar"))
    inputs = make_inputs((4, 8, 8), seed=2)
    df = profile(s, inputs=inputs, noise_levels=[LEVEL], batch_size=BS, analyses=PER_IMAGE)
    per_image_checks(model, s, inputs, 1 - LEVEL, df, BS)
    layout = model.site_layout()
    alphas: dict[int, list] = {}
    for start in range(0, N, BS):  # alpha is [S, N, T]: each image's own weights, averaged over its tokens
        keep = {}
        handles = [model.get_submodule(path).register_forward_hook(lambda m, a, o, l=l: keep.__setitem__(l, o))
                   for l, (path, _) in layout.routes.items()]
        sl = slice(start, start + BS)
        t = torch.full((BS,), 1 - LEVEL)
        with torch.no_grad():
            model(s.family.corrupt(inputs["x0"][sl], inputs["noise"][sl], t), t, inputs["y"][sl])
        for h in handles:
            h.remove()
        for l, a in keep.items():
            alphas.setdefault(l, []).append(a.double().mean(-1))  # (S, n)
    for l, (_, sources) in layout.routes.items():
        per_image = torch.cat(alphas[l], dim=1)  # (S, N)
        for i, src in enumerate(sources):
            check(df, "route_alpha", per_image[i].tolist(), sublayer=l, source=src)


def test_residual_route_importance_carries_per_image_errors(official_ckpt):
    """Image j's own gate gradient: N * <dL/dh_l (its slice), v_i (its slice)>, L the minibatch mean."""
    model, info = load_model(official_ckpt, family="dit", num_heads=4)
    s = dit_subject(model, info)
    inputs = make_inputs((1, 16, 16), n=8, seed=3)
    df = profile(s, inputs=inputs, timesteps=[400], batch_size=4, analyses=PER_IMAGE)
    grads: dict[int, list] = {}
    scales: dict[int, float] = {}
    for start in range(0, 8, 4):
        sl = slice(start, start + 4)
        keep = {}

        def hook(m, a, o, name):
            if name.startswith("h_"):
                o.retain_grad()
            keep[name] = o

        names = [n for n in model.sites if n.startswith(("h_", "v_", "z_0"))]
        handles = [model.sites[n].register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n)) for n in names]
        t = torch.full((4,), 400).long()
        out = model(s.family.corrupt(inputs["x0"][sl], inputs["noise"][sl], t), t, inputs["y"][sl])
        for h in handles:
            h.remove()
        ((out[:, :1] - inputs["noise"][sl]) ** 2).mean().backward()
        for l in range(1, 13):
            srcs = [keep["z_0"]] + [keep[f"v_{i}"] for i in range(1, l)]
            g = keep[f"h_{l}"].grad.double()
            per = torch.stack([4 * (g * v.detach().double()).sum(dim=(1, 2)) for v in srcs])  # (S, 4)
            grads.setdefault(l, []).append(per)
            # the size of the summed terms: float32 rounding in the profiler is relative to it
            terms = max(4 * (g.abs() * v.detach().double().abs()).sum(dim=(1, 2)).max().item() for v in srcs)
            scales[l] = max(scales.get(l, 0.0), terms)
    for l in (1, 6, 12):
        per_image = torch.cat(grads[l], dim=1)  # (S, 8)
        for src in range(l):
            check(df, "route_importance", per_image[src].tolist(), scale=scales[l], sublayer=l, source=src)


def brute_hsic1(K, L) -> float:
    return float(_brute_hsic1(K, L))


@pytest.mark.parametrize("which", ["tiny", "official"])
def test_cka_stderr_is_the_delete_one_minibatch_jackknife(which, request):
    if which == "tiny":
        model = randomised(TINY, 4)
        s = dit_subject(model, ModelInfo.in_memory(model, family="sit", name="m"))
        inputs, t_native, kw = make_inputs((4, 8, 8), n=16, seed=5), 1 - LEVEL, dict(noise_levels=[LEVEL])
    else:
        model, info = load_model(request.getfixturevalue("official_ckpt"), family="dit", num_heads=4)
        s = dit_subject(model, info)
        inputs, t_native, kw = make_inputs((1, 16, 16), n=16, seed=6), 400, dict(timesteps=[400])
    df = profile(s, inputs=inputs, batch_size=4, analyses=Analyses(probe=False, sublayers=False, routes=False), **kw)
    batches = capture(model, s, inputs, t_native, 4)
    P = len(model.blocks) + 1
    # terms[b][i][j]: HSIC1 of minibatch b, rows = tokens, explicit Grams
    terms = []
    for b in batches:
        rows = [b["states"][f"z_{k}"].reshape(-1, b["states"][f"z_{k}"].shape[-1]) for k in range(P)]
        grams = [r @ r.T for r in rows]
        terms.append([[brute_hsic1(grams[i], grams[j]) for j in range(P)] for i in range(P)])
    M = len(terms)
    total = [[sum(t[i][j] for t in terms) for j in range(P)] for i in range(P)]
    for i, j in [(0, 1), (1, 2), (0, P - 1), (2, 1)]:
        theta = []
        for b in range(M):  # CKA without minibatch b
            kl = total[i][j] - terms[b][i][j]
            kk = total[i][i] - terms[b][i][i]
            ll = total[j][j] - terms[b][j][j]
            theta.append(kl / math.sqrt(kk * ll))
        mean = sum(theta) / M
        want = math.sqrt((M - 1) / M * sum((x - mean) ** 2 for x in theta))
        value, se = table_cell(df, "cka", block=i, other_block=j)
        assert value == pytest.approx(total[i][j] / math.sqrt(total[i][i] * total[j][j]), rel=1e-6)
        assert se == pytest.approx(want, rel=1e-5), (i, j)
        assert se > 0
    assert math.isnan(table_cell(df, "cka", block=1, other_block=1)[1])  # CKA(z, z) = 1: not an estimate


def test_one_image_or_one_minibatch_gives_nan_never_zero():
    model = randomised(TINY, 7)
    s = dit_subject(model, ModelInfo.in_memory(model, family="sit", name="m"))
    one = profile(s, inputs=make_inputs((4, 8, 8), n=1), noise_levels=[0.5], batch_size=1,
                  analyses=Analyses(cka=False, probe=False))
    assert len(one) and one.stderr.isna().all()
    single = profile(s, inputs=make_inputs((4, 8, 8), n=8), noise_levels=[0.5], batch_size=8,
                     analyses=Analyses(probe=False))
    assert single[single.metric == "cka"].stderr.isna().all()  # one minibatch: no jackknife
    act = single[single.metric == "act_rms"].stderr
    assert (act > 0).all()  # eight images: a real spread
    never_zero = single[single.stderr.notna()]
    assert (never_zero.stderr != 0).all()


def test_probe_stderr_is_the_spread_over_pair_disjoint_folds():
    import statistics

    from dardiag.engine.timestep_probe import probe_rows
    from dardiag.metrics import fold_splits, ridge_r2, ridge_r2_folds

    g = torch.Generator().manual_seed(0)
    pairs, levels = 12, [0.1, 0.4, 0.7, 1.0]
    feats = {"z_1": [torch.randn(pairs, 5, generator=g) + lv for lv in levels]}
    lv = [torch.full((pairs,), v, dtype=torch.float64) for v in levels]
    ids = [torch.arange(pairs) for _ in levels]
    (row,) = probe_rows(feats, lv, ids, seed=3)
    X, y, groups = torch.cat(feats["z_1"]), torch.cat(lv), torch.cat(ids)
    assert row["value"] == pytest.approx(ridge_r2(X, y, groups, seed=3))  # the standard split
    folds = fold_splits(groups, 4, seed=3)
    for test in folds:  # every pair held out once, whole
        assert set(groups[test].tolist()).isdisjoint(groups[~test].tolist())
    assert torch.stack(folds).sum(0).eq(1).all()
    r2 = ridge_r2_folds(X, y, groups, seed=3)
    assert r2[0] == pytest.approx(row["value"]) and len(set(r2)) == 4
    assert row["stderr"] == pytest.approx(statistics.stdev(r2)) and row["stderr"] > 0


def test_stderr_is_a_column_of_stored_tables(tmp_path):
    from dardiag.runs import read_profile

    model = randomised(TINY, 8)
    s = dit_subject(model, ModelInfo.in_memory(model, family="sit", name="m"))
    df = profile(s, inputs=make_inputs((4, 8, 8), n=8), noise_levels=[0.3, 0.9], batch_size=4, out=tmp_path / "r",
                 analyses=Analyses(probe=False))
    back = read_profile(tmp_path / "r")
    assert "stderr" in back.columns and back.stderr.dtype == np.float64
    pd.testing.assert_series_equal(back.stderr.reset_index(drop=True), df.stderr.reset_index(drop=True))
