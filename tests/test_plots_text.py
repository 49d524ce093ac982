"""What the figures say: noise levels rounded in legends, ticks and titles; round ratio and log colour-bar
ticks; the inputs footer exactly when the table names its inputs; the seaborn paper theme."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from dardiag.plots import (  # noqa: E402
    fig_heatmaps,
    fig_probe,
    fig_symptoms,
    paper_style,
    plot_cka_matrix,
    plot_heatmap,
    plot_metric_by_block,
    plot_ratio_heatmap,
    render_all,
    save,
)
from dardiag.plots.labels import inputs_lines, level_labels, log_ticks, ratio_ticks, shorten  # noqa: E402
from dardiag.plots.theme import OKABE_ITO  # noqa: E402

SEVENTHS = [i / 7 for i in range(8)]  # 0, 0.142857..., 1: the demo's noise grid


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def grid_table(levels=SEVENTHS, models=("A", "B"), metric="act_rms", grow=3.0, inputs=None) -> pd.DataFrame:
    rows = []
    for i, m in enumerate(models):
        for lvl in levels:
            for k in range(4):
                rows.append(dict(model=m, metric=metric, site="z", block=k, noise_level=lvl,
                                 value=(1 + lvl) * (grow if i else 1.0) ** k))
    d = pd.DataFrame(rows)
    if inputs is not None:
        d["inputs"] = d["model"].map(inputs) if isinstance(inputs, dict) else inputs
    return d


# ============================================================================ noise levels


def test_level_labels_fewest_digits_that_keep_levels_apart():
    assert level_labels(SEVENTHS) == ["0", "0.14", "0.29", "0.43", "0.57", "0.71", "0.86", "1"]
    assert level_labels([0.1, 0.5, 0.9]) == ["0.1", "0.5", "0.9"]
    assert level_labels([250 / 999, 500 / 999, 750 / 999, 1.0]) == ["0.25", "0.5", "0.75", "1"]
    assert level_labels([4 / 7]) == ["0.57"]
    assert level_labels([0.001, 0.002]) == ["0.001", "0.002"]


def level_bars(fig):
    """The noise-level colour bars of a figure: {model: (major tick labels, minor tick locations)}."""
    out = {}
    for a in fig.axes:
        label = a.get_ylabel() or a.get_title(loc="left")
        if a.get_label() == "<colorbar>" and label:
            model = label.removeprefix("noise level: ")
            out[model] = ([t.get_text() for t in a.get_yticklabels()], list(a.yaxis.get_minorticklocs()))
    return out


def test_legend_names_models_and_a_colour_bar_per_model_keys_the_levels(ax):
    d = grid_table()
    plot_metric_by_block(d, "act_rms", ax=ax, noise_levels=SEVENTHS[::2])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # no grey level entries: each model's colour map has its colour bar; one entry says which levels
    assert labels == ["A", "B", "4 of 8 noise levels drawn:\n0, 0.29, 0.57, 0.86"]
    bars = level_bars(ax.figure)
    assert set(bars) == {"A", "B"}
    for ticks, marks in bars.values():
        assert ticks == ["0", "0.5", "1"]
        # a mark at every level drawn (matplotlib drops a minor tick where a major one is: 0 and 1)
        np.testing.assert_allclose(sorted(marks), [v for v in SEVENTHS[::2] if v not in (0, 1)])
    # the lines take the colour map at their level: darker = noisier
    from dardiag.plots.theme import level_cmap, model_colors

    cmap = level_cmap(model_colors(["A", "B"])["A"])
    got = {tuple(np.round(l.get_color(), 6)) for l in ax.lines}
    assert tuple(np.round(cmap(SEVENTHS[6]), 6)) in got


def test_heatmap_level_ticks_and_cka_title_rounded(ax):
    d = grid_table(levels=SEVENTHS[::2])
    plot_heatmap(d, "act_rms", model="A", ax=ax, colorbar=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "0.29", "0.57", "0.86"]
    cka = pd.DataFrame([dict(model="A", metric="cka", site="z", block=i, other_block=j, noise_level=4 / 7, value=0.5)
                        for i in range(3) for j in range(3)])
    fig, ax2 = plt.subplots()
    try:
        plot_cka_matrix(cka, model="A", noise_level=0.6, ax=ax2)
        assert ax2.get_title() == "A, noise 0.57"
    finally:
        plt.close(fig)


def test_fig_symptoms_keys_levels_with_colour_bars():
    fig = fig_symptoms(grid_table())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["A", "B", "5 of 8 noise levels drawn:\n0, 0.29, 0.57, 0.71, 1"]
    every = fig_symptoms(grid_table(levels=SEVENTHS[:4]))  # all 4 levels drawn: nothing to say
    assert [t.get_text() for t in every.legends[0].get_texts()] == ["A", "B"]
    bars = level_bars(fig)
    assert set(bars) == {"A", "B"}
    drawn = [SEVENTHS[i] for i in (0, 2, 4, 5, 7)]  # 5 of the 8 levels spread evenly, each marked
    for _, marks in bars.values():
        np.testing.assert_allclose(sorted(marks), drawn[1:-1])  # (0 and 1 carry the major ticks)


# ============================================================================ round ticks

ROUND_MANTISSAS = {1, 1.005, 1.01, 1.02, 1.05, 1.1, 1.2, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 9, 9.5, 9.8, 9.9, 9.95}


def mantissa(t: float) -> float:
    return round(t / 10 ** math.floor(math.log10(t) + 1e-12), 6)


@pytest.mark.parametrize("m", [1.02, 1.15, 1.3, 1.5, 1.9, 2.0, 3.5, 4.0, 8.35, 30.0, 1e3, 1e5])
def test_ratio_ticks_are_round_and_around_one(m):
    ticks = ratio_ticks(1 / m, m)
    assert 1.0 in ticks and 3 <= len(ticks) <= 7
    assert all(1 / m * (1 - 1e-9) <= t <= m * (1 + 1e-9) for t in ticks)
    assert all(mantissa(t) in ROUND_MANTISSAS for t in ticks), ticks


def test_ratio_colorbar_has_round_ticks(ax):
    d = grid_table(levels=(0.2, 0.8), grow=2.0)  # A / B = 2^-k, k = 0..3: down to 1/8
    plot_ratio_heatmap(d, "act_rms", numerator="A", denominator="B", ax=ax)
    cb_ax = ax.figure.axes[-1]
    lo, hi = cb_ax.get_ylim()
    assert np.isclose(lo, 1 / 8) and np.isclose(hi, 1)  # fitted to the ratios, not 1/8 .. 8
    ticks = [t for t in cb_ax.get_yticks() if lo <= t <= hi]
    assert np.allclose(ticks, [0.25, 0.5, 1])
    assert [t.get_text() for t in cb_ax.get_yticklabels()] == ["0.25", "0.5", "1"]
    assert not cb_ax.yaxis.get_minorticklocs().size  # no 2x10^-1-style minor labels


def test_narrow_ratio_gets_finer_round_ticks(ax):
    d = grid_table(levels=(0.2, 0.8), grow=1.08)  # ratios 1 .. 1.26
    plot_ratio_heatmap(d, "act_rms", numerator="B", denominator="A", ax=ax)
    labels = [t.get_text() for t in ax.figure.axes[-1].get_yticklabels()]
    assert labels == ["1", "1.1", "1.25"]  # fitted to the ratios: nothing below 1 is drawn


def test_log_colorbar_ticks_round():
    assert log_ticks(0.02, 0.65) == [0.02, 0.05, 0.1, 0.2, 0.5]
    assert log_ticks(3e-6, 8e-3) == [1e-5, 1e-4, 1e-3]
    fig = fig_heatmaps(grid_table(levels=(0.2, 0.8), grow=5.0), "act_rms")
    shared = fig.axes[3]  # panels A, B, ratio; then the shared colour bar of A and B
    assert isinstance(fig.axes[0].collections[0].norm, LogNorm)
    assert [t.get_text() for t in shared.get_yticklabels()] == ["3", "10", "30", "100"]  # values 1.2 .. 225
    assert not shared.yaxis.get_minorticklocs().size


def test_a_horizontal_log_colour_bar_has_no_minor_labels():
    """The round ticks stand alone on a bar under its panels too: no 3x10^-1-style minor label beside 0.2."""
    from dardiag.plots.heatmap import round_log_colorbar

    fig, ax = plt.subplots(figsize=(2.5, 1.5))
    mesh = ax.pcolormesh(np.array([[0.15, 1.6]]), norm=LogNorm(0.15, 1.6))
    cb = fig.colorbar(mesh, ax=ax, location="bottom")
    round_log_colorbar(cb)
    fig.draw_without_rendering()
    assert [t.get_text() for t in cb.ax.get_xticklabels()] == ["0.2", "0.5", "1"]
    assert not cb.long_axis.get_minorticklocs().size
    plt.close(fig)


def test_training_step_ticks_are_whole_steps():
    from dardiag.plots import plot_metric_vs_step

    rows = [dict(model="A", metric="loss", step=s, noise_level=0.5, value=1.0 - s / 100) for s in (0, 1, 2)]
    fig, ax = plt.subplots(figsize=(3.5, 2.5))
    plot_metric_vs_step(pd.DataFrame(rows), "loss", ax=ax, legend=False)
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 2]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks  # never 0.5 or 12.5
    plt.close(fig)


# ============================================================================ the inputs footer


def footer(fig) -> list[str]:
    return [t.get_text() for t in fig.texts if t.get_text().startswith("inputs")]


def test_footer_absent_without_inputs():
    for d in (grid_table(), grid_table(inputs=np.nan), grid_table(inputs="")):
        assert footer(fig_heatmaps(d, "act_rms")) == []


def test_footer_one_line_when_models_share_inputs():
    d = grid_table(inputs="held-out digits (file /data/mnist/heldout-latents.npz, 64 images)")
    fig = fig_heatmaps(d, "act_rms")
    assert footer(fig) == ["inputs: held-out digits (file heldout-latents.npz, 64 images)"]
    assert fig.texts[0].get_color() != "black"


def test_footer_per_model_when_inputs_differ_and_grows_figure():
    d = grid_table(inputs={"A": "synthetic: standard normal latents", "B": "held-out digits"})
    plain = fig_heatmaps(grid_table(), "act_rms").get_figheight()
    fig = fig_heatmaps(d, "act_rms")
    (text,) = footer(fig)
    assert text.split("\n") == ["inputs (A): synthetic: standard normal latents", "inputs (B): held-out digits"]
    assert fig.get_figheight() > plain  # the footer adds room instead of shrinking the panels


def test_footer_truncated_and_on_every_fig(tmp_path):
    long = "synthetic: " + "very " * 60 + "long"
    lines = inputs_lines(pd.DataFrame({"model": ["a"], "inputs": [long]}), width=60)
    assert len(lines) == 1 and 50 < len(lines[0]) <= 60 and lines[0].endswith("\u2026")
    got = shorten("samples drawn by DiT-XL/2 (~/runs/a/ckpt/0400000.pt)", 80)
    assert got == "samples drawn by DiT-XL/2 (0400000.pt)"  # paths shortened, a model name kept
    d = grid_table(inputs="held-out digits")
    probe = [dict(model="A", metric="probe_r2", site="z", block=k, value=0.9, inputs="held-out digits") for k in range(3)]
    d = pd.concat([d, pd.DataFrame(probe)])
    for fig in (fig_symptoms(d), fig_heatmaps(d, "act_rms"), fig_probe(d)):
        assert footer(fig) == ["inputs: held-out digits"]
    results = dict(render_all(d[d["metric"] == "probe_r2"], tmp_path))  # one figure: quick
    assert results["probe"] == tmp_path / "probe.pdf"


# ============================================================================ theme and saving


def test_paper_style_is_the_seaborn_paper_theme():
    before = dict(matplotlib.rcParams)
    with paper_style():
        rc = matplotlib.rcParams
        assert rc["pdf.fonttype"] == 42 and rc["figure.constrained_layout.use"]
        assert min(rc["font.size"], rc["xtick.labelsize"], rc["legend.fontsize"]) >= 7
        assert rc["axes.prop_cycle"].by_key()["color"][0] == OKABE_ITO[0]
        assert not rc["axes.spines.top"] and not rc["patch.force_edgecolor"]
    assert dict(matplotlib.rcParams) == before


def test_save_keeps_the_figure_layout_engine(tmp_path):
    fig = fig_heatmaps(grid_table(levels=(0.2, 0.8)), "act_rms")
    engine = fig.get_layout_engine()
    pdf, png = save(fig, tmp_path / "h")
    assert fig.get_layout_engine() is engine
    assert pdf.read_bytes()[:4] == b"%PDF" and png.stat().st_size > 0
    assert b"FontFile2" in pdf.read_bytes()  # TrueType embedded (fonttype 42)
