"""The profiler (dardiag.engine.sweep.profile) against naive plain-PyTorch references (diagnostics.md §3-§5).

Everything runs on the official-code fixture checkpoint (depth 6, width 128, 4 heads, 64 tokens) with
explicit, seeded inputs. The references never touch dardiag's probe or metrics code: the residual
forward is re-written by hand from the model's blocks, states keep ``.retain_grad()``, the DiT loss is
written out (linear betas, eps-MSE on the first C channels), CKA uses explicit n x n Grams, and the
routing importance is the gradient of literal unit gates inserted into a hand-written forward.

Pinned here after they were found and fixed: the residual h_l site must hand its hook the branch-only
gradient (not the whole stream's); route_importance is dL/dg, not dL/dg / B; the CKA rows option is a
column of the table.

Legend: N images, C channels, T tokens, D hidden size, P = depth + 1 block states, L = 2 * depth.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dardiag.checkpoints import load_model
from dardiag.engine.collector import LevelCollector
from dardiag.engine.config import Analyses
from dardiag.hooks.recorder import frozen_parameters, record
from dardiag.adapters.dit import dit_subject
from dardiag.api import profile
from tests.helpers import brute_hsic1

F64 = torch.float64
LEVELS = (0.1, 0.5, 0.9)
N_IMAGES = 8
RTOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


#################################################################################
#                                 Fixtures                                      #
#################################################################################


@pytest.fixture(scope="module")
def official(official_ckpt):
    model, info = load_model(official_ckpt, family="dit", num_heads=4)
    return model.eval(), info


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1234)
    return {
        "x0": torch.randn(N_IMAGES, 1, 16, 16, generator=g).clamp(-1, 1),  # (N, C, H, W)
        "y": torch.randint(0, 10, (N_IMAGES,), generator=g),  # (N,)
        "noise": torch.randn(N_IMAGES, 1, 16, 16, generator=g),  # (N, C, H, W)
    }


@pytest.fixture(scope="module")
def profiles(official, inputs):
    """The profiler's tables at batch size 8 (one minibatch) and 4 (two minibatches)."""
    out = {}
    for bs in (8, 4):
        out[bs] = profile(official, inputs=inputs, noise_levels=list(LEVELS), batch_size=bs, samples=None,
                          analyses=Analyses(probe=False))
    return out


@pytest.fixture(scope="module")
def references(official, inputs):
    model = copy.deepcopy(official[0])  # parameters keep requires_grad: the reference is a plain run
    return {bs: {lv: naive_level(model, inputs, lv, bs) for lv in LEVELS} for bs in (8, 4)}


#################################################################################
#                         The naive references                                  #
#################################################################################


def dit_corrupt(x0, noise, level):
    """DDPM forward process, written out: linear betas 1e-4..0.02 over 1000 steps."""
    t = round(level * 999)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    abar = torch.cumprod(1 - betas, 0)[t]
    x_t = abar.sqrt().float() * x0 + (1 - abar).sqrt().float() * noise  # (N, C, H, W)
    return x_t, torch.full((x0.shape[0],), t, dtype=torch.long)


def embed(model, x_t, t, y):
    z0 = model.x_embedder(x_t) + model.pos_embed  # (N, T, D)
    c = model.t_embedder(t) + model.y_embedder(y, False)  # (N, D)
    return z0, c


def head(model, z, c):
    return model.unpatchify(model.final_layer(z, c))  # (N, C_out, H, W)


def eps_loss(out, noise):
    return ((out[:, : noise.shape[1]] - noise) ** 2).mean()  # learned-sigma channels excluded


def hand_forward(model, x_t, t, y):
    """z_0 = embedding; z_k = z_{k-1} + attn_branch + mlp_branch. Returns out, [z_k], [h_l], [v_l]."""
    z, c = embed(model, x_t, t, y)
    zs, hs, vs = [z], [], []
    for block in model.blocks:
        mod = block.modulation(c)
        h1 = z
        v1 = block.attn_branch(h1, mod)  # (N, T, D)
        h2 = z + v1
        v2 = block.mlp_branch(h2, mod)  # (N, T, D)
        z = h2 + v2
        hs += [h1, h2]
        vs += [v1, v2]
        zs.append(z)
    return head(model, z, c), zs, hs, vs


