"""Timestep linear probe: ridge regression R^2 with a group-disjoint split (diagnostics.md section 6).

Rows are (pair, noise level) samples: a fixed (x0, eps) pair is swept over a grid of noise levels, so
rows of one pair are strongly related. Every split here keeps each pair (group) on one side.

Dimension letters: M samples (rows), F features, G groups (pairs), A candidate alphas.
"""

from typing import Sequence

import torch

__all__ = ["group_split", "fold_splits", "ridge_r2", "ridge_r2_folds"]

DEFAULT_FOLDS = 4  # the standard split holds out 1/4 of the pairs; its 4 folds hold out each quarter in turn

DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)


def _split_ids(num: int, fraction: float, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``order`` (a permutation of ids) into (kept, held out); at least one id on each side."""
    held = min(max(round(fraction * num), 1), num - 1)
    return order[: num - held], order[num - held :]


def group_split(groups: torch.Tensor, test_fraction: float = 0.25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks (train [M], test [M]) such that no group is on both sides; deterministic in ``seed``.

    round(test_fraction * G) groups (at least 1, at most G-1) go to the test side.
    """
    groups = torch.as_tensor(groups)
    if groups.dim() != 1:
        raise ValueError(f"groups must be [M], got shape {tuple(groups.shape)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ids, inverse = torch.unique(groups, return_inverse=True)  # (G,), (M,)
    G = ids.numel()
    if G < 2:
        raise ValueError(f"need at least 2 groups for a disjoint split, got {G}")
    order = torch.randperm(G, generator=torch.Generator().manual_seed(seed))  # (G,)
    _, test_ids = _split_ids(G, test_fraction, order)
    is_test = torch.zeros(G, dtype=torch.bool)
    is_test[test_ids] = True
    test = is_test.to(inverse.device)[inverse]  # (M,)
    return ~test, test


def fold_splits(groups: torch.Tensor, folds: int = DEFAULT_FOLDS, seed: int = 0) -> list[torch.Tensor]:
    """Test masks [M] of ``folds`` pair-disjoint folds that cover every group once.

    Fold 0 is exactly :func:`group_split`'s test side (``test_fraction = 1 / folds``, same seed); the
    other groups, in the same seeded order, are cut into ``folds - 1`` consecutive near-equal folds.
    """
    groups = torch.as_tensor(groups)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    ids, inverse = torch.unique(groups, return_inverse=True)  # (G,), (M,)
    G = ids.numel()
    if G < folds:
        raise ValueError(f"need at least {folds} groups for {folds} folds, got {G}")
    order = torch.randperm(G, generator=torch.Generator().manual_seed(seed))  # (G,)
    rest, first = _split_ids(G, 1.0 / folds, order)
    chunks = [first] + list(torch.tensor_split(rest, folds - 1))
    masks = []
    for chunk in chunks:
        is_test = torch.zeros(G, dtype=torch.bool)
        is_test[chunk] = True
        masks.append(is_test.to(inverse.device)[inverse])  # (M,)
    return masks


def _ridge_fit(X: torch.Tensor, y: torch.Tensor, alphas: Sequence[float]):
    """Standardise X with its own statistics and fit ridge for every alpha (float64).

    Returns (weights [A, F], intercept, mean [F], scale [F]); predict with ((X - mean) / scale) @ w + b.
    Uses the eigen-decomposition of X^T X (primal) or, when F > M, of X X^T (dual), once for all alphas.
    """
    mean = X.mean(dim=0)  # (F,)
    scale = X.std(dim=0, correction=0)  # (F,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # (F,) constant features -> 0
    Xs = (X - mean) / scale  # (M, F)
    b = y.mean()
    yc = y - b  # (M,)
    a = torch.as_tensor(alphas, dtype=X.dtype, device=X.device)  # (A,)
    M, F = Xs.shape
    if F <= M:
        s, V = torch.linalg.eigh(Xs.T @ Xs)  # (F,), (F, F)
        proj = V.T @ (Xs.T @ yc)  # (F,)
        W = (proj / (s.clamp_min(0) + a[:, None])) @ V.T  # (A, F)
    else:
        s, U = torch.linalg.eigh(Xs @ Xs.T)  # (M,), (M, M)
        proj = U.T @ yc  # (M,)
        W = ((proj / (s.clamp_min(0) + a[:, None])) @ U.T) @ Xs  # (A, F) w = X^T (X X^T + a I)^-1 y
    return W, b, mean, scale


def _predict(X: torch.Tensor, fit) -> torch.Tensor:
    W, b, mean, scale = fit
    return ((X - mean) / scale) @ W.T + b  # (M, A)


def ridge_r2(
    features: torch.Tensor,
    target: torch.Tensor,
    groups: torch.Tensor,
    *,
    test_fraction: float = 0.25,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    seed: int = 0,
) -> float:
    """Test R^2 of a ridge probe predicting ``target`` from ``features`` (diagnostics.md section 6).

    1. Split the groups (pair ids) into train and test with :func:`group_split` (disjoint in groups).
    2. Choose alpha on an inner group-disjoint split of the train groups (same fraction, same seed):
       standardise with inner-train statistics, pick the alpha with the lowest validation MSE
       (the first on ties). With a single alpha this step is skipped.
    3. Refit on all train rows (features standardised with train statistics, unpenalised intercept)
       and return R^2 = 1 - SS_res / SS_tot on the test rows (SS_tot around the test mean).
    All arithmetic is float64 on the device of ``features``. Alpha is the absolute L2 penalty on the
    weights of standardised features.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [M, F], got shape {tuple(features.shape)}")
    M = features.shape[0]
    target = torch.as_tensor(target)
    groups = torch.as_tensor(groups)
    if target.shape != (M,) or groups.shape != (M,):
        raise ValueError(f"target and groups must be [{M}], got {tuple(target.shape)} and {tuple(groups.shape)}")
    if len(alphas) == 0 or min(alphas) < 0:
        raise ValueError(f"alphas must be a non-empty list of non-negative numbers, got {alphas}")
    X = features.to(torch.float64)  # (M, F)
    y = target.to(device=X.device, dtype=torch.float64)  # (M,)
    groups = groups.to(X.device)
    if torch.all(y == y[0]):
        raise ValueError("target is constant: R^2 is undefined")

    train, test = group_split(groups, test_fraction, seed)  # (M,), (M,)
    return _heldout_r2(X, y, groups, train, test, alphas=alphas, test_fraction=test_fraction, seed=seed)


def _heldout_r2(X, y, groups, train, test, *, alphas, test_fraction, seed) -> float:
    """Choose alpha on an inner split of the train groups, refit on all of them, R^2 on the test rows."""
    alpha = alphas[0]
    if len(alphas) > 1:
        if torch.unique(groups[train]).numel() < 2:
            raise ValueError("choosing alpha needs at least 2 train groups; pass more groups or a single alpha")
        inner_train, inner_val = group_split(groups[train], test_fraction, seed)
        Xt, yt = X[train], y[train]
        pred = _predict(Xt[inner_val], _ridge_fit(Xt[inner_train], yt[inner_train], alphas))  # (M_val, A)
        mse = (pred - yt[inner_val, None]).square().mean(dim=0)  # (A,)
        alpha = alphas[int(torch.argmin(mse))]

    pred = _predict(X[test], _ridge_fit(X[train], y[train], [alpha]))[:, 0]  # (M_test,)
    y_test = y[test]  # (M_test,)
    ss_tot = (y_test - y_test.mean()).square().sum()
    if ss_tot == 0:
        raise ValueError("the test target is constant: R^2 is undefined")
    ss_res = (y_test - pred).square().sum()
    return float(1.0 - ss_res / ss_tot)


def ridge_r2_folds(
    features: torch.Tensor,
    target: torch.Tensor,
    groups: torch.Tensor,
    *,
    folds: int = DEFAULT_FOLDS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    seed: int = 0,
) -> list[float]:
    """Held-out R^2 of the ridge probe on each of :func:`fold_splits`' pair-disjoint folds.

    The first is :func:`ridge_r2` with ``test_fraction = 1 / folds`` (the value dardiag reports); the
    spread of all of them is what another split of the same pairs would give (its ``stderr``: their
    standard deviation). Each fold chooses its alpha on its own train groups, as :func:`ridge_r2` does.
    """
    X = features.to(torch.float64)  # (M, F)
    y = torch.as_tensor(target).to(device=X.device, dtype=torch.float64)  # (M,)
    groups = torch.as_tensor(groups).to(X.device)
    if torch.all(y == y[0]):
        raise ValueError("target is constant: R^2 is undefined")
    return [_heldout_r2(X, y, groups, ~test, test, alphas=alphas, test_fraction=1.0 / folds, seed=seed)
            for test in fold_splits(groups, folds, seed)]
