"""Figures that stay legible at any size of model: no colliding tick labels, and data that barely vary
said to be constant rather than stretched over the whole axis or colour scale.

* :class:`LegibleLayout` is constrained layout that, once the panels are placed, measures every
  axis' tick labels (matplotlib's text extents) and keeps every 2nd, 3rd, ... label of an axis
  whose labels overlap, then lays the figure out again. It runs whenever the figure is drawn or
  saved, so a 28-block axis squeezed into a narrow panel reads ``0 7 14 21 28``, never
  ``0 3 6 9 12151821 2427``. :func:`overlapping_tick_labels` is the check (the tests use it too).
* :func:`flat_data` says when values are all zero, or constant to within :data:`FLAT_RTOL` of their
  size without a significant variation; figures then draw them as one value and label them so.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter

FLAT_RTOL = 1e-3  # values spanning less than this fraction of their size are "constant"...
FLAT_SIGNIFICANT = 4.0  # ...unless the span exceeds this many standard errors (a real, if small, variation)
ZERO_ATOL = 1e-30  # values this close to 0 are zero (a float32 result that is mathematically 0)
MIN_GAP_PT = 2.0  # labels closer than this (points) count as colliding


# ============================================================================ tick labels


def _labels(axis: Axis, renderer, minor: bool = False) -> list[tuple[float, str, object]]:
    """(location, text, extent) of the axis' visible, non-empty major tick labels, in axis order (one
    per tick: the side that shows, e.g. the right one of a vertical colour bar); ``minor``: the
    minor tick labels after them (a "3x10^-1" beside "0.2" reads as one number)."""
    out = []
    lo, hi = sorted(axis.get_view_interval())
    for tick in axis.get_major_ticks() + (axis.get_minor_ticks() if minor else []):
        loc = float(tick.get_loc())
        if not lo - 1e-9 * max(1.0, abs(hi - lo)) <= loc <= hi + 1e-9 * max(1.0, abs(hi - lo)):
            continue  # outside the view: matplotlib does not draw it
        for text in (tick.label1, tick.label2):
            if text.get_visible() and text.get_text().strip():
                out.append((loc, text.get_text(), text.get_window_extent(renderer)))
                break
    return out


def _collide(a, b, gap: float) -> bool:
    return a.x0 < b.x1 + gap and b.x0 < a.x1 + gap and a.y0 < b.y1 + gap and b.y0 < a.y1 + gap


def _pairs(labels, gap: float) -> list[tuple[str, str]]:
    return [(labels[i][1], labels[j][1]) for i in range(len(labels)) for j in range(i + 1, len(labels))
            if _collide(labels[i][2], labels[j][2], gap)]


def overlapping_tick_labels(fig: Figure, gap_pt: float = MIN_GAP_PT) -> list[tuple[str, str]]:
    """Pairs of tick-label texts on one axis of ``fig`` whose extents overlap (or come within
    ``gap_pt`` points), after drawing the figure (which lays it out)."""
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    gap = gap_pt * fig.dpi / 72
    return [p for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
            for p in _pairs(_labels(axis, renderer, minor=True), gap)]


def _texts(fig: Figure, renderer) -> list[tuple[object, str, object]]:
    """(owner, text, extent) of every visible text of ``fig``: tick labels (major and minor), axis
    labels, titles and texts of every Axes, legends' texts and the figure's own texts."""
    owned = []  # texts of one owner may touch (an axis' labels are checked by overlapping_tick_labels)
    for i, ax in enumerate(fig.axes):
        for j, axis in enumerate((ax.xaxis, ax.yaxis)):
            owned += [((i, j), t, b) for _, t, b in _labels(axis, renderer, minor=True)]
            if axis.label.get_visible() and axis.label.get_text().strip():
                owned.append(((i, j, "label"), axis.label.get_text(), axis.label.get_window_extent(renderer)))
        for t in (ax.title, ax._left_title, ax._right_title, *ax.texts):
            if t.get_visible() and t.get_text().strip():
                owned.append(((i, "text", id(t)), t.get_text(), t.get_window_extent(renderer)))
        if ax.get_legend() is not None:
            owned += [((i, "legend"), t.get_text(), t.get_window_extent(renderer)) for t in ax.get_legend().get_texts()]
    for k, legend in enumerate(fig.legends):
        owned += [(("fig-legend", k), t.get_text(), t.get_window_extent(renderer)) for t in legend.get_texts()]
    for t in fig.texts:
        if t.get_visible() and t.get_text().strip():
            owned.append((("fig", id(t)), t.get_text(), t.get_window_extent(renderer)))
    return owned


def overlapping_texts(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of texts of ``fig`` that overlap: tick labels of one axis (within :data:`MIN_GAP_PT`),
    and, across the whole figure, any two of: tick labels, axis labels, titles, legends' texts and
    the figure's own texts (strictly overlapping). Draws the figure first (which lays it out)."""
    bad = overlapping_tick_labels(fig)
    owned = _texts(fig, fig._get_renderer())
    for a in range(len(owned)):
        for b in range(a + 1, len(owned)):
            (oa, ta, ba), (ob, tb, bb) = owned[a], owned[b]
            if oa != ob and _collide(ba, bb, -0.5):  # a negative gap: only a real overlap counts
                bad.append((ta, tb))
    return bad


