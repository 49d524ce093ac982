"""Ridge timestep probe (diagnostics.md section 6): group-disjoint split and test R^2."""

import pytest
import torch

from dardiag.metrics import group_split, ridge_r2

F64 = torch.float64


def probe_data(num_groups=24, levels=10, F=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    groups = torch.arange(num_groups).repeat_interleave(levels)  # (M,)
    t = torch.linspace(0, 1, levels, dtype=F64).repeat(num_groups)  # (M,)
    X = torch.randn(num_groups * levels, F, generator=g, dtype=F64)  # (M, F)
    return X, t, groups, g


def test_group_split_is_disjoint_and_deterministic():
    groups = torch.tensor([5, 5, 7, 7, 7, 9, 1, 1, 3, 3, 3, 3, 8, 2])
    train, test = group_split(groups, 0.25, seed=4)
    assert torch.all(train ^ test)
    assert set(groups[train].tolist()).isdisjoint(groups[test].tolist())
    assert len(set(groups[test].tolist())) == 2  # round(0.25 * 7 groups)
    train2, test2 = group_split(groups, 0.25, seed=4)
    assert torch.equal(test, test2)
    splits = {tuple(group_split(groups, 0.25, seed=s)[1].tolist()) for s in range(10)}
    assert len(splits) > 1


def test_linear_target_gives_r2_near_one():
    X, t, groups, g = probe_data()
    w = torch.randn(16, generator=g, dtype=F64)
    X = 0.02 * X + torch.outer(t, w)  # features move linearly with t, plus small noise
    assert ridge_r2(X, t, groups) > 0.99


def test_dual_form_when_features_exceed_samples():
    X, t, groups, g = probe_data(num_groups=8, levels=5, F=400)
    w = torch.randn(400, generator=g, dtype=F64)
    X = 0.1 * X + torch.outer(t, w)
    assert ridge_r2(X, t, groups) > 0.95


def test_noise_gives_r2_at_most_near_zero():
    X, t, groups, _ = probe_data()
    assert ridge_r2(X, t, groups) < 0.1


def test_group_leak_is_not_rewarded():
    # a feature that identifies the group only (a per-pair offset) says nothing about t
    X, t, groups, g = probe_data(num_groups=30, F=8)
    offsets = torch.randn(30, 8, generator=g, dtype=F64)[groups]
    assert ridge_r2(offsets + 0.01 * X, t, groups) < 0.1


def test_errors():
    X, t, groups, _ = probe_data(num_groups=4)
    with pytest.raises(ValueError):
        ridge_r2(X, t, torch.zeros_like(groups))
    with pytest.raises(ValueError):
        ridge_r2(X, torch.ones_like(t), groups)
    with pytest.raises(ValueError):
        ridge_r2(X, t[:-1], groups)
    with pytest.raises(ValueError):
        group_split(groups, test_fraction=1.0)


def naive_ridge_r2(X, t, groups, alpha):
    """Train-standardised ridge with intercept, primal normal equations, R^2 on the test groups."""
    train, test = group_split(groups)
    mu, sd = X[train].mean(0), X[train].std(0, correction=0)
    Xs_tr, Xs_te = (X[train] - mu) / sd, (X[test] - mu) / sd
    b = t[train].mean()
    w = torch.linalg.solve(Xs_tr.T @ Xs_tr + alpha * torch.eye(X.shape[1], dtype=F64), Xs_tr.T @ (t[train] - b))
    pred = Xs_te @ w + b
    return float(1 - ((t[test] - pred) ** 2).sum() / ((t[test] - t[test].mean()) ** 2).sum())


@pytest.mark.parametrize("F", [6, 300])  # primal (F <= M) and dual (F > M) forms
def test_fixed_alpha_matches_normal_equations(F):
    X, t, groups, g = probe_data(num_groups=12, levels=8, F=F, seed=1)
    X = X + torch.outer(t, torch.randn(F, generator=g, dtype=F64))
    for alpha in (0.1, 10.0):
        assert ridge_r2(X, t, groups, alphas=[alpha]) == pytest.approx(naive_ridge_r2(X, t, groups, alpha), rel=1e-8)
