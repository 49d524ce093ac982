"""The timestep probe of a model (diagnostics.md section 6): pooled states of every level -> probe_r2 rows.

The engine keeps, per level, each state mean-pooled over tokens (``LevelCollector.probe_feats``); once
every level is done, a ridge regression per state predicts the noise level, split by (x0, noise) pair.

``value`` is the held-out R^2 on the standard pair-disjoint split (a quarter of the pairs held out,
``metrics.ridge_r2``); ``stderr`` is the spread of the R^2 over the four pair-disjoint folds that hold
out each quarter in turn (their standard deviation, ddof 1): how much another split of the same pairs
would move the number (diagnostics.md section 8).
"""

from __future__ import annotations

import torch

import statistics

from dardiag.metrics import ridge_r2_folds
from dardiag.store.registry import PROBE_MIN_PAIRS


def probe_rows(features: dict[str, list[torch.Tensor]], levels: list[torch.Tensor], ids: list[torch.Tensor],
               seed: int) -> list[dict]:
    """Rows of ``probe_r2`` per probed state; ``features[site]`` are per-level [M_l, D] pooled states,
    ``levels`` and ``ids`` the noise level and the pair id of each row."""
    target = torch.cat(levels)  # (M,)
    groups = torch.cat(ids)  # (M,)
    if torch.unique(groups).numel() < PROBE_MIN_PAIRS or torch.unique(target).numel() < 2:
        return []
    out = []
    for site, chunks in features.items():
        folds = ridge_r2_folds(torch.cat(chunks), target, groups, seed=seed)
        kind, _, idx = ("x_t", "", "") if site == "x_t" else site.partition("_")
        row = dict(metric="probe_r2", value=folds[0], stderr=statistics.stdev(folds), site=kind,
                   n_samples=int(torch.unique(groups).numel()))
        if kind == "z":
            row["block"] = int(idx)
        elif kind == "h":
            row["sublayer"] = int(idx)
        out.append(row)
    return out