def clipped_texts(fig: Figure, tolerance_px: float = 1.0, *, drawn: bool = False) -> list[str]:
    """Texts of ``fig`` that reach outside the figure (cut off when saved), after drawing it (``drawn``:
    it was drawn since its last change, e.g. by :func:`overlapping_texts`)."""
    if not drawn:
        fig.draw_without_rendering()
    box = fig.bbox
    return [t for _, t, b in _texts(fig, fig._get_renderer())
            if b.x0 < box.x0 - tolerance_px or b.y0 < box.y0 - tolerance_px
            or b.x1 > box.x1 + tolerance_px or b.y1 > box.y1 + tolerance_px]


def _thin(axis: Axis, renderer, gap: float) -> bool:
    """Keep every n-th label (the smallest n without a collision; the first label always stays)."""
    labels = _labels(axis, renderer)
    if not _pairs(labels, gap):
        return False
    for step in range(2, len(labels) + 1):
        if not _pairs(labels[::step], gap):
            break
    kept = labels[::step]
    axis.set_major_locator(FixedLocator([loc for loc, _, _ in kept]))
    axis.set_major_formatter(FixedFormatter([text for _, text, _ in kept]))
    axis.set_minor_formatter(NullFormatter())
    return True


def thin_tick_labels(fig: Figure, renderer, gap_pt: float = MIN_GAP_PT) -> bool:
    """Thin every axis of ``fig`` whose tick labels collide; True when any changed."""
    gap = gap_pt * fig.dpi / 72
    changed = False
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            axis._update_ticks()  # places the ticks and sets their texts at the axes' current size
            changed |= _thin(axis, renderer, gap)
    return changed


class LegibleLayout(ConstrainedLayoutEngine):
    """Constrained layout, then tick labels thinned where they collide, then the layout again."""

    def execute(self, fig):
        out = super().execute(fig)
        for _ in range(3):  # a new layout can shrink other panels: check again (labels only ever thin)
            if not thin_tick_labels(fig, fig._get_renderer()):
                break
            out = super().execute(fig)
        return out


# ============================================================================ flat data


def flat_data(values, stderr=None) -> str | None:
    """``"zero"`` when every finite value is 0, ``"constant"`` when they span less than
    :data:`FLAT_RTOL` of their largest magnitude and (with standard errors) no more than
    :data:`FLAT_SIGNIFICANT` of them, else None (also for no finite value)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    if np.abs(v).max() <= ZERO_ATOL:
        return "zero"
    span = float(v.max() - v.min())
    if span > FLAT_RTOL * float(np.abs(v).max()):
        return None
    if stderr is not None:
        se = np.asarray(stderr, dtype=float).ravel()
        se = se[np.isfinite(se)]
        if se.size and span > FLAT_SIGNIFICANT * float(np.median(se)):
            return None
    return "constant"


def flat_text(values, kind: str) -> str:
    """How a flat panel is labelled: ``all zero`` or ``constant 0.726 (spread 0.04%)``."""
    if kind == "zero":
        return "all zero"
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    mid = float(np.median(v))
    spread = float(v.max() - v.min()) / abs(mid) if mid else 0.0
    return f"constant {mid:.4g}" + (f" (spread {100 * spread:.2g}%)" if spread > 0 else "")


def flat_limits(values: Sequence[float]) -> tuple[float, float]:
    """Axis limits that show flat values as a flat line: their value +-5% (+-1 around 0)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    mid = float(np.median(v)) if v.size else 0.0
    half = 0.05 * abs(mid) if abs(mid) > ZERO_ATOL else 1.0
    return mid - half, mid + half
