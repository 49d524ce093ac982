"""--ablation and --trajectory against explicit recomputations on tiny models: the ablation of block k
equals an independent forward with that block replaced by the identity; a trajectory cell's cache_error
and step changes equal an explicit two-step recomputation; both come through ``profile`` as rows."""

from __future__ import annotations

import pytest
import torch

import dardiag
from dardiag.adapters.dit import dit_subject
from dardiag.checkpoints import ModelInfo
from dardiag.savings.ablation import run_ablation
from dardiag.engine.config import Analyses
from dardiag.engine.inputs import make_inputs, minibatches
from dardiag.savings.trajectory import chunk_seed, run_trajectory, trajectory_chunks
from dardiag.errors import DardiagError
from dardiag.families import get_family
from dardiag.metrics import relative_change, token_cosine
from helpers import randomised_dit
from test_edits import TINY, _identity_block

pytestmark = pytest.mark.usefixtures("one_thread")


def _subject(routing="residual", family="sit", seed=5):
    model = randomised_dit({**TINY, "routing": routing, "chunk_size": 2}, seed=seed)
    return dit_subject(model, ModelInfo.in_memory(model, family=family, name=routing))


def test_ablation_equals_an_independent_forward_without_the_block():
    s = _subject()
    inp = make_inputs(None, s, 6, seed=0)
    fam, t_native = s.family, 0.4
    col = run_ablation(s, inp, t_native, batches=minibatches(6, 4), analyses=Analyses(), device="cpu")
    rows = {(r["metric"], r["block"]): r for r in col.rows()}
    t = torch.full((6,), t_native)
    x_t = fam.corrupt(inp.x0, inp.noise, t)
    with torch.no_grad():
        out = s.model(x_t, t, inp.y)
        loss = fam.loss_per_image(out, inp.x0, inp.noise, t)
        for k in range(1, 4):
            out_k = _identity_block(s.model, k)(x_t, t, inp.y)
            dloss = fam.loss_per_image(out_k, inp.x0, inp.noise, t) - loss
            rel = relative_change(out_k[:, :2], out[:, :2])
            assert rows["ablate_dloss", k]["value"] == pytest.approx(float(dloss.mean()), rel=1e-4, abs=1e-7)
            assert rows["ablate_rel_out", k]["value"] == pytest.approx(float(rel.mean()), rel=1e-4)
            assert rows["ablate_rel_out", k]["stderr"] == pytest.approx(float(rel.std() / 6 ** 0.5), rel=1e-3)
            assert rows["ablate_rel_out", k]["n_samples"] == 6


def _sampler_states(s, y, steps, seed):
    """(x_i, t_i) the model is evaluated at, step by step, with a plain recording forward."""
    seen = []

    def forward(i, x, t, y_):
        seen.append((x.clone(), t.clone()))
        return s.model(x, t, y_)

    s.sample(y, steps, 1.0, seed, forward=forward)
    return seen


def _states_and_parts(model, x, t, y, reuse=None):
    """An explicit residual forward: every block computed, except block ``reuse[0]`` whose contribution
    is ``reuse[1]``; returns the output, the states z_0..z_D and each block's (v_attn + v_mlp)."""
    v0 = model.x_embedder(x) + model.pos_embed
    c = model.t_embedder(t) + model.y_embedder(y, False)
    z, parts = [v0], {}
    for k, block in enumerate(model.blocks, start=1):
        mod = block.modulation(c)
        if reuse is not None and reuse[0] == k:
            parts[k] = reuse[1]
        else:
            a = block.attn_branch(z[-1], mod)
            m = block.mlp_branch(z[-1] + a, mod)
            parts[k] = a + m
        z.append(z[-1] + parts[k])
    return model.unpatchify(model.final_layer(z[-1], c)), z, parts


@pytest.mark.parametrize("family", ["sit", "dit"])  # Euler and DDIM
def test_cache_error_equals_an_explicit_two_step_recomputation(family):
    s = _subject(family=family)
    n, steps = 5, 4
    inp = make_inputs(None, s, n, seed=1)
    col = run_trajectory(s, inp, steps=steps, cfg=1.0, seed=3, chunks=trajectory_chunks(n), analyses=Analyses(),
                         device="cpu")
    got = {(r["metric"], r["block"], r["sampler_step"]): r for r in col.rows()}
    seen = _sampler_states(s, inp.y, steps, chunk_seed(3, 0))
    assert len(seen) == steps
    fam = get_family(family)
    with torch.no_grad():
        for i in (1, steps - 1):
            (x_prev, t_prev), (x, t) = seen[i - 1], seen[i]
            _, z_prev, parts_prev = _states_and_parts(s.model, x_prev, t_prev, inp.y)
            out, z, parts = _states_and_parts(s.model, x, t, inp.y)
            for k in (1, 2, 3):
                out_k, _, _ = _states_and_parts(s.model, x, t, inp.y, reuse=(k, parts_prev[k]))
                want = relative_change(out_k[:, :2], out[:, :2]).mean()
                cell = got["cache_error", k, i]
                assert cell["value"] == pytest.approx(float(want), rel=1e-3)
                assert cell["noise_level"] == pytest.approx(float(fam.to_noise_level(t[:1].double())[0]))
                delta = relative_change(parts[k], parts_prev[k]).mean()
                assert got["delta_rel_change", k, i]["value"] == pytest.approx(float(delta), rel=1e-3)
            for k in (0, 3):
                rel = relative_change(z[k], z_prev[k]).mean()
                cos = token_cosine(z_prev[k], z[k]).mean()
                assert got["step_rel_change", k, i]["value"] == pytest.approx(float(rel), rel=1e-3)
                assert got["step_cos", k, i]["value"] == pytest.approx(float(cos), rel=1e-5)
    assert ("cache_error", 1, 0) not in got  # step 0 has no previous step


def test_profile_writes_ablation_and_trajectory_rows(tmp_path):
    dar = _subject("dar")
    df = dardiag.profile(dar, out=tmp_path / "run", noise_levels=[0.3, 0.9], samples=4, batch_size=4,
                         analyses=Analyses(cka=False, probe=False, ablation=True, trajectory=True), trajectory_steps=3)
    abl = df[df["metric"] == "ablate_dloss"]
    assert sorted(abl["block"].astype(int).unique()) == [1, 2, 3] and abl["noise_level"].nunique() == 2
    ce = df[df["metric"] == "cache_error"]
    assert sorted(ce["sampler_step"].astype(int).unique()) == [1, 2]
    assert ce["stderr"].notna().all() and (ce["value"] > 0).all()
    assert df.loc[df["metric"] == "act_rms", "sampler_step"].isna().all()
    again = dardiag.read_profile(tmp_path / "run")  # read back: the column survives the parquet parts
    assert again.loc[again["metric"] == "cache_error", "sampler_step"].notna().all()


def test_trajectory_needs_a_sampler():
    from test_edits import _Residual
    from dardiag.adapters.generic import generic_subject

    s = generic_subject(_Residual(), blocks="blocks", family="sit", input_shape=(2, 4, 4),
                        call=lambda m, x_t, t, y, cond: m(x_t))
    with pytest.raises(DardiagError, match="own sampler"):
        dardiag.profile(s, noise_levels=[0.5], samples=4, analyses=Analyses(cka=False, probe=False, trajectory=True))
    df = dardiag.profile(s, noise_levels=[0.5], samples=4, analyses=Analyses(cka=False, probe=False, ablation=True))
    assert (df["metric"] == "ablate_rel_out").sum() == 3  # ablation works through hooks on any block list
