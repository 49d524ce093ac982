"""The paper look, in one place: seaborn's "paper" context, sizes, palettes, and atomic saving.

:func:`paper_style` is seaborn's ``paper`` context and ``ticks`` style, scaled so that text is 7-8 pt
at print size, with the Okabe-Ito colour cycle, constrained layout and embedded TrueType fonts in PDF.
It is a context manager: nothing leaks into the caller's rcParams.

Colours are assigned to models by *sorted display name*, so a model keeps its colour in every figure
made from the same table. Several noise levels of one model are a light-to-dark ramp of the model's
hue: **darker = noisier**.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator

import matplotlib as mpl
import numpy as np
import seaborn as sns
from cycler import cycler
from matplotlib.colors import Colormap, LinearSegmentedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.layout_engine import PlaceHolderLayoutEngine
from matplotlib.text import Text

from dardiag.atomic import atomic_write
from dardiag.plots.legible import LegibleLayout

ONE_COLUMN = 3.5  # inches, single-column width
TWO_COLUMN = 7.1  # inches, full text width
PNG_DPI = 200

# Okabe & Ito (2008) colour-blind-safe palette, most distinct first (yellow last: weak on white).
OKABE_ITO = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
# A marker per model (same order as the colours), so lines stay apart in greyscale print.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"  # ColorBrewer RdBu: colour-blind safe
BAND_ALPHA = 0.2  # +-2 s.e. bands
FOOTER_COLOR = "0.45"

# seaborn's paper context is 9.6 pt text; scaled to 8 pt labels and 7.3 pt ticks and legends.
_FONT_SCALE = 8 / 9.6

_OVERRIDES = {
    # DejaVu Sans first (seaborn prefers Arial): the font mathtext uses, and on every machine the same
    "font.sans-serif": ["DejaVu Sans", "Arial", "Liberation Sans", "sans-serif"],
    "axes.titlesize": 8,
    "legend.title_fontsize": 7.5,
    "figure.titlesize": 9,
    "figure.labelsize": 8,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "lines.linewidth": 1.2,
    "lines.markersize": 3,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.5,
    "ytick.minor.width": 0.5,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "xtick.minor.size": 1.5,
    "ytick.minor.size": 1.5,
    "patch.force_edgecolor": False,  # seaborn's white patch edges would outline the error bands
    "legend.frameon": False,
    "legend.handlelength": 1.6,
    "figure.dpi": 100,
    "savefig.dpi": PNG_DPI,
    "savefig.bbox": None,  # constrained layout already fits the page; keep the declared size
    "figure.constrained_layout.use": True,
    "pdf.fonttype": 42,  # embed TrueType: editable text, accepted by publishers
    "ps.fonttype": 42,
    "image.cmap": SEQUENTIAL_CMAP,
    "axes.formatter.useoffset": False,  # 0.9995, 0.9996 rather than "+9.995e-1" and 0, 1e-4
}


def paper_rc(**overrides) -> dict:
    """The rcParams of the paper look (seaborn paper context + ticks style + the overrides above)."""
    rc: dict = {}
    rc.update(sns.axes_style("ticks"))
    rc.update(sns.plotting_context("paper", font_scale=_FONT_SCALE))
    rc.update(_OVERRIDES)
    rc.update(overrides)
    return rc


@contextlib.contextmanager
def paper_style(**overrides) -> Iterator[None]:
    """Temporarily apply the paper look (fonts >= 7 pt, thin lines, constrained layout)."""
    with mpl.rc_context(paper_rc(**overrides)):
        yield


def figsize(columns: int = 1, height: float | None = None, aspect: float = 0.7) -> tuple[float, float]:
    """(width, height) in inches for a one- or two-column figure."""
    if columns not in (1, 2):
        raise ValueError(f"columns must be 1 or 2, got {columns}")
    width = ONE_COLUMN if columns == 1 else TWO_COLUMN
    return width, height if height is not None else width * aspect


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout that thins colliding tick labels (``LegibleLayout``), which
    pyplot does not track (never shown, freed when dropped)."""
    return Figure(figsize=(width, height), layout=LegibleLayout())


def colormap(cmap) -> "mpl.colors.Colormap":
    """A colormap (name or object) whose missing cells (NaN / masked) show light grey."""
    return mpl.colormaps.get_cmap(cmap).with_extremes(bad="0.85")


# ============================================================================ colours


