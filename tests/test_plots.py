"""Plots: every Axes function returns its Axes and draws the expected artists; figure builders and
render_all work on a small synthetic profile and skip what the table cannot show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import LogNorm, TwoSlopeNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dardiag.errors import DardiagError  # noqa: E402
from dardiag.plots import (  # noqa: E402
    fig_cka,
    fig_heatmaps,
    fig_probe,
    fig_routing,
    fig_symptoms,
    fig_training,
    model_colors,
    paper_style,
    plot_cka_matrix,
    plot_heatmap,
    plot_metric_by_block,
    plot_metric_vs_step,
    plot_probe_r2,
    plot_ratio_heatmap,
    plot_routing_map,
    render_all,
    save,
)
from dardiag.plots.heatmap import RatioNorm  # noqa: E402
from dardiag.plots.theme import OKABE_ITO  # noqa: E402

DEPTH = 4  # D: blocks 0..D, sublayers 1..2D+1, sources 0..2D
LEVELS = (0.1, 0.5, 0.9)
STEPS = (1000, 2000)
MODELS = {"DiT-S residual": "residual", "DiT-S DAR": "dar-static_t-c4"}


def make_profile(depth: int = DEPTH, levels=LEVELS, steps=STEPS, models=MODELS) -> pd.DataFrame:
    """A small long-form profile in the store's conventions: 2 models x depth 4 x 3 noise levels x
    2 checkpoints, with symptoms, sublayer RMS, cka, routing, probe and loss rows."""
    rng = np.random.default_rng(0)
    rows = []
    for model, routing in models.items():
        dar = routing != "residual"
        for step in steps:
            base = dict(
                run_id="r1", model=model, routing=routing, family="sit", checkpoint=f"{model}/{step:07d}.pt",
                step=step, n_samples=8, batch_size=8,
            )
            grow = 1.0 if dar else 3.0  # residual: activations grow with depth
            for nl in levels:
                common = dict(base, noise_level=nl, t_native=1 - nl)
                rows.append(dict(common, metric="loss", value=0.5 + nl - step * 1e-4))
                for k in range(depth + 1):
                    z = dict(common, site="z", block=k)
                    rows.append(dict(z, metric="act_rms", value=(1 + nl) * grow**k * step / 1000))
                    rows.append(dict(z, metric="grad_rms", value=1e-4 / grow**k / (1 + nl)))
                    if k:
                        rows.append(dict(z, metric="cos_prev", value=0.9 + 0.02 * k * nl))
                    for j in range(depth + 1):
                        if j >= k:  # store each pair once (upper triangle + diagonal)
                            v = 1.0 if j == k else float(np.exp(-abs(j - k) / (1 + nl)) - 0.1)
                            rows.append(dict(z, metric="cka", other_block=j, value=v))
                for l in range(1, 2 * depth + 2):
                    rows.append(dict(common, site="h", sublayer=l, metric="h_rms", value=(1 + l) * (1 + nl)))
                    rows.append(dict(common, site="v", sublayer=l, metric="v_rms", value=0.5 * l))
                    w = rng.random(l)
                    w /= w.sum()
                    for i in range(l):
                        if dar:
                            rows.append(dict(common, site="alpha", sublayer=l, source=i, metric="route_alpha", value=w[i]))
                        else:
                            rows.append(
                                dict(common, site="h", sublayer=l, source=i, metric="route_importance",
                                     value=float(rng.normal()) * 1e-5)
                            )
                    if dar:
                        rows.append(dict(common, site="alpha", sublayer=l, metric="route_entropy",
                                         value=float(-(w * np.log(w)).sum())))
            for k in range(depth + 1):
                rows.append(dict(base, metric="probe_r2", site="z", block=k, value=min(1.0, 0.8 + (0.1 if dar else 0.04) * k)))
            rows.append(dict(base, metric="probe_r2", site="x_t", value=0.8))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return make_profile()


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def mesh_of(ax: Axes):
    (mesh,) = [c for c in ax.collections if hasattr(c, "get_array") and c.get_array() is not None]
    return mesh


# ============================================================================ style


def test_model_colors_follow_sorted_names_and_okabe_ito():
    colors = model_colors(["b", "a", "c", "a"])
    assert list(colors) == ["a", "b", "c"]
    assert colors["a"] == OKABE_ITO[0] and colors["c"] == OKABE_ITO[2]
    assert model_colors(["c", "a", "b"]) == colors


def test_paper_style_fonts_legible_and_restored():
    before = dict(matplotlib.rcParams)
    with paper_style():
        for key in ("font.size", "xtick.labelsize", "ytick.labelsize", "legend.fontsize", "axes.labelsize"):
            assert matplotlib.rcParams[key] >= 7, key
    assert dict(matplotlib.rcParams) == before  # no leak out of the context


def test_save_writes_pdf_and_png_atomically(tmp_path):
    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    pdf, png = save(fig, tmp_path / "sub" / "line")
    assert pdf.read_bytes()[:4] == b"%PDF"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["line.pdf", "line.png"]
    with pytest.raises(ValueError):
        save(fig, tmp_path / "low", dpi=100)


# ============================================================================ Axes functions


def test_metric_by_block_lines_models_times_levels(df, ax):
    out = plot_metric_by_block(df, "act_rms", ax=ax)
    assert out is ax
    assert len(ax.lines) == len(MODELS) * len(LEVELS)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "block k (0 = embedding)"
    x, y = ax.lines[0].get_data()
    assert list(x) == list(range(DEPTH + 1))
    # latest checkpoint only: values scale with step / 1000 = 2 at the last step
    assert ax.get_legend() is not None


def test_metric_by_block_selects_levels_models_and_lin_scale(df, ax):
    plot_metric_by_block(df, "cos_prev", ax=ax, noise_levels=[0.48], models=["DiT-S DAR"])
    assert len(ax.lines) == 1
    assert ax.get_yscale() == "linear"
    assert list(ax.lines[0].get_data()[0]) == list(range(1, DEPTH + 1))
    # the DAR line keeps its whole-table colour
    assert matplotlib.colors.to_hex(ax.lines[0].get_color()) == model_colors(MODELS)["DiT-S DAR"].lower()


def test_metric_by_block_noise_ramp_light_to_dark(df, ax):
    plot_metric_by_block(df, "act_rms", ax=ax, models=["DiT-S residual"])
    lum = [np.mean(matplotlib.colors.to_rgb(l.get_color())) for l in ax.lines]
    assert lum == sorted(lum, reverse=True)  # darker = noisier


def test_metric_by_block_per_sublayer_metric(df, ax):
    plot_metric_by_block(df, "h_rms", ax=ax, noise_levels=[0.5])
    assert len(ax.lines) == 2
    assert "sublayer" in ax.get_xlabel()


def test_metric_by_block_unknown_metric_names_present(df, ax):
    with pytest.raises(ValueError, match="act_rms"):
        plot_metric_by_block(df, "nope", ax=ax)


def test_heatmap_mesh_is_levels_by_blocks(df, ax):
    out = plot_heatmap(df, "act_rms", model="DiT-S residual", ax=ax)
    assert out is ax
    mesh = mesh_of(ax)
    assert mesh.get_array().size == (DEPTH + 1) * len(LEVELS)
    assert isinstance(mesh.norm, LogNorm)  # 3^4 * ... spans more than a decade
    assert ax.get_ylabel() == "noise level (1 = pure noise)"
    assert len(ax.figure.axes) == 2  # the colorbar


def test_heatmap_values_are_latest_checkpoint_means(df, ax):
    plot_heatmap(df, "cos_prev", model="DiT-S DAR", ax=ax, colorbar=False)
    arr = mesh_of(ax).get_array().reshape(len(LEVELS), DEPTH)
    want = np.array([[0.9 + 0.02 * k * nl for k in range(1, DEPTH + 1)] for nl in LEVELS])
    np.testing.assert_allclose(arr, want)


def test_ratio_heatmap_is_diverging_and_centred_at_one(df, ax):
    plot_ratio_heatmap(df, "act_rms", numerator="DiT-S DAR", denominator="DiT-S residual", ax=ax)
    mesh = mesh_of(ax)
    assert mesh.get_array().size == (DEPTH + 1) * len(LEVELS)
    norm = mesh.norm
    assert isinstance(norm, RatioNorm) and norm.log
    ratios = mesh.get_array().reshape(len(LEVELS), DEPTH + 1)
    np.testing.assert_allclose(ratios[0], [3.0**-k for k in range(DEPTH + 1)])
    # centred on 1 (the colour map's middle), fitted to the ratios drawn: 3^-4 .. 1, not 3^-4 .. 3^4
    assert np.isclose(float(norm(1.0)), 0.5) and np.isclose(norm.vmin, ratios.min()) and norm.vmax == 1.0
    assert np.isclose(float(norm(3.0**-4)), 0.0) and np.isclose(float(norm(3.0**4)), 1.0)  # r and 1/r: one intensity


def test_ratio_heatmap_signed_values_use_two_slope(ax):
    d = make_profile()
    d.loc[d["metric"] == "cos_prev", "value"] *= np.where(d.loc[d["metric"] == "cos_prev", "model"] == "DiT-S DAR", -1, 1)
    plot_ratio_heatmap(d, "cos_prev", numerator="DiT-S DAR", denominator="DiT-S residual", ax=ax)
    norm = mesh_of(ax).norm
    assert isinstance(norm, RatioNorm) and not norm.log  # linear about 1: the ratios are negative
    assert np.isclose(float(norm(1.0)), 0.5) and norm.vmax == 1.0 and norm.vmin < 0


def test_cka_matrix_symmetric_full(df, ax):
    out = plot_cka_matrix(df, model="DiT-S residual", noise_level=0.5, ax=ax)
    assert out is ax
    arr = np.asarray(mesh_of(ax).get_array()).reshape(DEPTH + 1, DEPTH + 1)
    assert not np.ma.is_masked(arr) or not arr.mask.any()
    np.testing.assert_allclose(arr, arr.T)
    np.testing.assert_allclose(np.diag(arr), 1.0)
    assert arr.min() < 0  # negative CKA is kept, not clamped
    assert mesh_of(ax).norm.vmin < 0


def test_routing_map_picks_metric_per_model(df, ax):
    plot_routing_map(df, model="DiT-S DAR", sublayer=5, ax=ax)
    mesh = mesh_of(ax)
    assert mesh.get_array().size == 5 * len(LEVELS)  # sources 0..4 x levels
    assert "alpha" in ax.figure.axes[-1].get_ylabel()
    fig2, ax2 = plt.subplots()
    plot_routing_map(df, model="DiT-S residual", sublayer=9, ax=ax2)
    assert mesh_of(ax2).get_array().size == 9 * len(LEVELS)
    assert isinstance(mesh_of(ax2).norm, TwoSlopeNorm)  # signed importance
    plt.close(fig2)
    with pytest.raises(ValueError, match="route_alpha"):
        plot_routing_map(df, model="DiT-S residual", sublayer=3, metric="route_alpha", ax=ax)


def test_routing_map_unknown_sublayer_lists_available(df, ax):
    with pytest.raises(ValueError, match="sublayers"):
        plot_routing_map(df, model="DiT-S DAR", sublayer=42, ax=ax)


def test_probe_lines_and_reference(df, ax):
    out = plot_probe_r2(df, ax=ax)
    assert out is ax
    dashed = [l for l in ax.lines if l.get_linestyle() == "--"]
    solid = [l for l in ax.lines if l.get_linestyle() == "-"]
    assert len(solid) == len(MODELS)
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), 0.8)  # same x_t value: one line


def test_probe_reference_per_model_when_different(ax):
    d = make_profile()
    d.loc[(d["site"] == "x_t") & (d["model"] == "DiT-S DAR"), "value"] = 0.7
    plot_probe_r2(d, ax=ax)
    assert len([l for l in ax.lines if l.get_linestyle() == "--"]) == 2


def test_metric_vs_step(df, ax):
    out = plot_metric_vs_step(df, "act_rms", block=2, noise_level=0.5, ax=ax)
    assert out is ax
    assert len(ax.lines) == len(MODELS)
    assert list(ax.lines[0].get_data()[0]) == list(STEPS)
    plot_metric_vs_step(df, "loss", ax=ax)  # no depth; several levels -> a ramp per model
    assert len(ax.lines) == len(MODELS) + len(MODELS) * len(LEVELS)
    with pytest.raises(ValueError, match="block"):
        plot_metric_vs_step(df, "act_rms", ax=ax)  # several blocks and none selected


def test_default_ax_is_current_axes(df):
    fig = plt.figure()
    try:
        assert plot_metric_by_block(df, "grad_rms") is plt.gca()
    finally:
        plt.close(fig)


# ============================================================================ figures


def test_figure_builders_return_figures(df):
    figs = {
        "symptoms": fig_symptoms(df),
        "heatmaps": fig_heatmaps(df, "act_rms"),
        "cka": fig_cka(df, [0.1, 0.9]),
        "routing": fig_routing(df),
        "probe": fig_probe(df),
        "training": fig_training(df, "act_rms"),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        assert fig.get_layout_engine() is not None, name
    assert len([a for a in figs["symptoms"].axes if a.lines]) == 3
    # two models + ratio panel + shared colorbar + ratio colorbar
    assert len(figs["heatmaps"].axes) == 5
    model_meshes = [mesh_of(a) for a in figs["heatmaps"].axes[:2]]
    assert model_meshes[0].norm is model_meshes[1].norm  # ONE shared colour scale
    assert figs["heatmaps"].axes[2].get_title() == "DiT-S DAR / DiT-S residual"
    assert len(figs["cka"].axes) == 2 * 2 + 1  # models x levels + one colorbar
    titles = {a.get_title() for a in figs["routing"].axes}
    for model in MODELS:  # a shallow (about a quarter deep) and the last sublayer l = 2D per model
        assert {f"{model}, sublayer l = 3 of 8", f"{model}, sublayer l = 8 of 8"} <= titles
    assert "DiT-S DAR, final aggregator (l = 9)" in titles  # its own row, labelled so
    assert "DiT-S residual, final aggregator (l = 9)" not in titles
    assert len([a for a in figs["training"].axes if a.lines]) == 3


def test_heatmap_shared_scale_linear_within_a_decade(df):
    fig = fig_heatmaps(df, "cos_prev")
    assert not isinstance(mesh_of(fig.axes[0]).norm, LogNorm)


def test_fig_symptoms_notes_missing_panel(df):
    fig = fig_symptoms(df[df["metric"] != "grad_rms"])
    texts = [t.get_text() for a in fig.axes for t in a.texts]
    assert "grad_rms not recorded" in texts


def test_render_all_renders_and_skips(tmp_path, df):
    small = df[df["metric"].isin(["act_rms", "cka", "probe_r2"]) & (df["step"] == 2000)]
    results = dict(render_all(small, tmp_path))
    for name in ("symptoms", "heatmap_act_rms", "cka", "probe"):
        assert results[name] == tmp_path / f"{name}.pdf", name
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert results["routing"].startswith("skipped:")
    assert "route_alpha" in results["routing"]
    assert results["heatmap_h_rms"].startswith("skipped:")
    assert "series" in results["training_act_rms"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_plots_read_stored_tables(tmp_path, df):
    """Tables read back by the store (Int64 ids, str columns) plot like in-memory ones."""
    from dardiag.runs import RunDir, read_profile

    run = RunDir.create(tmp_path / "run", {"config": {}})
    run.mark_done("all", df[df["metric"].isin(["act_rms", "route_alpha", "route_importance", "cka"])])
    stored = read_profile(tmp_path / "run")
    fig, axes = plt.subplots(1, 3)
    try:
        plot_metric_by_block(stored, "act_rms", ax=axes[0])
        assert len(axes[0].lines) == len(MODELS) * len(LEVELS)
        plot_routing_map(stored, model="DiT-S DAR", sublayer=4, ax=axes[1])
        assert mesh_of(axes[1]).get_array().size == 4 * len(LEVELS)
        plot_cka_matrix(stored, model="DiT-S DAR", noise_level=0.9, ax=axes[2])
        assert mesh_of(axes[2]).get_array().size == (DEPTH + 1) ** 2
    finally:
        plt.close(fig)


def test_render_all_tolerates_minimal_hand_built_table(tmp_path):
    d = pd.DataFrame({"model": ["a", "a"], "metric": ["act_rms", "act_rms"], "value": [1.0, 2.0], "block": [0, 1]})
    results = dict(render_all(d, tmp_path))
    assert results["symptoms"] == tmp_path / "symptoms.pdf"
    assert all(isinstance(v, str) for k, v in results.items() if k != "symptoms")


def test_render_all_empty_table_raises(tmp_path):
    with pytest.raises(DardiagError):
        render_all(make_profile().iloc[:0], tmp_path)


def test_plots_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, dardiag.plots, dardiag.store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
