"""Where the magnitude comes from (diagnostics.md section 9): the outlier metrics against plain tensor
maths over hand-captured states, a planted outlier channel found by the channel map, and the numbers
the official digit DiT is documented to give."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dardiag
from dardiag.adapters.dit import dit_subject
from dardiag.checkpoints import ModelInfo, load_model
from dardiag.engine.config import Analyses
from dardiag.api import profile
from dardiag.metrics import top_share
from dardiag.models import DiT
from tests.helpers import randomised_dit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
ONLY = Analyses(cka=False, probe=False, routes=False, channel_maps=True)


def randomised(seed: int, **cfg) -> DiT:
    return randomised_dit({**TINY, **cfg}, seed)


def states(model, family, inputs, t_native, bs) -> dict[str, torch.Tensor]:
    """Every site's state over all images (minibatches concatenated), captured with plain hooks."""
    keep: dict[str, list] = {}
    names = [n for n in model.sites if n.startswith(("z_", "h_", "v_"))]
    for start in range(0, inputs["x0"].shape[0], bs):
        sl = slice(start, start + bs)
        handles = [model.sites[n].register_forward_hook(lambda m, a, o, n=n: keep.setdefault(n, []).append(o))
                   for n in names]
        t = torch.full((inputs["x0"][sl].shape[0],), t_native)
        t = t.long() if family.integer_time else t.float()
        with torch.no_grad():
            model(family.corrupt(inputs["x0"][sl], inputs["noise"][sl], t), t, inputs["y"][sl])
        for h in handles:
            h.remove()
    return {n: torch.cat(v).double() for n, v in keep.items()}


def plain(z: torch.Tensor) -> dict:
    """Section 9 written out over one state z [N, T, D]."""
    N, T, D = z.shape
    channel = (z ** 2).sum(dim=(0, 1))  # (D,)
    token = (z ** 2).sum(dim=(0, 2))  # (T,)
    top_c, top_t = math.ceil(D / 100), math.ceil(T / 100)
    return {
        "act_absmax": z.abs().max().item(),
        "act_kurtosis": ((z ** 4).mean() / (z ** 2).mean() ** 2).item(),
        "channel_top_share": (channel.sort(descending=True).values[:top_c].sum() / channel.sum()).item(),
        "token_top_share": (token.sort(descending=True).values[:top_t].sum() / token.sum()).item(),
        "channel_act_rms": ((z ** 2).mean().sqrt().item(), (z ** 2).mean(dim=(0, 1)).sqrt().tolist()),
    }


def rows_of(df, site: str, index: int) -> dict:
    col = "block" if site == "z" else "sublayer"
    d = df[(df.site == site) & (df[col] == index)]
    out = {m: float(d[d.metric == m].value.iloc[0]) for m in ("act_absmax", "act_kurtosis", "channel_top_share",
                                                               "token_top_share")}
    cm = d[d.metric == "channel_act_rms"]
    out["channel_act_rms"] = (float(cm.value.iloc[0]), list(cm.channel_values.iloc[0]))
    assert d[d.metric.isin(list(out))].stderr.isna().all()  # section 8 defines no error for these
    return out


def compare(got: dict, want: dict) -> None:
    for k in ("act_absmax", "act_kurtosis", "channel_top_share", "token_top_share"):
        assert got[k] == pytest.approx(want[k], rel=1e-5), k
    assert got["channel_act_rms"][0] == pytest.approx(want["channel_act_rms"][0], rel=1e-5)
    np.testing.assert_allclose(got["channel_act_rms"][1], want["channel_act_rms"][1], rtol=1e-5)


@pytest.mark.parametrize("routing", ["residual", "dar"])
def test_outlier_metrics_equal_plain_tensor_maths_on_every_state(routing):
    model = randomised(0, routing=routing, chunk_size=2)
    s = dit_subject(model, ModelInfo.in_memory(model, family="sit", name="m"))
    g = torch.Generator().manual_seed(1)
    inputs = {"x0": torch.randn(10, 4, 8, 8, generator=g), "y": torch.randint(0, 10, (10,), generator=g),
              "noise": torch.randn(10, 4, 8, 8, generator=g)}
    df = profile(s, inputs=inputs, noise_levels=[0.3], batch_size=4, analyses=ONLY)  # minibatches 4, 6
    captured = states(model, s.family, inputs, 0.7, 4)
    for k in range(3):
        compare(rows_of(df, "z", k), plain(captured[f"z_{k}"]))
    for l in range(1, 5):
        compare(rows_of(df, "h", l), plain(captured[f"h_{l}"]))
        compare(rows_of(df, "v", l), plain(captured[f"v_{l}"]))