def model_colors(models: Iterable[str]) -> dict[str, str]:
    """Okabe-Ito colours by sorted model name (cycling after eight)."""
    names = sorted({str(m) for m in models})
    return {m: OKABE_ITO[i % len(OKABE_ITO)] for i, m in enumerate(names)}


def model_markers(models: Iterable[str]) -> dict[str, str]:
    """A marker per model, by sorted name like the colours."""
    names = sorted({str(m) for m in models})
    return {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(names)}


def shade(color: str, frac: float) -> tuple[float, float, float]:
    """``color`` mixed with white: ``frac`` = 1 is the full colour, 0 is white."""
    rgb = np.asarray(to_rgb(color))
    return tuple(1.0 - frac * (1.0 - rgb))


def ramp(color: str, n: int, lightest: float = 0.35) -> list[tuple[float, float, float]]:
    """``n`` shades of one hue, light to dark (use the dark end for the noisiest level)."""
    if n <= 1:
        return [shade(color, 1.0)]
    return [shade(color, f) for f in np.linspace(lightest, 1.0, n)]


def level_cmap(color: str) -> Colormap:
    """The noise-level colour map of a model drawn in ``color``: light (clean, 0) to dark (noise, 1),
    through the model's own colour at 0.5."""
    dark = tuple(0.55 * c for c in to_rgb(color))
    return LinearSegmentedColormap.from_list(f"levels {color}", [shade(color, 0.22), to_rgb(color), dark])


def no_ligatures(fig: Figure) -> None:
    """Turn off ligatures (fi, fl) in the figure's texts. Matplotlib >= 3.11 shapes text, and a
    ligature glyph has no character of its own, so the PDF would embed DejaVu Sans a second time
    just for it: a fifth of the time of saving a figure, for a difference invisible at 7 pt.
    (Matplotlib 3.11 applies font features to the first line of a text only: keep texts that may
    hold "fi", "ff" or "fl" on one line.)"""
    if not hasattr(Text, "set_fontfeatures"):  # matplotlib < 3.11 does not shape text
        return
    texts = list(fig.texts)
    for legend in list(fig.legends) + [ax.get_legend() for ax in fig.axes]:
        if legend is not None:
            texts += [*legend.get_texts(), legend.get_title()]
    for ax in fig.axes:  # the words; tick labels are numbers (and a full findobj walk is slow)
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
    for text in texts:
        text.set_fontfeatures(["-liga"])


# ============================================================================ saving


def save(fig, path_stem: str | os.PathLike, *, dpi: int = PNG_DPI) -> tuple[Path, Path]:
    """Write ``{path_stem}.pdf`` (vector) and ``{path_stem}.png`` (``dpi`` >= 200) atomically.

    ``fig`` is a :class:`~matplotlib.figure.Figure` or a seaborn grid (``FacetGrid``, ``relplot``'s
    result): anything with a ``.figure``. Each file is rendered to a hidden temp file beside its
    destination and renamed into place, so a reader never sees half a figure. The layout is solved
    once and reused for both files. Returns ``(pdf_path, png_path)``.
    """
    if dpi < 200:
        raise ValueError(f"dpi must be >= 200 for print, got {dpi}")
    fig = getattr(fig, "figure", fig)
    if not isinstance(fig, Figure):
        raise TypeError(f"expected a matplotlib Figure or a seaborn grid, got {type(fig).__name__}")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with mpl.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}), _layout_once(fig):
        for fmt in ("pdf", "png"):
            dest = stem.with_name(stem.name + "." + fmt)
            atomic_write(dest, lambda f, _fmt=fmt: fig.savefig(f, format=_fmt, dpi=dpi if _fmt == "png" else None))
            out.append(dest)
    return out[0], out[1]


@contextlib.contextmanager
def _layout_once(fig: Figure) -> Iterator[None]:
    """Solve the figure's layout once and save every file inside the block without a layout engine.

    With an engine, each ``savefig`` lays the figure out and measures every text twice (a dry draw,
    then the real one): most of the time of saving. Positions are figure fractions, so one solution
    serves the PDF and the PNG alike. The engine is handed back afterwards (the rc switches below
    only make ``set_layout_engine(None)`` mean "none" rather than "the rc default")."""
    engine = fig.get_layout_engine()
    with mpl.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        if engine is not None and not isinstance(engine, PlaceHolderLayoutEngine):
            engine.execute(fig)
        fig.set_layout_engine(None)
        try:
            yield
        finally:
            fig.set_layout_engine(engine)
