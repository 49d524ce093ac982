"""Timestep probe: held-out R^2 of predicting the noise level from each block's state.

The y axis is fitted to the data with the raw-input (x_t) line in view. Where the R^2 come close to 1
(above 0.95), a linear axis would squeeze 0.995 and 1.000 into one pixel, so the axis is spaced by
1 - R^2 on a log scale ("nines": 0.9, 0.99, 0.999 equally apart), labelled in R^2 itself.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from dardiag.plots import _data, depth
from dardiag.plots.labels import metric_label, model_handles
from dardiag.plots.theme import model_colors, model_markers

SITE_INDEX = {"z": "block", "h": "sublayer"}
ERRORBAR_GID = "stderr-bars"
CUT_GID = "stderr-bar-cut"  # the arrow heads of bars cut at the top of the axis
DODGE = 0.2  # total horizontal spread of the models' points (in blocks) when error bars are drawn


NINES_FROM = 0.95  # R^2 above this: the axis is spaced by 1 - R^2 (log)
NINES_CAP = 1e-6  # 1 - R^2 is drawn at least this far from 1 (a perfect fit sits at the top)
NINES_TICKS = (-1.0, -0.5, 0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999,
               0.99995, 0.99999)


def _nines(y):
    return -np.log10(np.maximum(1.0 - np.asarray(y, dtype=float), NINES_CAP))


def _unnines(u):
    return 1.0 - 10.0 ** (-np.asarray(u, dtype=float))


def nines_axis(ax: Axes, lo: float, hi: float) -> None:
    """y spaced by -log10(1 - R^2) from ``lo`` to ``hi``, ticked at round R^2 (0.9, 0.99, 0.999...)."""
    ax.set_yscale("function", functions=(_nines, _unnines))
    ax.set_ylim(lo, hi)
    ticks = [t for t in NINES_TICKS if lo <= t <= hi]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.6g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def plot_probe_r2(df: pd.DataFrame, *, ax: Axes | None = None, site: str = "z", legend: bool = True,
                  models=None, relative: bool | None = None) -> Axes:
    """``probe_r2`` over depth, one line per model (``site="z"``: per block; ``"h"``: per sublayer),
    with +-2 s.e. error bars where the rows carry a finite ``stderr`` (the spread over held-out folds).

    The raw-input reference (site ``x_t``) is a dashed horizontal line: one grey line when every model
    has the same value, else one per model in its colour. The y axis is fitted to the values, their
    bars and x_t; above R^2 = 0.95 it is spaced by 1 - R^2 (see the module). ``models``: which, in
    the legend's order; models of different depth are drawn over relative depth k / D.
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
    have = [str(m) for m in pd.unique(sub["model"])]
    models = [m for m in models if m in have] if models is not None else have
    sub = sub[sub["model"].isin(models)]
    notes = depth.notes(sub, batch=False)  # the probe has no gradient: B does not matter
    rel = depth.depths_differ(sub) if relative is None else relative
    if rel:
        sub = depth.to_relative(sub, x, depth.model_depths(sub))
    cells = pd.concat([_data.collapse(sub[sub["model"] == m], [x]).assign(model=m) for m in models], ignore_index=True)
    cells[x] = cells[x].astype(float)
    bars = np.isfinite(cells["stderr"]).any()
    if bars and len(models) > 1:  # dodge the models a little so that their error bars stand apart
        dodge = DODGE / max(depth.model_depths(rows[rows["site"] == site]).values() or [1]) if rel else DODGE
        offset = {m: dodge * (i - (len(models) - 1) / 2) / max(1, len(models) - 1) for i, m in enumerate(models)}
        cells[x] = cells[x] + cells["model"].map(offset)
    sns.lineplot(
        data=cells, x=x, y="value", hue="model", hue_order=models, palette={m: colors[m] for m in models},
        style="model", style_order=models, markers={m: markers[m] for m in models}, dashes=False,
        markeredgewidth=0, estimator=None, errorbar=None, sort=True, legend=False, ax=ax,
    )
    cut = False
    for m in models:
        c = cells[(cells["model"] == m) & np.isfinite(cells["stderr"])]
        if len(c):
            v, up = c["value"].to_numpy(dtype=float), bar_tops(c)
            bars = ax.errorbar(c[x], v, yerr=[2 * c["stderr"].to_numpy(dtype=float), up - v], fmt="none",
                               ecolor=colors[m], elinewidth=0.8, capsize=0, zorder=1.5)
            bars.lines[2][0].set_gid(ERRORBAR_GID)
            over = up < v + 2 * c["stderr"].to_numpy(dtype=float)
            if over.any():  # the bar goes on past the axis (towards R^2 = 1): an arrow head says so
                ax.plot(c[x].to_numpy()[over], up[over], linestyle="none", marker="^", markersize=3,
                        color=colors[m], zorder=1.6, gid=CUT_GID)
                cut = True

    handles = model_handles({m: colors[m] for m in models}, markers, notes)
    ref = rows[(site_col == "x_t") & rows["model"].isin(models)].groupby("model")["value"].mean()
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
    if cut:
        handles.append(Line2D([], [], color="0.4", marker="^", linestyle="none", markersize=3,
                              label="bar goes on (to 1)"))

    _fit_y(ax, cells, ref.to_numpy(dtype=float))
    depth.label_depth_axis(ax, x, rel)
    ax.set_ylabel(metric_label("probe_r2") + "\non held-out pairs")
    if legend:
        ax.legend(handles=handles, loc="best", frameon=True, framealpha=0.85, edgecolor="none")  # over x_t
    return ax


def bar_tops(cells: pd.DataFrame) -> np.ndarray:
    """Where each +-2 s.e. bar is drawn to: value + 2 s.e., but never past R^2 = 1 and, above
    :data:`NINES_FROM`, at most one nine past the value (R^2 0.9996 +- 0.0012 ends at 0.99996, not at
    1, which the 1 - R^2 spacing would put infinitely far up)."""
    v = cells["value"].to_numpy(dtype=float)
    up = v + 2 * np.nan_to_num(cells["stderr"].to_numpy(dtype=float), nan=0.0)
    cap = np.where(v > NINES_FROM, 1.0 - (1.0 - np.minimum(v, 1.0 - NINES_CAP)) / 10, 1.0)
    return np.minimum(up, cap)


def _fit_y(ax: Axes, cells: pd.DataFrame, ref: np.ndarray) -> None:
    """y limits around the values, their +-2 s.e. bars (as drawn: :func:`bar_tops`) and the x_t lines
    (never below -1)."""
    v = cells["value"].to_numpy(dtype=float)
    se = np.nan_to_num(cells["stderr"].to_numpy(dtype=float), nan=0.0)
    pts = np.concatenate([v - 2 * se, bar_tops(cells), ref])
    pts = pts[np.isfinite(pts)]
    if not pts.size:
        return
    lo, hi = max(-1.0, float(pts.min())), min(1.0, float(pts.max()))
    best = float(np.nanmax(v))
    if best > NINES_FROM:  # spaced by 1 - R^2: the top a little above the highest bar or value
        u_lo, u_hi = _nines(lo), _nines(max(hi, 1.0 - (1.0 - best) / 2))
        pad = 0.04 * (u_hi - u_lo)
        nines_axis(ax, float(_unnines(u_lo - 2 * pad)), float(min(1.0 - NINES_CAP, _unnines(u_hi + pad))))
        return
    pad = max(0.02, 0.08 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)