def gated_forward(model, x_t, t, y):
    """The branch input of sublayer l is h_l = sum_{i<l} g_{i->l} v_i with scalar gates g = 1.

    Everything else equals the model: the final layer reads the plain sum of all v_i.
    Returns out and gates {l: [g_{0->l}, ..., g_{l-1->l}]} (leaf scalars that require grad).
    """
    v0, c = embed(model, x_t, t, y)
    vs = [v0]
    gates = {}
    for block in model.blocks:
        mod = block.modulation(c)
        for branch in (block.attn_branch, block.mlp_branch):
            l = len(vs)
            g = [torch.ones((), requires_grad=True) for _ in range(l)]
            gates[l] = g
            h = sum(gi * vi for gi, vi in zip(g, vs))  # (N, T, D)
            vs.append(branch(h, mod))
    z = sum(vs)  # (N, T, D)
    return head(model, z, c), gates


def rms(x):
    return x.double().pow(2).mean(-1).sqrt()  # (N, T)


def naive_level(model, inputs, level, batch_size):
    """Every §3-§5 metric of one level, minibatch by minibatch, then the mean over minibatches."""
    per_batch = []
    P = len(model.blocks) + 1
    hsic_sum = torch.zeros(P, P, dtype=F64)
    for start in range(0, N_IMAGES, batch_size):
        sl = slice(start, start + batch_size)
        x0, noise, y = inputs["x0"][sl], inputs["noise"][sl], inputs["y"][sl]
        x_t, t = dit_corrupt(x0, noise, level)
        x_t.requires_grad_(True)

        out, zs, hs, vs = hand_forward(model, x_t, t, y)
        for z in zs:
            z.retain_grad()
        loss = eps_loss(out, noise)
        model.zero_grad(set_to_none=True)
        loss.backward()
        m = {
            "loss": loss.item(),
            "act_rms": [rms(z).mean().item() for z in zs],
            "grad_rms": [rms(z.grad).mean().item() for z in zs],
            "cos_prev": [F.cosine_similarity(a.double(), b.double(), dim=-1).mean().item()
                         for a, b in zip(zs[:-1], zs[1:])],
            "h_rms": [rms(h).mean().item() for h in hs],
            "v_rms": [rms(v).mean().item() for v in vs],
        }

        out_g, gates = gated_forward(model, x_t.detach(), t, y)
        torch.testing.assert_close(out_g, out, rtol=1e-4, atol=1e-5)  # gates = 1 is the model
        eps_loss(out_g, noise).backward()
        m["gate_grad"] = {l: [g.grad.item() for g in gs] for l, gs in gates.items()}
        per_batch.append(m)

        with torch.no_grad():  # CKA: rows are tokens, explicit n x n Grams
            rows = [z.detach().double().reshape(-1, z.shape[-1]) for z in zs]  # (n, D) each
            grams = [r @ r.T for r in rows]  # (n, n)
            for i in range(P):
                for j in range(i, P):
                    hsic_sum[i, j] = hsic_sum[j, i] = hsic_sum[i, j] + brute_hsic1(grams[i], grams[j])

    nb = len(per_batch)
    mean = lambda key: [sum(b[key][k] for b in per_batch) / nb for k in range(len(per_batch[0][key]))]  # noqa: E731
    ref = {key: mean(key) for key in ("act_rms", "grad_rms", "cos_prev", "h_rms", "v_rms")}
    ref["loss"] = sum(b["loss"] for b in per_batch) / nb
    ref["gate_grad"] = {l: [sum(b["gate_grad"][l][i] for b in per_batch) / nb for i in range(l)]
                        for l in per_batch[0]["gate_grad"]}
    d = torch.diagonal(hsic_sum)
    ref["cka"] = hsic_sum / torch.sqrt(torch.outer(d, d))
    return ref


