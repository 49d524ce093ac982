"""Block x block CKA matrices at one noise level."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.ticker import MaxNLocator

from dardiag.plots import _data
from dardiag.plots.labels import BLOCK_LABEL, OTHER_BLOCK_LABEL, level_label, metric_label
from dardiag.plots.theme import SEQUENTIAL_CMAP, colormap


def cka_matrix(df: pd.DataFrame, *, model: str, noise_level: float | None) -> pd.DataFrame:
    """The symmetric (D+1) x (D+1) CKA matrix of ``model`` at the nearest available noise level.

    Rows store each pair once or twice; both triangles are filled from whichever is present (the
    mean when both are). A missing diagonal is 1: CKA(z, z) = 1 by definition. Values may be
    negative (unbiased estimator) and are never clamped.
    """
    sub = _data.metric_rows(df, "cka")
    sub = sub[(sub["model"] == model) & sub["block"].notna() & sub["other_block"].notna()]
    if sub.empty:
        raise ValueError(f"model {model!r} has no cka rows with block and other_block")
    sub = _data.select_level(_data.latest_checkpoint(sub), noise_level)
    if sub.empty:
        raise ValueError(f"model {model!r} has no cka rows without a noise level")
    _data.single_valued(sub, "cka matrix", ignore=("block", "other_block"))
    pairs = sub.groupby(["block", "other_block"])["value"].mean()
    blocks = sorted({int(b) for b in sub["block"]} | {int(b) for b in sub["other_block"]})
    pos = {b: i for i, b in enumerate(blocks)}
    total = np.zeros((len(blocks), len(blocks)))
    count = np.zeros_like(total)
    for (i, j), v in pairs.items():
        for a, b in {(pos[int(i)], pos[int(j)]), (pos[int(j)], pos[int(i)])}:
            total[a, b] += v
            count[a, b] += 1
    with np.errstate(invalid="ignore"):
        mat = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    diag = np.isnan(np.diag(mat))
    mat[np.diag_indices_from(mat)] = np.where(diag, 1.0, np.diag(mat))
    return pd.DataFrame(mat, index=pd.Index(blocks, name="block"), columns=pd.Index(blocks, name="other_block"))


def plot_cka_matrix(
    df: pd.DataFrame,
    *,
    model: str,
    noise_level: float | None,
    ax: Axes | None = None,
    norm: Normalize | None = None,
    cmap=None,
    colorbar: bool = True,
) -> Axes:
    """Linear CKA between block states z_k and z_j (both 0 = embedding) at one noise level.

    The colour scale defaults to [min(0, data), max(1, data)]; pass ``norm`` to share it. The mesh
    (one cell per block pair) is ``ax.collections[0]``.
    """
    ax = ax if ax is not None else plt.gca()
    mat = cka_matrix(df, model=model, noise_level=noise_level)
    vals = mat.to_numpy()
    if norm is None:
        finite = vals[np.isfinite(vals)]
        norm = Normalize(min(0.0, float(finite.min())), max(1.0, float(finite.max())))
    cm = colormap(cmap or SEQUENTIAL_CMAP)
    e = _data.edges(mat.index.to_numpy(dtype=float))
    mesh = ax.pcolormesh(e, e, np.ma.masked_invalid(vals), norm=norm, cmap=cm, shading="flat")
    ax.set_aspect("equal")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(OTHER_BLOCK_LABEL)
    ax.set_ylabel(BLOCK_LABEL)
    sub = _data.metric_rows(df, "cka")
    lvl = _data.nearest(_data.levels_of(sub[sub["model"] == model]), [noise_level])[0] if noise_level is not None else None
    ax.set_title(model if lvl is None else f"{model}, noise {level_label(lvl)}")
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label=metric_label("cka"), shrink=0.9)
    return ax
