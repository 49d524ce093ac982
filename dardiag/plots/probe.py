"""Timestep probe: held-out R^2 of predicting the noise level from each block's state."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from dardiag.plots import _data
from dardiag.plots.labels import BLOCK_LABEL, SUBLAYER_LABEL, metric_label, model_handles
from dardiag.plots.theme import model_colors, model_markers

SITE_INDEX = {"z": "block", "h": "sublayer"}
ERRORBAR_GID = "stderr-bars"
DODGE = 0.2  # total horizontal spread of the models' points (in blocks) when error bars are drawn


def plot_probe_r2(df: pd.DataFrame, *, ax: Axes | None = None, site: str = "z", legend: bool = True) -> Axes:
    """``probe_r2`` over depth, one line per model (``site="z"``: per block; ``"h"``: per sublayer),
    with +-2 s.e. error bars where the rows carry a finite ``stderr`` (the spread over held-out folds).

    The raw-input reference (site ``x_t``) is a dashed horizontal line: one grey line when every model
    has the same value, else one per model in its colour.
    """
    if site not in SITE_INDEX:
        raise ValueError(f"site must be one of {sorted(SITE_INDEX)}, got {site!r}")
    ax = ax if ax is not None else plt.gca()
    colors = model_colors(df["model"].dropna().unique()) if "model" in df.columns else {}
    markers = model_markers(colors)
    rows = _data.latest_checkpoint(_data.metric_rows(df, "probe_r2"))
    x = SITE_INDEX[site]
    site_col = rows["site"] if "site" in rows.columns else pd.Series(index=rows.index, dtype=object)
    sub = rows[(site_col == site) & rows[x].notna()] if x in rows.columns else rows.iloc[:0]
    if sub.empty:
        raise ValueError(f"no probe_r2 rows at site {site!r} with a {x} index")
    models = sorted(sub["model"].unique().tolist())
    cells = pd.concat([_data.collapse(sub[sub["model"] == m], [x]).assign(model=m) for m in models], ignore_index=True)
    cells[x] = cells[x].astype(float)
    bars = np.isfinite(cells["stderr"]).any()
    if bars and len(models) > 1:  # dodge the models a little so that their error bars stand apart
        offset = {m: DODGE * (i - (len(models) - 1) / 2) / max(1, len(models) - 1) for i, m in enumerate(models)}
        cells[x] = cells[x] + cells["model"].map(offset)
    sns.lineplot(
        data=cells, x=x, y="value", hue="model", hue_order=models, palette={m: colors[m] for m in models},
        style="model", style_order=models, markers={m: markers[m] for m in models}, dashes=False,
        markeredgewidth=0, estimator=None, errorbar=None, sort=True, legend=False, ax=ax,
    )
    for m in models:
        c = cells[(cells["model"] == m) & np.isfinite(cells["stderr"])]
        if len(c):
            bars = ax.errorbar(c[x], c["value"], yerr=2 * c["stderr"], fmt="none", ecolor=colors[m],
                               elinewidth=0.8, capsize=0, zorder=1.5)
            bars.lines[2][0].set_gid(ERRORBAR_GID)

    handles = model_handles({m: colors[m] for m in models}, markers)
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
    if bars:
        handles.append(Line2D([], [], color="0.4", marker="|", linestyle="none", markersize=6, label=r"$\pm$2 s.e."))

    lo = min(0.0, float(np.nanmin(rows["value"].to_numpy(dtype=float))))
    reach = (cells["value"] + 2 * cells["stderr"]).to_numpy(dtype=float)
    top = max(1.0, float(np.nanmax(reach)) if np.isfinite(reach).any() else 1.0)  # bars may pass 1
    ax.set_ylim(max(lo, -1.0) - 0.02, top + 0.02)
    ax.set_xlabel(BLOCK_LABEL if x == "block" else SUBLAYER_LABEL)
    ax.set_ylabel(metric_label("probe_r2") + "\non held-out pairs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if legend:
        ax.legend(handles=handles, loc="lower right")
    return ax
