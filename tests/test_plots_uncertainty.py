"""Plots draw every number with its uncertainty (design §8): +-2 s.e. bands exactly where the table has
a finite stderr, probe error bars, and ratio maps that mark exactly the cells beyond 2 combined s.e."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dardiag.plots import (  # noqa: E402
    fig_heatmaps,
    fig_symptoms,
    plot_metric_by_block,
    plot_metric_vs_step,
    plot_probe_r2,
    plot_ratio_heatmap,
)
from dardiag.plots.heatmap import MARK_GID, NOTE_GID  # noqa: E402
from dardiag.plots.labels import SIGNIFICANT_NOTE  # noqa: E402
from dardiag.plots.probe import CUT_GID, ERRORBAR_GID  # noqa: E402
from dardiag.plots.symptoms import BAND_GID  # noqa: E402

NAN = float("nan")


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def bands(ax):
    return [c for c in ax.collections if c.get_gid() == BAND_GID]


def band_extent(band) -> dict[float, tuple[float, float]]:
    """x -> (lowest, highest) y of a fill_between polygon (all its pieces)."""
    out: dict[float, list[float]] = {}
    for path in band.get_paths():
        for x, y in path.vertices:
            out.setdefault(round(float(x), 9), []).append(float(y))
    return {x: (min(ys), max(ys)) for x, ys in out.items()}


# ============================================================================ bands on line plots


def cos_table(with_stderr: bool = True) -> pd.DataFrame:
    """cos_prev of two models at two levels over blocks 1..4 with a known stderr pattern:
    A@0.2 all finite, A@0.8 all NaN, B@0.2 finite at blocks 1-2 only, B@0.8 all finite."""
    se = {("A", 0.2): [0.01, 0.02, 0.03, 0.04], ("A", 0.8): [NAN] * 4,
          ("B", 0.2): [0.05, 0.05, NAN, NAN], ("B", 0.8): [0.02] * 4}
    rows = []
    for (model, lvl), errs in se.items():
        for k, e in zip(range(1, 5), errs):
            row = dict(model=model, metric="cos_prev", site="z", block=k, noise_level=lvl,
                       value=0.5 + 0.1 * k + lvl + (model == "B"))
            if with_stderr:
                row["stderr"] = e
            rows.append(row)
    return pd.DataFrame(rows)


def test_bands_exactly_where_stderr_is_finite(ax):
    d = cos_table()
    plot_metric_by_block(d, "cos_prev", ax=ax)
    got = bands(ax)
    assert len(got) == 3  # A@0.2, B@0.2 (part), B@0.8; none for A@0.8 (all NaN)
    # each band spans value +- 2 se at exactly the blocks with a finite se
    want = {}
    for (model, lvl), g in d.groupby(["model", "noise_level"]):
        fin = g[np.isfinite(g["stderr"])]
        if len(fin):
            want[model, lvl] = {float(r.block): (r.value - 2 * r.stderr, r.value + 2 * r.stderr)
                                for r in fin.itertuples()}
    extents = [band_extent(b) for b in got]
    for key, spans in want.items():
        match = [e for e in extents if set(e) == set(spans)]
        assert match, f"no band covers exactly blocks {sorted(spans)} for {key}"
        assert any(all(np.allclose(e[x], spans[x]) for x in spans) for e in match), key
    # the legend explains the band
    assert "±2 s.e." in [t.get_text().replace("$\\pm$", "±") for t in ax.get_legend().get_texts()]


def test_no_bands_without_stderr(ax):
    plot_metric_by_block(cos_table(with_stderr=False), "cos_prev", ax=ax)
    assert bands(ax) == []
    assert len(ax.lines) == 4
    assert not any("s.e." in t.get_text() for t in ax.get_legend().get_texts())


def test_band_on_log_axis_stays_positive(ax):
    d = pd.DataFrame(dict(model="m", metric="act_rms", site="z", block=[0, 1, 2], noise_level=0.5,
                          value=[1.0, 10.0, 100.0], stderr=[0.1, 10.0, 1.0]))  # block 1: value - 2 se < 0
    plot_metric_by_block(d, "act_rms", ax=ax)
    assert ax.get_yscale() == "log"
    (band,) = bands(ax)
    ext = band_extent(band)
    assert np.allclose(ext[0.0], (0.8, 1.2)) and np.allclose(ext[2.0], (98.0, 102.0))
    assert ext[1.0][0] > 0 and np.isclose(ext[1.0][1], 30.0)


def test_metric_vs_step_bands(ax):
    rows = [dict(model="m", metric="loss", step=s, checkpoint=f"c{s}", noise_level=0.5, value=1.0 / s,
                 stderr=0.01 / s if s != 300 else NAN) for s in (100, 200, 300)]
    plot_metric_vs_step(pd.DataFrame(rows), "loss", ax=ax)
    (band,) = bands(ax)
    assert set(band_extent(band)) == {100.0, 200.0}


def test_fig_symptoms_legend_has_band_entry_only_with_stderr():
    d = cos_table()
    labels = [t.get_text() for t in fig_symptoms(d).legends[0].get_texts()]
    assert any("s.e." in t for t in labels)
    labels = [t.get_text() for t in fig_symptoms(cos_table(with_stderr=False)).legends[0].get_texts()]
    assert not any("s.e." in t for t in labels)


# ============================================================================ probe error bars


def probe_table(se) -> pd.DataFrame:
    rows = []
    for model, base in (("A", 0.8), ("B", 0.7)):
        for k in range(3):
            rows.append(dict(model=model, metric="probe_r2", site="z", block=k, value=base + 0.05 * k, stderr=se))
    rows.append(dict(model="A", metric="probe_r2", site="x_t", value=0.6, stderr=NAN))
    rows.append(dict(model="B", metric="probe_r2", site="x_t", value=0.6, stderr=NAN))
    return pd.DataFrame(rows)


def test_probe_error_bars_are_two_stderr(ax):
    plot_probe_r2(probe_table(0.02), ax=ax)
    segs = [np.asarray(s) for c in ax.collections if c.get_gid() == ERRORBAR_GID for s in c.get_segments()]
    assert len(segs) == 6  # 2 models x 3 blocks
    for s in segs:
        assert np.isclose(s[1, 1] - s[0, 1], 4 * 0.02)  # value - 2 se .. value + 2 se
    # the models are dodged so their bars stand apart, and each line is still solid
    xs = sorted({round(float(s[0, 0]), 6) for s in segs})
    assert len(xs) == 6
    assert len([line for line in ax.lines if line.get_linestyle() == "-"]) == 2


def test_probe_bars_near_one_stay_on_the_axis_and_say_where_they_are_cut(ax):
    """R^2 0.9996 +- 2 x 0.0006 reaches past 1, which the 1 - R^2 spacing puts infinitely far up: the bar
    is drawn to one nine past its value (an arrow head marks the cut), and the axis holds every bar."""
    rows = [dict(model="A", metric="probe_r2", site="z", block=k, value=v, stderr=se)
            for k, (v, se) in enumerate([(0.99, 0.001), (0.9997, 0.00005), (0.9996, 0.0006)])]
    plot_probe_r2(pd.DataFrame(rows), ax=ax)
    lo, hi = ax.get_ylim()
    segs = [np.asarray(s) for c in ax.collections if c.get_gid() == ERRORBAR_GID for s in c.get_segments()]
    tops = sorted(float(s[:, 1].max()) for s in segs)
    assert all(lo <= float(s[:, 1].min()) and float(s[:, 1].max()) <= hi for s in segs)  # on the axis
    assert np.isclose(tops[-1], 1 - 0.0004 / 10) and np.isclose(tops[1], 0.9998)  # cut vs whole
    (cut,) = [line for line in ax.lines if line.get_gid() == CUT_GID]
    assert list(cut.get_xdata()) == [2] and np.isclose(cut.get_ydata()[0], tops[-1])


def test_probe_without_stderr_has_no_bars(ax):
    plot_probe_r2(probe_table(NAN), ax=ax)
    assert not [c for c in ax.collections if c.get_gid() == ERRORBAR_GID]
    assert list(ax.lines[0].get_xdata()) == [0, 1, 2]  # not dodged


# ============================================================================ ratio marks


def ratio_table(with_stderr: bool = True, all_nan: bool = False) -> pd.DataFrame:
    """Two models, levels 0.25 / 0.75, blocks 0..2. Expected marks (|a-b| > 2 sqrt(se_a^2+se_b^2)):

    level 0.25: block 0 diff 1.0, se .1/.1 (thr .283) -> mark; block 1 diff .25 (thr .283) -> none
                (a single-se rule, 2 x .1, would mark it); block 2 diff .3 -> mark (a summed rule,
                2 x (.1 + .1) = .4, would not).
    level 0.75: block 0 diff 4 but se_a NaN -> none; block 1 diff 5, se 1/1 (thr 2.83) -> mark;
                block 2 diff 0 -> none.
    """
    a = {(0.25, 0): (2.0, 0.1), (0.25, 1): (1.25, 0.1), (0.25, 2): (1.3, 0.1),
         (0.75, 0): (5.0, NAN), (0.75, 1): (6.0, 1.0), (0.75, 2): (1.0, 0.1)}
    b = {(0.25, 0): (1.0, 0.1), (0.25, 1): (1.0, 0.1), (0.25, 2): (1.0, 0.1),
         (0.75, 0): (1.0, 0.1), (0.75, 1): (1.0, 1.0), (0.75, 2): (1.0, 0.1)}
    rows = []
    for model, cells in (("DAR", a), ("res", b)):
        for (lvl, k), (v, se) in cells.items():
            row = dict(model=model, routing="residual" if model == "res" else "dar", metric="act_rms", site="z",
                       block=k, noise_level=lvl, value=v)
            if with_stderr:
                row["stderr"] = NAN if all_nan else se
            rows.append(row)
    return pd.DataFrame(rows)


MARKED = {(0.0, 0.0), (2.0, 0.0), (1.0, 1.0)}  # (block, row): level 0.25 is row 0, level 0.75 row 1


def marks(ax) -> set[tuple[float, float]]:
    dots = [c for c in ax.collections if c.get_gid() == MARK_GID]
    if not dots:
        return set()
    (d,) = dots
    return {(round(float(x), 6), round(float(y), 6)) for x, y in d.get_offsets()}


def test_ratio_marks_exactly_cells_beyond_two_combined_stderr(ax):
    plot_ratio_heatmap(ratio_table(), "act_rms", numerator="DAR", denominator="res", ax=ax)
    assert marks(ax) == MARKED
    assert ax.get_title() == "DAR / res"
    notes = [t.get_text() for t in ax.texts if t.get_gid() == NOTE_GID]
    assert notes == [SIGNIFICANT_NOTE]


@pytest.mark.parametrize("kind", ["no column", "all NaN"])
def test_ratio_without_stderr_no_marks_no_claim(ax, kind):
    d = ratio_table(with_stderr=kind != "no column", all_nan=kind == "all NaN")
    plot_ratio_heatmap(d, "act_rms", numerator="DAR", denominator="res", ax=ax)
    assert marks(ax) == set()
    assert not [t for t in ax.texts if "s.e." in t.get_text()]
    assert "s.e." not in ax.get_title()


def test_ratio_with_stderr_but_nothing_significant_says_none(ax):
    d = ratio_table()
    d["stderr"] = 100.0
    plot_ratio_heatmap(d, "act_rms", numerator="DAR", denominator="res", ax=ax)
    assert marks(ax) == set()
    assert [t.get_text() for t in ax.texts if t.get_gid() == NOTE_GID] == [SIGNIFICANT_NOTE + " (none here)"]


def test_fig_heatmaps_marks_the_ratio_panel():
    fig = fig_heatmaps(ratio_table(), "act_rms")
    ratio_ax = [a for a in fig.axes if a.get_title() == "DAR / res"]
    assert len(ratio_ax) == 1 and marks(ratio_ax[0]) == MARKED
    # the model panels carry no marks
    assert all(marks(a) == set() for a in fig.axes if a.get_title() in ("DAR", "res"))
