"""The cache_map and ablation figures and the savings summaries, from a tiny --trajectory --ablation run:
each panel draws the table's own numbers, render_all writes both figures, and the printed rank
correlations are Spearman's (checked against scipy)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import dardiag  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from dardiag.plots import fig_ablation, fig_cache_map, plot_cache_map, render_all  # noqa: E402
from dardiag.plots.cache_map import cache_grid  # noqa: E402
from dardiag.savings.summary import ablation_summary, rank_correlation, trajectory_summary  # noqa: E402
from test_ablation_trajectory import _subject  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def df():
    subjects = [_subject("residual", seed=5), _subject("dar", seed=6)]
    return dardiag.profile(subjects, noise_levels=[0.2, 0.6, 1.0], samples=4, batch_size=4, trajectory_steps=4,
                           analyses=Analyses(cka=False, probe=False, routes=False, ablation=True, trajectory=True))


def test_cache_map_panels_draw_the_tables_numbers(df):
    import matplotlib.pyplot as plt

    ax = plot_cache_map(df, "cache_error", model="dar")
    mesh = ax.collections[0].get_array()
    want = cache_grid(df, "cache_error", "dar").to_numpy()
    assert want.shape == (3, 3)  # blocks 1..3 x steps 1..3
    assert np.allclose(np.asarray(mesh).reshape(want.shape), want)
    plt.close(ax.figure)
    fig = fig_cache_map(df)
    panels = lambda fig: [a for a in fig.axes if a.collections and a.get_label() != "<colorbar>"]  # noqa: E731
    assert len(panels(fig)) == 4  # 2 models x (signal, error)
    assert len(panels(fig_ablation(df))) == 6  # 2 models x (cos_prev, rel. output change, loss increase)


def test_render_all_writes_both(df, tmp_path):
    mine = df[df["metric"].isin(["step_rel_change", "cache_error", "ablate_dloss", "ablate_rel_out"])]
    written = dict(render_all(mine, tmp_path))  # only these metrics: the other figures skip (fast)
    assert str(written["cache_map"]).endswith("cache_map.pdf") and (tmp_path / "ablation.png").exists()


def test_rank_correlations_are_spearmans(df):
    s = ablation_summary(df).set_index("model")
    for model in ("residual", "dar"):
        d = df[df["model"] == model]
        cos = d[d["metric"] == "cos_prev"].set_index(["block", "noise_level"])["value"].astype(float)
        dl = d[d["metric"] == "ablate_dloss"].set_index(["block", "noise_level"])["value"].astype(float)
        j = cos.to_frame("a").join(dl.rename("b"), how="inner")
        assert s.loc[model, "rho_dloss"] == pytest.approx(spearmanr(j["a"], j["b"]).statistic)
        assert s.loc[model, "cells"] == 9
    t = trajectory_summary(df)
    assert set(t["model"]) == {"residual", "dar"} and (t["cells"] == 9).all()
    rho, se, n = rank_correlation(cos, cos * 2)
    assert rho == pytest.approx(1.0) and se == pytest.approx(0.0) and n == len(cos)
