"""A cheap, honest quality score for 16x16 digit samples: a small FID stand-in plus class accuracy.

A scikit-learn MLP (one hidden layer of 64 ReLU units) is trained on the real TRAIN digits. Then
- ``accuracy``: how often it recognises the class each sample was conditioned on;
- ``fd``: the Fréchet distance between its (live) hidden-layer features of the samples and of the real TEST
  digits, as FID does with Inception features (Heusel et al. 2017).
Both come with references measured the same way: ``real_accuracy`` (the classifier on the real test
digits, the ceiling) and ``fd_real`` (real TRAIN digits, as many as there are samples, against the
test digits: what sampling noise alone gives). FD is biased upward for small n, so compare scores only
at equal sample counts. Samples are clamped to [-1, 1] first, as an image would be.

Legend: N images.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import torch

from dardiag.errors import DardiagError
from dardiag.data import DIGITS_CLASSES, DIGITS_SIZE, digits_latents

SPLIT_SEED = 0  # the same held-out digits as training and `dardiag demo`


def _flat(x) -> np.ndarray:
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, DIGITS_SIZE, DIGITS_SIZE):
        raise DardiagError(
            f"digit_score needs samples [N, 1, {DIGITS_SIZE}, {DIGITS_SIZE}] (the digits format), got {list(x.shape)}"
        )
    return x.clamp(-1, 1).reshape(x.shape[0], -1).numpy().astype(np.float64)  # (N, 256)


@lru_cache(maxsize=1)
def _classifier():
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    train, test = digits_latents("train", SPLIT_SEED), digits_latents("test", SPLIT_SEED)
    x_train, x_test, y_test = _flat(train["x0"]), _flat(test["x0"]), test["y"].numpy()
    clf = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-2, max_iter=100, random_state=0)
    # one BLAS thread: a fixed summation order (deterministic), and on a busy 2-core machine
    # multi-threaded BLAS is 20x slower, not faster
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, train["y"].numpy())
    # units dead on every real training digit carry no information and make the covariance singular
    alive = (x_train @ clf.coefs_[0] + clf.intercepts_[0] > 0).any(0)  # (64,)
    clf.alive_ = alive
    real_acc = float((clf.predict(x_test) == y_test).mean())
    return clf, _features(clf, x_test), real_acc, x_train


def _features(clf, x: np.ndarray) -> np.ndarray:
    """The MLP's live hidden units, relu(x W1 + b1): the 'Inception pool features' of this tiny FID."""
    return np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0.0)[:, clf.alive_]  # (N, <= 64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for feature sets (N, F), in float64."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # (F, F)
    with warnings.catch_warnings():
        # a sample set with a constant feature (e.g. all-blank samples) makes S_a singular; scipy warns, the
        # result stays usable, and the check below regularises as pytorch-fid does when it is not
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all():
            eps = 1e-6 * np.eye(s_a.shape[0])
            covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def digit_score(samples, y_cond) -> dict:
    """-> ``{"accuracy", "fd", "real_accuracy", "fd_real", "n"}`` for samples (N, 1, 16, 16) in [-1, 1]."""
    x = _flat(samples)
    y = torch.as_tensor(y_cond).long().cpu().numpy()
    if y.shape != (x.shape[0],):
        raise DardiagError(f"y_cond must hold one label per sample ({x.shape[0]}), got shape {list(y.shape)}")
    if x.shape[0] < 2:
        raise DardiagError("digit_score needs at least 2 samples for a covariance")
    if y.min() < 0 or y.max() >= DIGITS_CLASSES:
        raise DardiagError(f"digit labels must lie in 0..{DIGITS_CLASSES - 1}")
    clf, test_feats, real_acc, x_train = _classifier()
    n = x.shape[0]
    # the floor: n real training digits in a fixed order, against the same test features
    pick = np.random.RandomState(0).permutation(x_train.shape[0])[: min(n, x_train.shape[0])]
    return {
        "accuracy": float((clf.predict(x) == y).mean()),
        "fd": frechet_distance(_features(clf, x), test_feats),
        "real_accuracy": real_acc,
        "fd_real": frechet_distance(_features(clf, x_train[pick]), test_feats),
        "n": int(n),
    }