def test_the_official_fixture_agrees_with_plain_maths_and_the_documented_numbers(official_ckpt):
    """diagnostics.md section 9: on the official digit DiT (6 blocks, d = 128, t = 400 of 999), kurtosis
    grows from 2.2 at the embedding to 25 at the last block, and 2 of 128 channels end up holding 46% of
    the state's energy. Measured here on the held-out digits it was trained beside."""
    model, info = load_model(official_ckpt, family="dit", num_heads=4)
    s = dit_subject(model, info)
    digits = dardiag.held_out_digits()
    g = torch.Generator().manual_seed(0)
    inputs = {"x0": digits["x0"][:96], "y": digits["y"][:96], "noise": torch.randn(96, 1, 16, 16, generator=g)}
    df = profile(s, inputs=inputs, timesteps=[400], batch_size=32, analyses=ONLY)
    captured = states(model, s.family, inputs, 400, 32)
    for k in (0, 3, 6):
        compare(rows_of(df, "z", k), plain(captured[f"z_{k}"]))
    kurt = {k: rows_of(df, "z", k)["act_kurtosis"] for k in range(7)}
    assert kurt[0] == pytest.approx(2.2, abs=0.15) and 20 < kurt[6] < 32
    assert all(kurt[k] < kurt[k + 1] for k in range(6))  # the tails grow block by block
    share = rows_of(df, "z", 6)["channel_top_share"]
    assert share == pytest.approx(0.46, abs=0.04)  # ceil(128 / 100) = 2 channels


def test_a_planted_outlier_channel_is_found_by_the_channel_map():
    model = randomised(2)
    planted = 17
    with torch.no_grad():
        model.x_embedder.proj.bias[planted] += 40.0  # one massive channel in every token of z_0
    s = dit_subject(model, ModelInfo.in_memory(model, family="sit", name="m"))
    df = profile(s, inputs=None, samples=8, noise_levels=[0.5], batch_size=4, analyses=ONLY)
    for k in range(3):  # the residual stream carries it to the last block
        d = df[(df.metric == "channel_act_rms") & (df.site == "z") & (df.block == k)]
        cm = np.asarray(d.channel_values.iloc[0])
        assert cm.shape == (32,) and int(cm.argmax()) == planted
        share = float(df[(df.metric == "channel_top_share") & (df.site == "z") & (df.block == k)].value.iloc[0])
        assert share > 0.5
    clean = profile(randomised(2), family="sit", inputs=None, samples=8, noise_levels=[0.5], batch_size=4,
                    analyses=ONLY)  # a DiT in memory, given its family
    base = float(clean[(clean.metric == "channel_top_share") & (clean.site == "z") & (clean.block == 0)].value.iloc[0])
    assert base < 0.2


def test_top_share_and_kurtosis_edges():
    assert top_share(torch.tensor([0.0, 0.0])) != top_share(torch.tensor([0.0, 0.0]))  # NaN: no energy
    assert top_share(torch.tensor([3.0, 1.0])) == pytest.approx(0.75)  # ceil(2 / 100) = 1 entry
    e = torch.ones(250)
    assert top_share(e) == pytest.approx(3 / 250)  # ceil(250 / 100) = 3 entries
    with pytest.raises(ValueError):
        top_share(torch.ones(2, 2))


def test_channel_maps_are_off_by_default_and_outliers_can_be_switched_off():
    model = randomised(3)
    s = dit_subject(model, ModelInfo.in_memory(model, family="sit", name="m"))
    df = profile(s, inputs=None, samples=8, noise_levels=[0.5], batch_size=4, analyses=Analyses(cka=False, probe=False))
    assert "channel_top_share" in set(df.metric) and "channel_act_rms" not in set(df.metric)
    off = profile(s, inputs=None, samples=8, noise_levels=[0.5], batch_size=4,
                  analyses=Analyses(cka=False, probe=False, outliers=False))
    assert not set(off.metric) & {"act_absmax", "act_kurtosis", "channel_top_share", "token_top_share"}
