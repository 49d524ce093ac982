"""Pure metric maths over tensors (diagnostics.md): no hooks, no I/O, no model imports."""

from dardiag.metrics.change import relative_change
from dardiag.metrics.cka import CKAAccumulator, cka_rows, hsic1, unbiased_cka
from dardiag.metrics.magnitude import rms_from_energy, token_cosine, token_rms
from dardiag.metrics.outliers import energy_sums, kurtosis, top_share
from dardiag.metrics.probe import fold_splits, group_split, ridge_r2, ridge_r2_folds
from dardiag.metrics.routing import route_entropy, route_weights, source_importance

__all__ = [
    "token_rms",
    "token_cosine",
    "rms_from_energy",
    "energy_sums",
    "top_share",
    "kurtosis",
    "fold_splits",
    "ridge_r2_folds",
    "hsic1",
    "CKAAccumulator",
    "cka_rows",
    "unbiased_cka",
    "group_split",
    "ridge_r2",
    "route_weights",
    "route_entropy",
    "source_importance",
    "relative_change",
]
