"""Paper style: rcParams, figure sizes, a colour-blind-safe model palette, labels and atomic saving.

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
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from dardiag.atomic import atomic_write

ONE_COLUMN = 3.5  # inches, single-column width
TWO_COLUMN = 7.1  # inches, full text width
PNG_DPI = 300
MIN_FONT_PT = 7

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

SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"  # ColorBrewer RdBu: colour-blind safe

# Metrics whose spread covers orders of magnitude: log axes.
LOG_METRICS = frozenset({"act_rms", "grad_rms", "h_rms", "v_rms", "token_act_rms", "token_grad_rms", "loss"})

# Axis labels: what is measured and its convention.
METRIC_LABELS = {
    "act_rms": r"activation RMS of $z_k$",
    "grad_rms": r"gradient RMS of $\partial L/\partial z_k$",
    "cos_prev": r"$\cos(z_{k-1}, z_k)$",
    "cka": "linear CKA (unbiased)",
    "h_rms": r"sublayer input RMS of $h_l$",
    "v_rms": r"sublayer output RMS of $v_l$",
    "route_alpha": r"routing weight $\alpha_{i\to l}$",
    "route_entropy": "routing entropy (nats)",
    "route_importance": r"importance $\partial L/\partial g_{i\to l}$",
    "probe_r2": r"probe $R^2$ (noise level)",
    "token_act_rms": r"token activation RMS of $z_k$",
    "token_grad_rms": r"token gradient RMS of $\partial L/\partial z_k$",
    "loss": "denoising loss (MSE)",
}

BLOCK_LABEL = "block k (0 = embedding)"
OTHER_BLOCK_LABEL = "block j (0 = embedding)"
SUBLAYER_LABEL = "sublayer l (2D+1 = final)"
SOURCE_LABEL = "source i (0 = embedding)"
NOISE_LABEL = "noise level (1 = pure noise)"
STEP_LABEL = "training step"

PAPER_RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.2,
    "lines.markersize": 3,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "xtick.minor.size": 1.5,
    "ytick.minor.size": 1.5,
    "legend.frameon": False,
    "legend.handlelength": 1.6,
    "figure.dpi": 100,
    "savefig.dpi": PNG_DPI,
    "savefig.bbox": None,  # constrained layout already fits the page; keep the declared size
    "figure.constrained_layout.use": True,
    "pdf.fonttype": 42,  # embed TrueType: editable text, accepted by publishers
    "ps.fonttype": 42,
    "image.cmap": SEQUENTIAL_CMAP,
}


@contextlib.contextmanager
def paper_style(**overrides) -> Iterator[None]:
    """Temporarily apply the paper rcParams (fonts >= 7 pt, thin lines, constrained layout)."""
    with mpl.rc_context({**PAPER_RC, **overrides}):
        yield


def figsize(columns: int = 1, height: float | None = None, aspect: float = 0.7) -> tuple[float, float]:
    """(width, height) in inches for a one- or two-column figure."""
    if columns not in (1, 2):
        raise ValueError(f"columns must be 1 or 2, got {columns}")
    width = ONE_COLUMN if columns == 1 else TWO_COLUMN
    return width, height if height is not None else width * aspect


def colormap(cmap) -> "mpl.colors.Colormap":
    """A colormap (name or object) whose missing cells (NaN / masked) show light grey."""
    return mpl.colormaps.get_cmap(cmap).with_extremes(bad="0.85")


def log_axis(ax, axis: str = "y") -> None:
    """Log scale; when the data span less than a decade, tick plain values (0.4, 0.6, ...) instead of
    ``4 x 10^-1``, so a narrow log axis still reads at a glance."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    data = [np.asarray(line.get_ydata() if axis == "y" else line.get_xdata(), dtype=float) for line in ax.lines]
    vals = np.concatenate(data) if data else np.array([])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size and vals.max() / vals.min() < 10:
        target.set_major_locator(MaxNLocator(nbins=5))  # plain, evenly stepped values
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        target.set_minor_formatter(NullFormatter())


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


# ============================================================================ colours


def model_colors(models: Iterable[str]) -> dict[str, str]:
    """Okabe-Ito colours by sorted model name (cycling after eight)."""
    names = sorted({str(m) for m in models})
    return {m: OKABE_ITO[i % len(OKABE_ITO)] for i, m in enumerate(names)}


def shade(color: str, frac: float) -> tuple[float, float, float]:
    """``color`` mixed with white: ``frac`` = 1 is the full colour, 0 is white."""
    rgb = np.asarray(to_rgb(color))
    return tuple(1.0 - frac * (1.0 - rgb))


def ramp(color: str, n: int, lightest: float = 0.35) -> list[tuple[float, float, float]]:
    """``n`` shades of one hue, light to dark (use the dark end for the noisiest level)."""
    if n <= 1:
        return [shade(color, 1.0)]
    return [shade(color, f) for f in np.linspace(lightest, 1.0, n)]


def model_handles(colors: dict[str, str]) -> list[Line2D]:
    """Legend proxies: one full-colour line per model."""
    return [Line2D([], [], color=c, label=m) for m, c in colors.items()]


def level_handles(levels: Iterable[float], lightest: float = 0.35) -> list[Line2D]:
    """Legend proxies: the grey ramp that stands for noise levels (darker = noisier)."""
    levels = list(levels)
    return [
        Line2D([], [], color=c, label=f"noise {lvl:g}")
        for lvl, c in zip(levels, ramp("#000000", len(levels), lightest))
    ]


def model_level_legend(ax, colors: dict[str, str], models: Iterable[str], levels: Iterable[float]) -> None:
    """One legend for line plots: a colour per model, plus the grey ramp when several levels are drawn."""
    handles = model_handles({m: colors[m] for m in models})
    levels = list(levels)
    if len(levels) > 1:
        handles += level_handles(levels)
    ax.legend(handles=handles, loc="best")


# ============================================================================ saving


def save(fig, path_stem: str | os.PathLike, *, dpi: int = PNG_DPI) -> tuple[Path, Path]:
    """Write ``{path_stem}.pdf`` (vector) and ``{path_stem}.png`` (``dpi`` >= 200) atomically.

    Each file is rendered to a hidden temp file beside its destination and renamed into place, so a
    reader never sees half a figure. Returns ``(pdf_path, png_path)``.
    """
    if dpi < 200:
        raise ValueError(f"dpi must be >= 200 for print, got {dpi}")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with mpl.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        for fmt in ("pdf", "png"):
            dest = stem.with_name(stem.name + "." + fmt)
            atomic_write(dest, lambda f, _fmt=fmt: fig.savefig(f, format=_fmt, dpi=dpi if _fmt == "png" else None))
            out.append(dest)
    return out[0], out[1]