#################################################################################
#                             Table helpers                                     #
#################################################################################


def level_rows(df, level, metric):
    lv = df.noise_level.unique()
    near = lv[abs(lv - level) < 1e-3]
    assert len(near) == 1, f"level {level} not in {sorted(lv)}"
    return df[(df.noise_level == near[0]) & (df.metric == metric)]


def series(df, level, metric, index):
    rows = level_rows(df, level, metric).sort_values(index)
    return rows[index].astype(int).tolist(), rows.value.tolist()


def close(got, want, rtol=RTOL, atol=0.0):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a == pytest.approx(b, rel=rtol, abs=atol), f"entry {i}: profile {a!r} vs reference {b!r}"


BS = pytest.mark.parametrize("bs", [8, 4], ids=["one-minibatch", "two-minibatches"])
LV = pytest.mark.parametrize("level", LEVELS)


#################################################################################
#                                 Tests                                         #
#################################################################################


def test_grid_and_native_timesteps(profiles):
    df = profiles[8]
    got = sorted(df.dropna(subset=["noise_level"]).groupby("noise_level").t_native.first().items())
    want = sorted((round(lv * 999) / 999, float(round(lv * 999))) for lv in LEVELS)
    assert [(pytest.approx(a), b) for a, b in got] == [(pytest.approx(a), b) for a, b in want]
    assert set(df.batch_size) == {8} and set(profiles[4].batch_size) == {4}
    assert set(df.n_samples) == {N_IMAGES}


@BS
@LV
@pytest.mark.parametrize("metric", ["act_rms", "grad_rms"])
def test_block_rms_matches_reference(profiles, references, bs, level, metric):
    blocks, values = series(profiles[bs], level, metric, "block")
    assert blocks == list(range(7))
    close(values, references[bs][level][metric])


@BS
@LV
def test_cos_prev_matches_reference(profiles, references, bs, level):
    blocks, values = series(profiles[bs], level, "cos_prev", "block")
    assert blocks == list(range(1, 7))
    close(values, references[bs][level]["cos_prev"])


@BS
@LV
@pytest.mark.parametrize("metric", ["h_rms", "v_rms"])
def test_sublayer_rms_matches_reference(profiles, references, bs, level, metric):
    subs, values = series(profiles[bs], level, metric, "sublayer")
    assert subs == list(range(1, 13))
    close(values, references[bs][level][metric])


@BS
@LV
def test_loss_matches_reference(profiles, references, bs, level):
    close(level_rows(profiles[bs], level, "loss").value.tolist(), [references[bs][level]["loss"]])


@BS
@LV
def test_cka_matches_bruteforce_unbiased_hsic(profiles, references, bs, level):
    assert len(level_rows(profiles[bs], level, "cka")) == 49
    got = cka_matrix(profiles[bs], level)
    assert not got.isnan().any()
    torch.testing.assert_close(got, references[bs][level]["cka"], rtol=RTOL, atol=1e-7)
    torch.testing.assert_close(torch.diagonal(got), torch.ones(7, dtype=F64), rtol=0, atol=1e-9)
    torch.testing.assert_close(got, got.T, rtol=0, atol=1e-12)


def brute_cka_images(model, inputs, level, batch_size):
    """CKA with images as rows (features T*D), explicit Grams, sums over minibatches then divide."""
    P = len(model.blocks) + 1
    S = torch.zeros(P, P, dtype=F64)
    with torch.no_grad():
        for start in range(0, N_IMAGES, batch_size):
            sl = slice(start, start + batch_size)
            x_t, t = dit_corrupt(inputs["x0"][sl], inputs["noise"][sl], level)
            _, zs, _, _ = hand_forward(model, x_t, t, inputs["y"][sl])
            grams = [z.double().flatten(1) @ z.double().flatten(1).T for z in zs]  # (B, B)
            for i in range(P):
                for j in range(P):
                    S[i, j] += brute_hsic1(grams[i], grams[j])
    d = torch.diagonal(S)
    return S / torch.sqrt(torch.outer(d, d))


