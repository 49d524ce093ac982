"""Where the magnitude comes from (design §9): the per-channel RMS spectrum of a block's state.

A state whose energy sits in a few "massive" channels shows a spectrum that drops by orders of
magnitude after the first few ranks; a bulk-grown state shows a flat one. The depth x noise-level
maps of ``channel_top_share``, ``token_top_share`` and ``act_kurtosis`` are ordinary heatmaps
(:func:`dardiag.plots.fig_heatmaps`, at site z).
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from dardiag.plots import _data
from dardiag.plots.labels import RANK_LABEL, level_label, metric_label
from dardiag.plots.symptoms import log_axis
from dardiag.plots.theme import model_colors, ramp

OUTLIER_METRICS = ("channel_top_share", "token_top_share", "act_kurtosis")
SPECTRUM_METRIC = "channel_act_rms"
TOP_SHARE_GID = "top-1%"


def spectrum_rows(
    df: pd.DataFrame, *, model: str, noise_level: float | None = None
) -> tuple[pd.DataFrame, float | None]:
    """``channel_act_rms`` rows of ``model`` at site z (latest checkpoint) holding a channel map, at
    ``noise_level`` (nearest available; default the middle one). Returns (rows, level drawn)."""
    sub = _data.metric_rows(df, SPECTRUM_METRIC)
    sub = sub[sub["model"] == model]
    if sub.empty:
        present = sorted(df.loc[df["metric"] == SPECTRUM_METRIC, "model"].unique().tolist())
        raise ValueError(f"model {model!r} has no {SPECTRUM_METRIC} rows; models with it: {present}")
    if "channel_values" not in sub.columns:
        raise ValueError(f"{SPECTRUM_METRIC} rows carry no channel_values (optional maps: --channel-maps)")
    sub = _data.latest_checkpoint(sub)
    if "site" in sub.columns:
        sub = sub[sub["site"] == "z"]
    sub = sub[sub["block"].notna() & sub["channel_values"].map(_has_values)] if "block" in sub.columns else sub.iloc[:0]
    if sub.empty:
        raise ValueError(f"{model!r} has no {SPECTRUM_METRIC} rows at site z with a block and channel values")
    levels = _data.levels_of(sub)
    level = None
    if levels:
        want = levels[len(levels) // 2] if noise_level is None else noise_level
        sub = _data.select_level(sub, want)
        level = float(sub["noise_level"].iloc[0])
    _data.single_valued(sub, "channel spectrum", ignore=("block",))
    return sub, level


def _has_values(v) -> bool:
    try:
        return v is not None and len(v) > 0
    except TypeError:
        return False


def default_blocks(blocks: Sequence[int]) -> list[int]:
    """A shallow (block 1 when there, else the first), a middle and the last block."""
    b = sorted({int(x) for x in blocks})
    shallow = 1 if 1 in b else b[0]
    middle = b[len(b) // 2]
    return sorted({shallow, middle, b[-1]})


def plot_channel_spectrum(
    df: pd.DataFrame,
    *,
    model: str,
    blocks: Sequence[int] | None = None,
    noise_level: float | None = None,
    ax: Axes | None = None,
    legend: bool = True,
) -> Axes:
    """Per-channel RMS of z_k (``channel_act_rms``'s ``channel_values``) sorted from the largest
    channel down, on a log y axis against channel rank, one line per block (light = shallow, dark =
    deep, in the model's colour).

    ``blocks``: default a shallow, a middle and the last block. ``noise_level``: nearest available,
    default the middle one. A dotted line marks the top ceil(d/100) channels, whose share of the
    energy is ``channel_top_share``.
    """
    ax = ax if ax is not None else plt.gca()
    colors = model_colors(df["model"].dropna().unique())
    sub, level = spectrum_rows(df, model=model, noise_level=noise_level)
    have = sorted(int(b) for b in sub["block"].unique())
    picks = default_blocks(have) if blocks is None else [int(b) for b in blocks]
    missing = sorted(set(picks) - set(have))
    if missing:
        raise ValueError(f"{model!r} has no channel spectrum at block(s) {missing}; blocks: {have}")
    width = 0
    for b, color in zip(picks, ramp(colors[model], len(picks), lightest=0.4)):
        maps = [np.asarray(v, dtype=float) for v in sub.loc[sub["block"] == b, "channel_values"]]
        rms = np.sqrt(np.mean(np.stack(maps) ** 2, axis=0)) if len(maps) > 1 else maps[0]
        spectrum = np.sort(rms[np.isfinite(rms)])[::-1]
        width = max(width, spectrum.size)
        ax.plot(np.arange(1, spectrum.size + 1), spectrum, color=color, label=f"block {b}")
    log_axis(ax, "y")
    log_axis(ax, "x")  # ranks 1, 10, 100: the few massive channels get room at the left
    top = math.ceil(width / 100)
    ax.axvline(top, color="0.5", linestyle=":", linewidth=0.8, zorder=0, gid=TOP_SHARE_GID)
    ax.set_xlabel(RANK_LABEL)
    ax.set_ylabel(metric_label(SPECTRUM_METRIC))
    ax.set_title(model if level is None else f"{model}, noise {level_label(level)}")
    if legend:
        handles = ax.get_legend_handles_labels()[0]
        handles.append(Line2D([], [], color="0.5", linestyle=":", linewidth=0.8, label=f"top 1% ({top} of {width})"))
        ax.legend(handles=handles, loc="best")
    return ax
