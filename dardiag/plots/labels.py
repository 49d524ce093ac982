"""What the figures say in words and numbers: axis labels, rounded noise levels, round ratio ticks,
legends, and the footer naming the inputs (design §10). No drawing of data here.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dardiag.plots.theme import BAND_ALPHA, FOOTER_COLOR, level_cmap, model_markers
from dardiag.store.registry import is_log, metric_label  # noqa: F401 (the plots' labels and scales)

BLOCK_LABEL = "block k (0 = embedding)"
OTHER_BLOCK_LABEL = "block j (0 = embedding)"
SUBLAYER_LABEL = "sublayer l (2D+1 = final)"
SOURCE_LABEL = "source i (0 = embedding)"
NOISE_LABEL = "noise level (1 = pure noise)"
NOISE_LABEL_2 = "noise level\n(1 = pure noise)"  # for panels shorter than the label (1.6 in)
STEP_LABEL = "training step"
RANK_LABEL = "channel rank (1 = largest RMS)"
BAND_LABEL = r"$\pm$2 s.e."
SIGNIFICANT_NOTE = "dots: |difference| > 2 s.e."


# ============================================================================ numbers


def level_labels(levels: Sequence[float]) -> list[str]:
    """Noise levels as short decimals: the fewest decimals that keep the levels distinct and put each
    within 4% of the spacing between them (of its own size, for a single level) of its true value.

    ``[0, 1/7, 2/7, ..., 1]`` reads ``0, 0.14, 0.29, ..., 1``; ``[0.1, 0.5, 0.9]`` reads as is.
    """
    v = np.asarray([float(x) for x in levels], dtype=float)
    if v.size == 0:
        return []
    u = np.unique(v)
    gaps = np.diff(u)
    unit = float(gaps.min()) if gaps.size else (abs(float(u[0])) or 1.0)
    for d in range(0, 7):
        r = np.round(v, d)
        if len(np.unique(r)) == len(u) and np.abs(r - v).max() <= 0.04 * unit + 1e-12:
            break
    return [_decimal(x, d) for x in v]


def level_label(level: float) -> str:
    """One noise level, rounded as :func:`level_labels` rounds a single level."""
    return level_labels([level])[0]


def _decimal(x: float, d: int) -> str:
    s = f"{round(float(x), d):.{d}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


_RATIO_TICK_SETS: tuple[tuple[float, ...], ...] = (
    (0.25, 0.5, 1, 2, 4),
    (0.3, 0.5, 1, 2, 3),
    (0.1, 0.2, 0.5, 1, 2, 5, 10),
    *(tuple(10.0**k for k in range(-12, 13, s)) for s in (1, 2, 3, 4, 6)),
    (0.5, 0.8, 1, 1.25, 2),
    (0.6, 0.8, 1, 1.2, 1.5),
    (0.8, 0.9, 1, 1.1, 1.25),
    (0.9, 0.95, 1, 1.05, 1.1),
    (0.95, 0.98, 1, 1.02, 1.05),
    (0.98, 0.99, 1, 1.01, 1.02),
    (0.99, 0.995, 1, 1.005, 1.01),
)


def ratio_ticks(vmin: float, vmax: float) -> list[float]:
    """Round ticks for a log ratio scale ``[vmin, vmax]`` around 1: 0.25, 0.5, 1, 2, 4 or decades on
    wide ranges, 0.8, 1, 1.25 or 0.9, 1, 1.1 on narrow ones; 3 to 7 ticks covering most of the range."""
    lo, hi = float(vmin), float(vmax)
    if not (lo > 0 and hi > lo):
        return [1.0]
    span = math.log(hi / lo)
    best: tuple[float, list[float]] | None = None
    for ticks in _RATIO_TICK_SETS:
        inside = [float(t) for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if not 3 <= len(inside) <= 7:
            continue
        cover = math.log(inside[-1] / inside[0]) / span
        if cover >= 0.6:
            return inside
        if best is None or cover > best[0]:
            best = (cover, inside)
    if best is not None:
        return best[1]
    ends = sorted({float(f"{lo:.2g}"), 1.0, float(f"{hi:.2g}")})  # a very narrow range: its rounded ends
    return [t for t in ends if lo * (1 - 1e-6) <= t <= hi * (1 + 1e-6)] or [1.0]


def log_ticks(vmin: float, vmax: float) -> list[float] | None:
    """Round ticks for a sequential log scale: decades when they give 3 to 7 ticks, else 1-2-5 or
    1-3 steps (at most 6), else every other decade; None when no round set gives two ticks."""
    lo, hi = float(vmin), float(vmax)
    if not (lo > 0 and hi > lo):
        return None
    k0, k1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1

    def inside(mantissas, stride=1):
        vals = [m * 10.0**k for k in range(k0, k1 + 1) if k % stride == 0 for m in mantissas]
        return [float(f"{v:.6g}") for v in vals if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]

    decades = inside((1,))
    if 3 <= len(decades) <= 7:
        return decades
    for mantissas in ((1, 2, 5), (1, 3)):
        ticks = inside(mantissas)
        if 2 <= len(ticks) <= 6:
            return ticks
    for stride in (2, 3, 4, 6):
        ticks = inside((1,), stride)
        if 2 <= len(ticks) <= 7:
            return ticks
    return decades if len(decades) >= 2 else None


def tick_texts(ticks: Sequence[float]) -> list[str]:
    """Round tick values as text: plain (``0.25``, ``4``, ``1000``) when every tick reads plainly,
    else all as powers of ten (``10^-4``, ``5 x 10^-5``)."""
    vals = [float(v) for v in ticks]
    if all(v == 0 or 1e-3 <= abs(v) < 1e4 for v in vals):
        return [f"{v:g}" for v in vals]
    out = []
    for v in vals:
        k = math.floor(math.log10(abs(v)) + 1e-9) if v else 0
        m = float(f"{v / 10.0**k:.3g}")
        out.append(rf"$10^{{{k}}}$" if m == 1 else rf"${m:g}\times10^{{{k}}}$")
    return out


# ============================================================================ legends


def model_handles(colors: dict[str, str], markers: dict[str, str] | None = None,
                  notes: dict[str, str] | None = None) -> list[Line2D]:
    """Legend proxies: one full-colour line (with the model's marker) per model; ``notes`` adds e.g.
    its depth: ``residual (D = 8)``."""
    markers = markers if markers is not None else model_markers(colors)
    notes = notes or {}
    return [Line2D([], [], color=c, marker=markers.get(m, "o"), label=f"{m} ({notes[m]})" if notes.get(m) else m)
            for m, c in colors.items()]


def band_handle() -> Patch:
    return Patch(facecolor="0.5", alpha=BAND_ALPHA * 2, linewidth=0, label=BAND_LABEL)


def line_legend_handles(
    colors: dict[str, str], models: Iterable[str], levels: Sequence[float] = (), *, band: bool = False,
    notes: dict[str, str] | None = None, of: int | None = None,
) -> list:
    """Handles for line plots: a colour per model (with ``notes``) and the band's meaning when error
    bands are drawn. The noise levels are not legend entries: each model's colour map has its own
    colour bar (:func:`level_colorbar`); when ``levels`` are fewer than the ``of`` the table holds, one
    entry says which are drawn."""
    markers = model_markers(colors)
    handles: list = model_handles({m: colors[m] for m in models}, markers, notes)
    if band:
        handles.append(band_handle())
    if levels and of is not None and of > len(levels):
        handles.append(Line2D([], [], linestyle="none", label=levels_drawn_text(levels, of)))
    return handles


def levels_drawn_text(levels: Sequence[float], of: int) -> str:
    """``5 of 16 noise levels drawn:`` over ``0, 0.27, 0.53, 0.8, 1``: which levels a line plot shows."""
    return f"{len(levels)} of {of} noise levels drawn:\n{', '.join(level_labels(sorted(levels)))}"


LEVEL_BAR_LABEL = "noise level (1 = noise)"


def level_colorbar(fig, color: str, levels: Sequence[float], *, cax=None, ax=None, title: str | None = None,
                   label: str | None = LEVEL_BAR_LABEL, orientation: str = "horizontal"):
    """A colour bar of one model's noise-level colour map (:func:`~dardiag.plots.theme.level_cmap`),
    ticked at 0, 0.5 and 1 with a short mark at every level drawn. In ``cax``, or beside ``ax``."""
    sm = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=level_cmap(color))
    kw = dict(cax=cax) if cax is not None else dict(ax=ax, fraction=0.025, pad=0.015, aspect=30)
    cb = fig.colorbar(sm, orientation=orientation, **kw)
    cb.set_ticks([0.0, 0.5, 1.0], labels=["0", "0.5", "1"])
    cb.ax.minorticks_on()
    cb.long_axis.set_minor_locator(FixedLocator([float(v) for v in levels]))
    cb.outline.set_linewidth(0.4)
    if title:
        cb.ax.set_title(title, fontsize=7, pad=2, loc="left")
    if label:
        cb.set_label(label, fontsize=7)
    return cb


def level_key(fig, axes, models: Sequence[str], colors: dict[str, str], levels: Sequence[float], *,
              band: bool = False, notes: dict[str, str] | None = None, of: int | None = None) -> None:
    """The key of line panels ``axes``: a legend above them (the models, with ``notes``, the band, and
    which levels are drawn when fewer than the ``of`` the table holds), and one colour bar per model
    to their right for its noise levels (darker = noisier, a mark at each level drawn); with one
    level or none, only the legend."""
    handles = line_legend_handles(colors, models, levels, band=band, notes=notes, of=of)
    for ncols in range(min(len(handles), 4), 0, -1):  # as many entries a row as the figure's width holds
        legend = fig.legend(handles=handles, loc="outside upper center", ncols=ncols)
        if ncols == 1 or legend.get_window_extent(fig._get_renderer()).width <= 0.98 * fig.bbox.width:
            break
        legend.remove()
    for m in reversed(models) if len(levels) > 1 else []:  # the last made sits nearest: the first model's
        level_colorbar(fig, colors[m], levels, ax=list(axes), orientation="vertical",
                       label=f"noise level: {m}", title=None)


# ============================================================================ the inputs footer

# an absolute or explicitly relative path (/a/b/c.npz, ~/a/c.npz, ./a/c.npz); not "DiT-XL/2"
_PATH = re.compile(r"(?<![\w.])(?:~|\.{1,2})?/(?:[\w.+-]+/)+([\w.+-]+)")


def shorten(text: str, width: int) -> str:
    """Paths reduced to their file name, then cut to ``width`` characters with an ellipsis."""
    text = _PATH.sub(r"\1", " ".join(str(text).split()))
    return text if len(text) <= width else text[: max(1, width - 1)].rstrip() + "\u2026"


def inputs_lines(rows: pd.DataFrame, width: int = 120) -> list[str]:
    """The footer lines ``inputs: ...`` for the rows a figure draws: one per distinct value, each
    prefixed with its models' names when the models did not all look at the same inputs."""
    if "inputs" not in rows.columns:
        return []
    pairs = pd.DataFrame({
        "model": rows["model"].astype("string") if "model" in rows.columns else pd.NA,
        "inputs": rows["inputs"].astype("string").str.strip(),
    })
    pairs = pairs[pairs["inputs"].notna() & (pairs["inputs"] != "")].drop_duplicates()
    if pairs.empty:
        return []
    by_value = {str(v): sorted(g["model"].dropna().unique()) for v, g in pairs.groupby("inputs", sort=False)}
    if len(by_value) == 1:
        return [shorten(f"inputs: {next(iter(by_value))}", width)]
    ordered = sorted(by_value.items(), key=lambda kv: (kv[1], kv[0]))
    return [shorten(f"inputs ({', '.join(ms)}): {v}" if ms else f"inputs: {v}", width) for v, ms in ordered]


FOOTER_PT = 7


def add_inputs_footer(fig, rows: pd.DataFrame) -> None:
    """A small grey footer naming the inputs (design §10), placed by the layout below the panels.
    The figure grows by the footer's height, so the panels keep their size."""
    width_in = fig.get_figwidth()
    lines = inputs_lines(rows, width=max(40, int(width_in * 72 / (0.55 * FOOTER_PT))))  # ~0.55 em a char
    if lines:
        fig.supxlabel("\n".join(lines), x=0.005, ha="left", fontsize=FOOTER_PT, color=FOOTER_COLOR, linespacing=1.2)
        fig.set_figheight(fig.get_figheight() + (len(lines) * 1.2 * FOOTER_PT + 4) / 72)
