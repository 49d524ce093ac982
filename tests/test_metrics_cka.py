"""Unbiased minibatch CKA (diagnostics.md section 4) against naive references and its invariants."""

import math

import pytest
import torch

from dardiag.metrics import CKAAccumulator, cka_rows, hsic1, unbiased_cka

F64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def naive_hsic1(X, Y):
    """Nguyen, Raghu & Kornblith (2021) eq. for HSIC_1, written as explicit loops over entries."""
    n = X.shape[0]
    K = [[0.0 if i == j else float(X[i] @ X[j]) for j in range(n)] for i in range(n)]
    L = [[0.0 if i == j else float(Y[i] @ Y[j]) for j in range(n)] for i in range(n)]
    tr_kl = sum(K[i][j] * L[j][i] for i in range(n) for j in range(n))
    sum_k = sum(map(sum, K))
    sum_l = sum(map(sum, L))
    sum_kl = sum(K[i][k] * L[k][j] for i in range(n) for j in range(n) for k in range(n))
    return (tr_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * sum_kl) / (n * (n - 3))


def biased_cka(X, Y):
    """Textbook linear CKA (Kornblith et al. 2019): centered Grams, biased HSIC."""
    n = X.shape[0]
    H = torch.eye(n, dtype=F64) - 1.0 / n
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return float((K * L).sum() / torch.sqrt((K * K).sum() * (L * L).sum()))


def brute_cka_matrix(minibatches):
    """sum over minibatches of hsic1 per pair, divided at the end."""
    P = len(minibatches[0])
    S = torch.zeros(P, P, dtype=F64)
    for states in minibatches:
        grams = [x.to(F64) @ x.to(F64).T for x in states]
        for i in range(P):
            for j in range(P):
                S[i, j] += hsic1(grams[i], grams[j])
    d = torch.diagonal(S)
    return S / torch.sqrt(torch.outer(d, d))


def test_hsic1_matches_naive_loops():
    X, Y = randn(9, 4, seed=1), randn(9, 3, seed=2)
    Y = Y + X[:, :3]
    ref = naive_hsic1(X, Y)
    assert hsic1(X @ X.T, Y @ Y.T).item() == pytest.approx(ref, rel=1e-10)
    # the diagonal of the given Grams must not matter
    assert hsic1(X @ X.T + torch.eye(9, dtype=F64) * 5, Y @ Y.T).item() == pytest.approx(ref, rel=1e-10)


