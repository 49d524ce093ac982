"""Timestep probe: held-out R^2 of predicting the noise level from each block's state."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from dardiag.plots import _data
from dardiag.plots.style import BLOCK_LABEL, SUBLAYER_LABEL, metric_label, model_colors, model_handles

SITE_INDEX = {"z": "block", "h": "sublayer"}


def plot_probe_r2(df: pd.DataFrame, *, ax: Axes | None = None, site: str = "z", legend: bool = True) -> Axes:
    """``probe_r2`` over depth, one line per model (``site="z"``: per block; ``"h"``: per sublayer).

    The raw-input reference (site ``x_t``) is a dashed horizontal line: one grey line when every model
    has the same value, else one per model in its colour.
    """
    if site not in SITE_INDEX:
        raise ValueError(f"site must be one of {sorted(SITE_INDEX)}, got {site!r}")
    ax = ax if ax is not None else plt.gca()
    colors = model_colors(df["model"].dropna().unique()) if "model" in df.columns else {}
    rows = _data.latest_checkpoint(_data.metric_rows(df, "probe_r2"))
    x = SITE_INDEX[site]
    site_col = rows["site"] if "site" in rows.columns else pd.Series(index=rows.index, dtype=object)
    sub = rows[(site_col == site) & rows[x].notna()] if x in rows.columns else rows.iloc[:0]
    if sub.empty:
        raise ValueError(f"no probe_r2 rows at site {site!r} with a {x} index")
    models = sorted(sub["model"].unique().tolist())
    for m in models:
        s = sub[sub["model"] == m].groupby(x)["value"].mean().sort_index()
        ax.plot(s.index.astype(float), s.to_numpy(dtype=float), color=colors[m], marker="o", label=m)

    handles = model_handles({m: colors[m] for m in models})
    ref = rows[site_col == "x_t"].groupby("model")["value"].mean()
    if len(ref):
        same = np.allclose(ref.to_numpy(dtype=float), float(ref.iloc[0]), rtol=0, atol=1e-9)
        if same:
            ax.axhline(float(ref.iloc[0]), color="0.4", linestyle="--", linewidth=0.9, label=r"raw $x_t$")
            handles.append(Line2D([], [], color="0.4", linestyle="--", label=r"raw $x_t$"))
        else:
            for m, v in ref.items():
                ax.axhline(float(v), color=colors.get(m, "0.4"), linestyle="--", linewidth=0.9, label=f"{m}, raw $x_t$")
            handles.append(Line2D([], [], color="0.4", linestyle="--", label=r"raw $x_t$ (model colour)"))

    lo = min(0.0, float(np.nanmin(rows["value"].to_numpy(dtype=float))))
    ax.set_ylim(max(lo, -1.0) - 0.02, 1.02)
    ax.set_xlabel(BLOCK_LABEL if x == "block" else SUBLAYER_LABEL)
    ax.set_ylabel(metric_label("probe_r2") + ", held out")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if legend:
        ax.legend(handles=handles, loc="lower right")
    return ax