def cka_matrix(df, level):
    rows = level_rows(df, level, "cka")
    got = torch.full((7, 7), float("nan"), dtype=F64)
    for r in rows.itertuples():
        got[int(r.block), int(r.other_block)] = r.value
    return got


@BS
def test_cka_with_images_as_rows_matches_bruteforce(official, inputs, bs):
    df = profile(official, inputs=inputs, noise_levels=[0.5], batch_size=bs, samples=None,
                 analyses=Analyses(probe=False, routes=False, sublayers=False, cka_rows="images"))
    want = brute_cka_images(official[0], inputs, 0.5, bs)
    torch.testing.assert_close(cka_matrix(df, 0.5), want, rtol=1e-5, atol=1e-7)
    assert df.attrs["dardiag"]["config"]["analyses"]["cka_rows"] == "images"


def test_cka_rows_option_is_a_recorded_column(official, inputs):
    import pandas as pd

    dfs = [profile(official, inputs=inputs, noise_levels=[0.5], batch_size=8, samples=None,
                   analyses=Analyses(probe=False, routes=False, sublayers=False, cka_rows=mode))
           for mode in ("tokens", "images")]
    both = pd.concat(dfs)
    cka = both[both.metric == "cka"].drop(columns=["run_id", "value", "token_values"])
    assert not cka.duplicated().any()


def importance(df, level):
    rows = level_rows(df, level, "route_importance")
    out: dict[int, dict[int, float]] = {}
    for r in rows.itertuples():
        out.setdefault(int(r.sublayer), {})[int(r.source)] = r.value
    return {l: [v[i] for i in sorted(v)] for l, v in sorted(out.items())}


def test_route_importance_covers_every_source(profiles):
    imp = importance(profiles[8], LEVELS[0])
    assert sorted(imp) == list(range(1, 13))
    for l, vals in imp.items():
        assert len(vals) == l  # sources v_0 .. v_{l-1}


def profile_importance(official, inputs, bs, level):
    df = profile(official, inputs=inputs, noise_levels=[level], batch_size=bs, samples=None,
                 analyses=Analyses(probe=False, cka=False, sublayers=True))
    return importance(df, level)


def assert_importance(imp, ref):
    """rtol 1e-5, plus atol 1e-5 x the largest |entry| of the level: single entries cancel to ~1e-8."""
    assert sorted(imp) == sorted(ref)
    atol = RTOL * max(abs(g) for gs in ref.values() for g in gs)
    for l, vals in imp.items():
        close(vals, ref[l], atol=atol)


def test_route_importance_is_the_branch_only_gate_gradient(profiles, references):
    """§5: the h_l site must hand its hook the branch-only gradient (not the stream's, identity path
    included), and the value is dL/dg of literal unit gates, averaged over minibatches."""
    for bs in (8, 4):
        assert_importance(importance(profiles[bs], 0.5), references[bs][0.5]["gate_grad"])


@BS
@LV
def test_route_importance_is_the_literal_gate_gradient(official, inputs, references, bs, level):
    """Every entry (all sublayers, sources, levels, minibatch layouts) equals the unit-gate gradient."""
    assert_importance(profile_importance(official, inputs, bs, level), references[bs][level]["gate_grad"])


def test_batch_size_invariants(profiles):
    """Same 8 images: per-(image, token) means agree across minibatch layouts; grad_rms scales ~1/B."""
    for lv in LEVELS:
        for metric in ("act_rms", "cos_prev", "h_rms", "v_rms", "loss"):
            a = level_rows(profiles[8], lv, metric).value.tolist()
            b = level_rows(profiles[4], lv, metric).value.tolist()
            close(a, b, rtol=1e-5)
        g8 = level_rows(profiles[8], lv, "grad_rms").value.to_numpy()
        g4 = level_rows(profiles[4], lv, "grad_rms").value.to_numpy()
        assert ((g4 / g8) > 1.5).all() and ((g4 / g8) < 2.5).all()  # L is a mean over the minibatch