def test_accumulator_matches_bruteforce_over_minibatches():
    batches = []
    for b in range(3):
        n = 7 + 3 * b
        z0 = randn(n, 5, seed=10 + b)
        z1 = z0 @ randn(5, 6, seed=20 + b) + 0.5 * randn(n, 6, seed=30 + b)
        z2 = randn(n, 4, seed=40 + b) + 3.0  # uncentered on purpose
        batches.append([z0, z1, z2])
    acc = CKAAccumulator(3)
    for states in batches:
        acc.update(states)
    assert acc.count == 3
    torch.testing.assert_close(acc.matrix(), brute_cka_matrix(batches), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(acc.adjacent(), torch.diagonal(acc.matrix(), 1))


@pytest.mark.parametrize(
    "kwargs",
    [dict(method="grams"), dict(method="grams", block_rows=3), dict(method="grams", block_rows=5),
     dict(method="grams", tile_bytes=3 * 8 * 16), dict(method="features")],
    ids=["grams-one-tile", "grams-blocks-3", "grams-blocks-5", "grams-tile-bytes", "features"],
)
def test_every_route_matches_bruteforce(kwargs):
    """Gram tiles of any block size and the feature-space route give the same estimate."""
    batches = []
    for b in range(3):
        n = 11 + 4 * b
        z0 = randn(n, 5, seed=50 + b) + 2.0
        z1 = z0 @ randn(5, 7, seed=60 + b) + 0.3 * randn(n, 7, seed=70 + b) - 1.0
        z2 = randn(n, 3, seed=80 + b) * 4.0
        batches.append([z0, z1, z2])
    acc = CKAAccumulator(3, **kwargs)
    for states in batches:
        acc.update(states)
    torch.testing.assert_close(acc.matrix(), brute_cka_matrix(batches), rtol=1e-9, atol=1e-12)


def test_auto_route_picks_the_cheaper_and_agrees():
    """Many rows, few features: auto takes the feature route (n D^2 / 2 << n^2 D) and equals the Grams."""
    states = [randn(600, 4, seed=s) + s for s in range(3)]
    auto = CKAAccumulator(3)
    n, widths = 600, [4, 4, 4]
    assert auto._use_features(n, widths, auto._blocks(n, 3, torch.device("cpu")))
    assert not auto._use_features(8, [300, 300, 300], auto._blocks(8, 3, torch.device("cpu")))
    auto.update(states)
    grams = CKAAccumulator(3, method="grams")
    grams.update(states)
    torch.testing.assert_close(auto.matrix(), grams.matrix(), rtol=1e-10, atol=1e-12)
    f32 = CKAAccumulator(3, method="features", gram_dtype=torch.float32)
    f32.update(states)
    torch.testing.assert_close(f32.matrix(), grams.matrix(), rtol=0, atol=1e-5)


def test_accumulator_float32_grams_and_low_precision_inputs():
    z0 = randn(64, 16, seed=3)
    z1 = torch.tanh(z0 @ randn(16, 16, seed=4)) + 100.0
    ref = brute_cka_matrix([[z0, z1]])
    acc = CKAAccumulator(2, gram_dtype=torch.float32)
    acc.update([z0.bfloat16(), z1.float()])
    assert acc.sums.dtype == F64
    torch.testing.assert_close(acc.matrix(), ref, rtol=0, atol=2e-2)


def test_self_similarity_is_one():
    z = randn(40, 12, seed=5)
    assert unbiased_cka(z, z) == pytest.approx(1.0, abs=1e-12)
    acc = CKAAccumulator(3)
    acc.update([z, randn(40, 3, seed=6), z * 2])
    m = acc.matrix()
    torch.testing.assert_close(torch.diagonal(m), torch.ones(3, dtype=F64))
    assert m[0, 2].item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(m, m.T)


def test_invariant_to_rotation_scaling_and_translation():
    X = randn(50, 10, seed=7)
    Y = X @ randn(10, 8, seed=8) + randn(50, 8, seed=9)
    Q, _ = torch.linalg.qr(randn(10, 10, seed=10))
    base = unbiased_cka(X, Y)
    assert unbiased_cka(X @ Q, Y) == pytest.approx(base, rel=1e-10)
    assert unbiased_cka(3.7 * X, 0.01 * Y) == pytest.approx(base, rel=1e-10)
    assert unbiased_cka(X + 50.0, Y - 7.0) == pytest.approx(base, rel=1e-8)
    # not invariant to a generic (non-orthogonal) linear map
    A = torch.diag(torch.linspace(0.1, 10, 10, dtype=F64))
    assert abs(unbiased_cka(X @ A, Y) - base) > 1e-3


def test_independent_gaussians_unbiased_small_and_negative_biased_saturates():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(32, 20000, generator=g, dtype=F64)
    Y = torch.randn(32, 20000, generator=g, dtype=F64)
    value = unbiased_cka(X, Y)
    assert -0.1 < value < 0.0  # negative is legitimate; never clamped
    assert biased_cka(X, Y) > 0.95  # the textbook estimator saturates when d >> n


def test_max_rows_equals_manual_subminibatches():
    z = [randn(23, 5, seed=11), randn(23, 6, seed=12), randn(23, 2, seed=13)]
    auto = CKAAccumulator(3, max_rows=10)
    auto.update(z)
    # 23 rows -> [0, 10), [10, 23): the 3-row tail joins the previous chunk
    manual = CKAAccumulator(3)
    for a, b in [(0, 10), (10, 23)]:
        manual.update([x[a:b] for x in z])
    assert auto.count == manual.count == 2
    torch.testing.assert_close(auto.sums, manual.sums, rtol=0, atol=0)
    auto2 = CKAAccumulator(3, max_rows=8)
    auto2.update(z)  # 8 + 8 + 7
    manual2 = CKAAccumulator(3)
    for a, b in [(0, 8), (8, 16), (16, 23)]:
        manual2.update([x[a:b] for x in z])
    torch.testing.assert_close(auto2.sums, manual2.sums, rtol=0, atol=0)


def test_merge_and_state_equal_single_accumulator():
    b1 = [randn(12, 4, seed=14), randn(12, 3, seed=15)]
    b2 = [randn(9, 4, seed=16), randn(9, 3, seed=17)]
    one = CKAAccumulator(2)
    one.update(b1)
    one.update(b2)
    a, b = CKAAccumulator(2), CKAAccumulator(2)
    a.update(b1)
    b.update(b2)
    a.merge(b)
    assert a.count == 2
    torch.testing.assert_close(a.sums, one.sums, rtol=1e-14, atol=0)
    torch.testing.assert_close(a.matrix(), one.matrix())
    c = CKAAccumulator(2)
    c.load_state(one.state())
    torch.testing.assert_close(c.matrix(), one.matrix())


def test_errors():
    with pytest.raises(ValueError):
        hsic1(torch.eye(3), torch.eye(3))
    with pytest.raises(ValueError):
        CKAAccumulator(2).update([randn(3, 2), randn(3, 2)])
    with pytest.raises(ValueError):
        CKAAccumulator(2).update([randn(5, 2), randn(6, 2)])
    with pytest.raises(ValueError):
        CKAAccumulator(2).update([randn(5, 2)])
    with pytest.raises(ValueError):
        CKAAccumulator(2, max_rows=3)
    with pytest.raises(ValueError):
        CKAAccumulator(2, block_rows=0)
    with pytest.raises(ValueError):
        CKAAccumulator(2, method="svd")
    with pytest.raises(ValueError):
        CKAAccumulator(2).matrix()
    with pytest.raises(ValueError):
        cka_rows(randn(2, 3, 4), "channels")


def test_cka_rows_layouts():
    z = randn(2, 3, 4)
    assert torch.equal(cka_rows(z)[4], z[1, 1])
    assert torch.equal(cka_rows(z, "images")[1], z[1].reshape(-1))
    assert cka_rows(z, "images").shape == (2, 12)
    assert not math.isnan(unbiased_cka(cka_rows(randn(2, 4, 3, seed=1)), cka_rows(randn(2, 4, 5, seed=2))))
