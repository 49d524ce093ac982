"""Every figure reads at the sizes users meet: depth 28 x 16 noise levels, and two models of different
depth (8 and 28 blocks, different batch sizes) on one figure. No two tick labels of an axis collide,
and no tick label, axis label, title, legend entry or footer overlaps another (matplotlib's text
extents, after the figure is laid out). Tables are built with the schema directly (tests/tables.py):
no profiling. Also: flat data drawn and labelled as such, the ratio scale, relative depth."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator  # noqa: E402

from dardiag.plots import figures as F  # noqa: E402
from dardiag.plots.heatmap import RatioNorm, ratio_norm  # noqa: E402
from dardiag.plots import fig_training_runs  # noqa: E402
from dardiag.plots.legible import (  # noqa: E402
    LegibleLayout,
    clipped_texts,
    flat_data,
    overlapping_texts,
    overlapping_tick_labels,
)
from dardiag.plots.symptoms import FLAT_GID  # noqa: E402
from tables import LEVELS16, profile_table  # noqa: E402

DEEP = {"residual": 28, "DAR static_t c4": 28}
MIXED = {"residual": 8, "DAR big": 28}


@pytest.fixture(scope="module")
def deep() -> pd.DataFrame:
    return profile_table(DEEP, steps=(1000, 2000), savings=50)


@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    return profile_table(MIXED, steps=(1000, 2000), batch_size={"residual": 16, "DAR big": 8}, savings=20)


# every figure render_all writes (its registry), and the two figure-level views it does not
FIGURES = {spec.name: (lambda d, spec=spec: spec.build(d, F._order(d), None)) for spec in F.FIGURES}
FIGURES["grid_by_block"] = lambda d: F.grid_by_block(d).figure
FIGURES["training_runs"] = lambda d: fig_training_runs(d)


# mixed depths and batch sizes: every builder once (the heatmaps and training figures of other metrics
# share its code: the deep table has them all), so the test stays fast
MIXED_FIGURES = [n for n in FIGURES if not n.startswith(("heatmap_", "training_")) or n in
                 ("heatmap_act_rms", "heatmap_grad_rms", "heatmap_h_rms", "training_act_rms", "training_loss")]


@pytest.mark.parametrize("name,table", [(n, "deep") for n in FIGURES] + [(n, "mixed") for n in MIXED_FIGURES])
def test_no_text_overlaps_at_depth_28_by_16_levels_and_mixed_depths(name, table, request):
    df = request.getfixturevalue(table)
    fig = FIGURES[name](df)
    try:
        assert overlapping_texts(fig) == []
        assert clipped_texts(fig, drawn=True) == []  # nothing cut off at the figure's edge
        ticks = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]
        assert ticks and not any("e-" in t and "+" in t for t in ticks)  # no "1e-8+1" offset labels
    finally:
        plt.close(fig)


def test_the_registry_is_what_render_all_writes(tmp_path):
    d = profile_table({"residual": 2}, levels=[0.0, 1.0])
    names = [name for name, _ in F.render_all(d[d["metric"] == "loss"], tmp_path)]
    assert names == [spec.name for spec in F.FIGURES]


def test_the_clip_check_finds_a_label_past_the_edge():
    fig = Figure(figsize=(3, 1.2), layout="constrained")
    ax = fig.subplots()
    ax.set_ylabel("a label much longer than this short axes is tall")
    assert clipped_texts(fig) == ["a label much longer than this short axes is tall"]


def test_the_check_finds_overlaps_and_the_layout_removes_them():
    """overlapping_tick_labels can fail: 29 labels on a narrow axis collide under plain constrained
    layout; LegibleLayout keeps every n-th of them (0 5 10 ... for 28 blocks)."""
    figs = []
    for engine in ("constrained", LegibleLayout()):
        fig = Figure(figsize=(3.5, 1.5), layout=engine)
        ax = fig.subplots()
        ax.plot(np.arange(29), np.arange(29))
        ax.xaxis.set_major_locator(FixedLocator(np.arange(29)))
        figs.append(fig)
    assert overlapping_tick_labels(figs[0])
    assert overlapping_tick_labels(figs[1]) == []
    kept = [t.get_text() for t in figs[1].axes[0].get_xticklabels()]
    assert kept[0] == "0" and 3 <= len(kept) < 29 and len({int(b) - int(a) for a, b in zip(kept, kept[1:])}) == 1


def test_heatmap_rows_equal_height_and_labelled_with_every_level(deep):
    fig = F.fig_heatmaps(deep, "act_rms")
    ax = fig.axes[0]
    mesh = ax.collections[0]
    ys = np.unique(mesh.get_coordinates()[:, :, 1])
    assert np.allclose(np.diff(ys), 1.0) and len(ys) == 17  # 16 rows of height 1: edge levels too
    labels = [t.get_text() for t in ax.get_yticklabels()]
    fig.draw_without_rendering()
    shown = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels[0] == "0" and labels[-1] == "1" and len(labels) == 16
    assert shown[0] == "0" and len(shown) >= 8  # thinned only where 16 would collide
    plt.close(fig)


def test_ratio_panel_for_every_model_against_the_baseline_in_the_given_order():
    df = profile_table({"DAR a": 4, "residual": 4, "DAR b": 4}, levels=LEVELS16[::3])
    fig = F.fig_heatmaps(df, "act_rms", models=["DAR b", "residual", "DAR a"], baseline="residual")
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles == ["DAR b", "residual", "DAR a", "DAR b / residual", "DAR a / residual"]
    ratio_axes = [a for a in fig.axes if "/" in a.get_title()]
    assert ratio_axes[0].collections[0].norm is ratio_axes[1].collections[0].norm  # one ratio scale
    plt.close(fig)


def test_ratio_norm_centred_on_one_and_fitted():
    n = ratio_norm(np.array([1.2, 3.0]))
    assert isinstance(n, RatioNorm) and n.vmin == 1.0 and n.vmax == 3.0 and float(n(1.0)) == 0.5
    assert np.isclose(float(n(3.0)), 1.0) and np.isclose(float(n(1 / 3)), 0.0)  # 3 and 1/3: one intensity
    assert np.isclose(float(n.inverse(n(2.0))), 2.0)


def test_routing_rows_match_and_final_aggregator_labelled(mixed):
    fig = F.fig_routing(mixed)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert "DAR big, final aggregator (l = 57)" in titles
    assert "residual, sublayer l = 16 of 16" in titles and "DAR big, sublayer l = 56 of 56" in titles
    panels = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(panels) == 5 and all(a.collections for a in panels)  # no empty panel for residual's final
    row = {a.get_title().split(",")[0]: a.get_position().y0 for a in panels}  # one row per model
    assert len({round(y, 3) for y in row.values()}) == 2
    plt.close(fig)


def test_models_of_different_depth_share_a_relative_depth_axis(mixed):
    fig = F.fig_symptoms(mixed)
    act = fig.axes[0]
    assert act.get_xlabel().startswith("relative depth")
    xs = [np.asarray(line.get_xdata(), dtype=float) for line in act.lines]
    assert all(np.isclose(x.max(), 1.0) and x.min() == 0.0 for x in xs if x.size)  # both models span 0..1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "residual (D = 8, B = 16)" in legend and "DAR big (D = 28, B = 8)" in legend
    grad = fig.axes[1]
    assert grad.get_yscale() == "log" and grad.get_ylabel().startswith("B x ")  # log kept; B x grad_rms
    plt.close(fig)


def test_probe_axis_fitted_and_spread_near_one(deep):
    fig = F.fig_probe(deep)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo > 0.5 and hi < 1.0  # fitted to 0.78 (x_t) .. 0.9999, not 0 .. 1
    assert ax.get_yscale() == "function"  # spaced by 1 - R^2: 0.995 and 1.000 far apart
    to_px = ax.transData.transform
    gap = abs(to_px((0, 0.9999))[1] - to_px((0, 0.999))[1])
    assert gap > 20  # pixels between R^2 0.999 and 0.9999
    plt.close(fig)


def _flat_table(value_of) -> pd.DataFrame:
    rows = [dict(model="m", routing="residual", metric="act_rms", site="z", block=k, noise_level=lvl,
                 value=value_of(k, lvl), stderr=1e-6) for k in range(29) for lvl in (0.0, 0.5, 1.0)]
    return pd.DataFrame(rows)


def test_near_constant_and_all_zero_data_drawn_flat_and_said():
    assert flat_data([0.726, 0.726 + 1e-8]) == "constant"
    assert flat_data([0.0, 0.0]) == "zero" and flat_data([1.0, 1.5]) is None
    assert flat_data([1.0, 1.0004], stderr=[1e-6, 1e-6]) is None  # small but far beyond its errors
    d = _flat_table(lambda k, lvl: 0.726 + 1e-8 * k)
    fig, ax = plt.subplots()
    from dardiag.plots import plot_metric_by_block

    plot_metric_by_block(d.assign(stderr=np.nan), "act_rms", ax=ax, legend=False)
    notes = [t.get_text() for t in ax.texts if t.get_gid() == FLAT_GID]
    assert notes and notes[0].startswith("constant 0.726")
    lo, hi = ax.get_ylim()
    assert hi - lo > 0.05  # a flat line, not 1e-8 stretched over the axis
    assert len({t.get_text() for t in ax.get_yticklabels()}) == len(ax.get_yticklabels())  # no 0.726 x 3
    plt.close(fig)
    heat = F.fig_heatmaps(d.assign(stderr=np.nan), "act_rms")
    cb = heat.axes[-1]
    assert "constant 0.726" in cb.get_ylabel()
    arr = heat.axes[0].collections[0].get_array()
    norm = heat.axes[0].collections[0].norm
    assert np.allclose(norm(arr), 0.5, atol=1e-3)  # every cell the colour map's middle
    plt.close(heat)


def test_all_zero_importance_map_drawn_as_zero():
    rows = [dict(model="r", routing="residual", metric="route_importance", site="h", sublayer=l, source=i,
                 noise_level=lvl, value=0.0) for l in range(1, 9) for i in range(l) for lvl in (0.0, 1.0)]
    fig = F.fig_routing(pd.DataFrame(rows))
    cbs = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert cbs and all("all zero" in a.get_ylabel() for a in cbs)
    assert all(t.get_text() == "0" for a in cbs for t in a.get_yticklabels())  # no 1e-12 scale
    mesh = fig.axes[0].collections[0]
    assert np.allclose(mesh.norm(mesh.get_array()), 0.5)  # the diverging map's white middle, not -1
    plt.close(fig)


def test_cache_map_panels_say_what_they_show_and_what_the_model_looked_at(deep):
    fig = F.fig_cache_map(deep)
    panels = [a for a in fig.axes if a.collections and a.get_label() != "<colorbar>"]
    titles = [a.get_title() for a in panels]
    assert len(panels) == 4 and all(t.split("\n")[0] in DEEP for t in titles)
    assert sum("signal" in t for t in titles) == 2 and sum("cache_error" in t or "reuses" in t for t in titles) == 2
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 2 and all(b.get_position().y1 < min(p.get_position().y0 for p in panels) for b in bars)
    (footer,) = [t.get_text() for t in fig.texts if t.get_text().startswith("inputs")]
    assert footer.startswith("inputs: the model's own sampler, 50 steps from seeded noise")  # not the images
    plt.close(fig)


def test_render_all_says_why_a_figure_does_not_apply(tmp_path):
    d = profile_table({"residual": 2}, levels=[0.0, 1.0])
    blocks_only = d[d["sublayer"].isna() & d["metric"].isin(["act_rms", "grad_rms"])].copy()  # a diffusers run
    blocks_only.attrs["dardiag"] = {"settings": {"analyses": {"sublayers": True, "routes": True, "cka": False}}}
    why = {name: what for name, what in F.render_all(blocks_only, tmp_path) if isinstance(what, str)}
    sites = "does not apply, the models are recorded per block only"
    assert sites in why["heatmap_h_rms"] and sites in why["routing"]
    assert "no DAR model" in why["heatmap_route_entropy"]
    assert why["cka"].endswith("profiled with --no-cka")
    assert why["ablation"].endswith("profile with --ablation") and why["cache_map"].endswith("--trajectory")