#################################################################################
#                      Recording is invisible to the model                      #
#################################################################################


class Keep:
    """A sink that keeps everything it is shown."""

    def __init__(self):
        self.fwd, self.bwd = {}, {}

    def on_forward(self, name, x):
        self.fwd[name] = x.detach().clone()

    def on_backward(self, name, g):
        self.bwd[name] = g.clone()


def _run(model, x, t, y, noise):
    x = x.clone().requires_grad_(True)
    out = model(x, t, y)
    eps_loss(out, noise).backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("sink", ["keep", "collector"])
def test_recording_does_not_change_outputs_or_gradients(official, inputs, sink):
    model = copy.deepcopy(official[0])
    subject = dit_subject(model, official[1])
    x_t, t = dit_corrupt(inputs["x0"], inputs["noise"], 0.5)
    y, noise = inputs["y"], inputs["noise"]
    ref_out, ref_grad = _run(model, x_t, t, y, noise)
    s = Keep() if sink == "keep" else LevelCollector(subject.spec, Analyses(), "cpu")
    if sink == "collector":
        s.begin_batch(x_t, torch.arange(N_IMAGES))
    with record(model, list(subject.spec.taps), s):
        out, grad = _run(model, x_t, t, y, noise)
    assert torch.equal(out, ref_out)
    assert torch.equal(grad, ref_grad)
    if sink == "keep":
        assert set(s.fwd) == {tap.name for tap in subject.spec.taps}
        assert {n for n in s.bwd if n.startswith("z_")} == {f"z_{k}" for k in range(7)}
    for m in model.modules():  # hooks live only inside the context manager
        assert not m._forward_hooks and not m._forward_pre_hooks
    after, _ = _run(model, x_t, t, y, noise)
    assert torch.equal(after, ref_out)


def test_recorded_states_are_the_hand_forward_states(official, inputs):
    model = copy.deepcopy(official[0])
    subject = dit_subject(model, official[1])
    x_t, t = dit_corrupt(inputs["x0"], inputs["noise"], 0.3)
    s = Keep()
    with torch.no_grad(), record(model, list(subject.spec.taps), s):
        model(x_t, t, inputs["y"])
        _, zs, hs, vs = hand_forward(model, x_t, t, inputs["y"])
    for k, z in enumerate(zs):
        assert torch.equal(s.fwd[f"z_{k}"], z)
    for l, (h, v) in enumerate(zip(hs, vs), start=1):
        assert torch.equal(s.fwd[f"h_{l}"], h)
        assert torch.equal(s.fwd[f"v_{l}"], v)


def test_profile_restores_requires_grad_and_removes_hooks(official, inputs):
    model = copy.deepcopy(official[0])
    params = list(model.parameters())
    for i, p in enumerate(params):  # a mix on purpose, pos_embed is already frozen
        p.requires_grad_(i % 3 != 0)
    before = [p.requires_grad for p in params]
    profile((model, official[1]), inputs=inputs, noise_levels=[0.5], batch_size=4, samples=None,
            analyses=Analyses(probe=False, cka=False))
    assert [p.requires_grad for p in params] == before
    assert all(p.grad is None for p in params)  # no weight gradients were computed
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_frozen_parameters_restores_flags_after_an_error(official):
    model = copy.deepcopy(official[0])
    before = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_parameters(model):
            assert not any(p.requires_grad for p in model.parameters())
            raise RuntimeError("boom")
    assert [p.requires_grad for p in model.parameters()] == before


def test_reference_loss_is_the_fixture_models_loss(official, inputs):
    """Sanity for the reference: the trained fixture denoises (loss well below 1 = predicting 0)."""
    model = official[0]
    x_t, t = dit_corrupt(inputs["x0"], inputs["noise"], 0.5)
    with torch.no_grad():
        loss = eps_loss(model(x_t, t, inputs["y"]), inputs["noise"]).item()
    assert math.isfinite(loss) and loss < 0.9
