"""Outlier figures (design §9): depth x noise-level maps of the outlier metrics at site z on one shared
scale, the per-channel RMS spectrum, the seaborn grid, and render_all rendering or skipping them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402

from dardiag.plots import (  # noqa: E402
    fig_channel_spectrum,
    fig_heatmaps,
    grid_by_block,
    plot_channel_spectrum,
    render_all,
    save,
)
from dardiag.plots.outliers import OUTLIER_METRICS, TOP_SHARE_GID  # noqa: E402

DEPTH = 4  # blocks 0..4
LEVELS = (0.2, 0.6, 1.0)
D = 16  # channels


def channel_map(model: int, k: int, lvl: float) -> np.ndarray:
    """Per-channel RMS in scrambled order; two channels grow with depth in model 1."""
    rms = 1.0 + 0.01 * np.arange(D)
    if model:
        rms[[5, 11]] *= 1 + 10 * k
    return np.random.default_rng(k).permutation(rms) * (1 + lvl)


def outlier_table(with_sublayer_rows: bool = True) -> pd.DataFrame:
    """Two models: the outlier metrics at site z (per block) and, with far-off values, at h / v (per
    sublayer), plus channel_act_rms maps at z."""
    rows = []
    for i, model in enumerate(("DiT-S DAR", "DiT-S residual")):
        base = dict(model=model, routing="residual" if i else "dar", checkpoint="c", step=1)
        for lvl in LEVELS:
            for k in range(DEPTH + 1):
                z = dict(base, site="z", block=k, noise_level=lvl)
                rows.append(dict(z, metric="channel_top_share", value=0.02 + 0.1 * k * (1 + i)))
                rows.append(dict(z, metric="token_top_share", value=0.01 + 0.01 * k))
                rows.append(dict(z, metric="act_kurtosis", value=3.0 * (1 + i) ** k))
                cv = channel_map(i, k, lvl)
                rms = float(np.sqrt(np.mean(cv**2)))
                rows.append(dict(z, metric="channel_act_rms", value=rms, channel_values=list(cv)))
                if with_sublayer_rows:
                    for site in ("h", "v"):
                        for l in (2 * k + 1, 2 * k + 2):
                            s = dict(base, site=site, sublayer=l, noise_level=lvl)
                            for metric in OUTLIER_METRICS:
                                rows.append(dict(s, metric=metric, value=999.0))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return outlier_table()


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def mesh_of(ax):
    (mesh,) = [c for c in ax.collections if hasattr(c, "get_array") and c.get_array() is not None]
    return mesh


# ============================================================================ heatmaps


@pytest.mark.parametrize("metric", OUTLIER_METRICS)
def test_outlier_heatmaps_at_site_z_with_one_scale(table, metric):
    fig = fig_heatmaps(table, metric)
    a, b = fig.axes[:2]
    assert (a.get_title(), b.get_title()) == ("DiT-S DAR", "DiT-S residual")
    ma, mb = mesh_of(a), mesh_of(b)
    assert ma.norm is mb.norm  # ONE shared colour scale
    arr = np.asarray(ma.get_array()).reshape(len(LEVELS), DEPTH + 1)  # blocks, not sublayers
    assert arr.max() < 999  # the h / v rows are not mixed in
    assert "block" in a.get_xlabel()
    assert fig.axes[2].get_title() == "DiT-S DAR / DiT-S residual"


def test_heatmap_channel_top_share_values(table):
    fig = fig_heatmaps(table, "channel_top_share")
    arr = np.asarray(mesh_of(fig.axes[1]).get_array()).reshape(len(LEVELS), DEPTH + 1)
    np.testing.assert_allclose(arr[0], [0.02 + 0.2 * k for k in range(DEPTH + 1)])


# ============================================================================ channel spectrum


def test_channel_spectrum_sorted_descending_on_log_y(table, ax):
    out = plot_channel_spectrum(table, model="DiT-S residual", ax=ax)
    assert out is ax
    assert ax.get_yscale() == "log"
    lines = [line for line in ax.lines if line.get_gid() != TOP_SHARE_GID and len(line.get_xdata()) > 2]
    assert [line.get_label() for line in lines] == ["block 1", "block 2", "block 4"]  # shallow, middle, last
    for line, k in zip(lines, (1, 2, 4)):
        x, y = line.get_data()
        assert list(x) == list(range(1, D + 1))  # channel rank
        assert np.all(np.diff(y) <= 0)  # sorted descending
        lvl = 0.6  # default: the middle level
        np.testing.assert_allclose(y, np.sort(channel_map(1, k, lvl))[::-1])
    assert "0.6" in ax.get_title()
    # the top ceil(d / 100) channels are marked
    assert [line.get_xdata()[0] for line in ax.lines if line.get_gid() == TOP_SHARE_GID] == [1]


def test_channel_spectrum_blocks_and_level_selectable(table, ax):
    plot_channel_spectrum(table, model="DiT-S DAR", blocks=[0, 3], noise_level=0.95, ax=ax, legend=False)
    lines = [line for line in ax.lines if line.get_gid() != TOP_SHARE_GID]
    assert [line.get_label() for line in lines] == ["block 0", "block 3"]
    np.testing.assert_allclose(lines[1].get_ydata(), np.sort(channel_map(0, 3, 1.0))[::-1])
    with pytest.raises(ValueError, match="blocks"):
        plot_channel_spectrum(table, model="DiT-S DAR", blocks=[9], ax=ax)
    with pytest.raises(ValueError, match="channel_act_rms"):
        plot_channel_spectrum(table, model="nope", ax=ax)


def test_fig_channel_spectrum_one_panel_per_model(table):
    fig = fig_channel_spectrum(table)
    panels = [a for a in fig.axes if a.lines]
    assert [a.get_title().split(",")[0] for a in panels] == ["DiT-S DAR", "DiT-S residual"]
    assert panels[0].get_shared_y_axes().joined(panels[0], panels[1])


# ============================================================================ seaborn grid


def test_grid_by_block_is_a_facetgrid_rows_metrics_cols_models(table, tmp_path):
    g = grid_by_block(table, ["channel_top_share", "act_kurtosis"])
    try:
        assert isinstance(g, sns.FacetGrid)
        assert g.axes.shape == (2, 2)
        assert g.axes[1, 0].get_yscale() == "log"  # act_kurtosis is a log metric
        assert all(len(ax.lines) == len(LEVELS) for ax in g.axes.ravel())
        pdf, png = save(g, tmp_path / "grid")
        assert pdf.stat().st_size > 0 and png.stat().st_size > 0
    finally:
        plt.close(g.figure)


# ============================================================================ render_all


def test_render_all_renders_outlier_figures(tmp_path, table):
    results = dict(render_all(table, tmp_path))
    for name in [f"heatmap_{m}" for m in OUTLIER_METRICS] + ["channel_spectrum"]:
        assert results[name] == tmp_path / f"{name}.pdf", (name, results[name])
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert results["symptoms"].startswith("skipped:")


def test_render_all_skips_outlier_figures_cleanly(tmp_path):
    d = pd.DataFrame({"model": ["a", "a"], "metric": ["act_rms", "act_rms"], "value": [1.0, 2.0], "block": [0, 1]})
    results = dict(render_all(d, tmp_path))
    for name in [f"heatmap_{m}" for m in OUTLIER_METRICS] + ["channel_spectrum"]:
        assert results[name].startswith("skipped: no "), results[name]
    # channel_act_rms rows without maps: skipped with the reason, not raised
    bare = outlier_table(with_sublayer_rows=False)
    bare = bare[bare["metric"] == "channel_act_rms"].drop(columns=["channel_values"])
    results = dict(render_all(bare, tmp_path / "bare"))
    assert results["channel_spectrum"].startswith("skipped:") and "channel_values" in results["channel_spectrum"]


def test_stored_table_with_new_columns_plots(tmp_path):
    """stderr, inputs and channel_values read back by the store (float32 lists, str) plot like in memory."""
    from dardiag.runs import RunDir, read_profile

    d = outlier_table(with_sublayer_rows=False)
    d["stderr"] = np.where(d["metric"] == "channel_top_share", 0.01, np.nan)
    d["inputs"] = "held-out digits (file /data/heldout.npz)"
    d = d.assign(run_id="r1", family="dit", n_samples=8, batch_size=8)  # the store's required columns
    run = RunDir.create(tmp_path / "run", {"config": {}})
    run.mark_done("all", d)
    stored = read_profile(tmp_path / "run")
    fig = fig_heatmaps(stored, "channel_top_share")
    footer = [t.get_text() for t in fig.texts if t.get_text().startswith("inputs")]
    assert footer == ["inputs: held-out digits (file heldout.npz)"]
    fig, ax = plt.subplots()
    try:
        plot_channel_spectrum(stored, model="DiT-S residual", ax=ax, legend=False)
        np.testing.assert_allclose(ax.lines[-2].get_ydata(), np.sort(channel_map(1, 4, 0.6))[::-1], rtol=1e-6)
    finally:
        plt.close(fig)
