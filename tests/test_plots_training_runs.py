"""Several training runs in one figure: the symptom summaries per step are the ratios of the table's
cells (with their errors), and every run gets its line in every panel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dardiag.plots import fig_training_runs, plot_symptom_vs_step, symptoms_by_step  # noqa: E402


def _rows() -> pd.DataFrame:
    rows = []
    for m, growth in (("residual", 2.0), ("dar_full", 0.5)):
        for step in (0, 100, 200):
            g = growth * (1 + step / 1000)
            for block, act in ((1, 1.0), (2, g)):
                rows.append(dict(model=m, routing="residual", step=step, noise_level=0.5, metric="act_rms", block=block,
                                 value=act, stderr=0.01))
                rows.append(dict(model=m, routing="residual", step=step, noise_level=0.5, metric="grad_rms", block=block,
                                 value=1.0 / act, stderr=0.01))
            rows.append(dict(model=m, routing="residual", step=step, noise_level=0.5, metric="cka", block=2, other_block=1,
                             value=0.9, stderr=0.01))
            rows.append(dict(model=m, routing="residual", step=step, noise_level=0.5, metric="loss", value=0.1, stderr=0.001))
    return pd.DataFrame(rows)


def test_symptoms_by_step_are_the_cell_ratios():
    s = symptoms_by_step(_rows())
    r = s[(s["model"] == "residual") & (s["step"] == 200)].iloc[0]
    assert r["act_growth"] == pytest.approx(2.4) and r["grad_decay"] == pytest.approx(2.4)
    assert r["act_growth_se"] > 0 and r["mean_adjacent_cka"] == pytest.approx(0.9)
    assert sorted(s["step"].unique()) == [0, 100, 200]


def test_figure_has_every_run_in_every_panel():
    fig = fig_training_runs(_rows())
    axes = [ax for ax in fig.axes if ax.get_lines()]
    assert len(axes) == 4
    assert all(len(ax.get_lines()) == 2 for ax in axes)


def test_unknown_symptom_and_no_steps_are_errors():
    with pytest.raises(ValueError, match="no 'nope'"):
        plot_symptom_vs_step(symptoms_by_step(_rows()), "nope")
    with pytest.raises(ValueError, match="training step"):
        symptoms_by_step(_rows().drop(columns="step"))
