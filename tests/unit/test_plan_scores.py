"""Transferability scores (headstart.plan.scores) against hand-computed values and slow references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from headstart.plan import scores
from headstart.plan.scores import (
    DEFAULT_SCORE,
    SCORES,
    cv_linear_probe_accuracy,
    hscore,
    knn_loo_accuracy,
    ledoit_wolf,
    logme,
    stratified_sample,
)


def _blobs(n: int, d: int, k: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class clusters: labels 0..k-1 (each present), centres ``spread`` apart on average."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(size=(k, d)) * spread
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


# -- LogME ------------------------------------------------------------------------------------


def _log_marginal(F: np.ndarray, t: np.ndarray, log_alpha: np.ndarray, log_beta: np.ndarray) -> np.ndarray:
    """log N(t; 0, I / beta + F F^T / alpha) for arrays of (log alpha, log beta): the evidence
    written directly, without the SVD algebra that logme uses."""
    n = len(t)
    cov = np.eye(n) * np.exp(-log_beta)[..., None, None] + (F @ F.T) * np.exp(-log_alpha)[..., None, None]
    _, log_det = np.linalg.slogdet(cov)
    quad = np.einsum("i,...i->...", t, np.linalg.solve(cov, np.broadcast_to(t, cov.shape[:-1])[..., None])[..., 0])
    return -0.5 * (n * math.log(2 * math.pi) + log_det + quad)


def _nelder_mead(f, x0: np.ndarray, step: float, iters: int = 400) -> tuple[np.ndarray, float]:
    """Minimise f over R^2 with the plain Nelder-Mead simplex (reflect, expand, contract, shrink)."""
    simplex = [x0, x0 + [step, 0.0], x0 + [0.0, step]]
    values = [f(x) for x in simplex]
    for _ in range(iters):
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        centroid = (simplex[0] + simplex[1]) / 2
        reflected = centroid + (centroid - simplex[2])
        fr = f(reflected)
        if fr < values[0]:
            expanded = centroid + 2 * (centroid - simplex[2])
            fe = f(expanded)
            simplex[2], values[2] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[1]:
            simplex[2], values[2] = reflected, fr
        else:
            contracted = centroid + 0.5 * (simplex[2] - centroid)
            fc = f(contracted)
            if fc < values[2]:
                simplex[2], values[2] = contracted, fc
            else:
                simplex = [simplex[0] + 0.5 * (p - simplex[0]) for p in simplex]
                values = [f(p) for p in simplex]
    best = int(np.argmin(values))
    return simplex[best], values[best]


def _logme_by_search(F: np.ndarray, y: np.ndarray) -> float:
    """Mean over classes of max_{alpha, beta} evidence / n: a coarse grid, then Nelder-Mead."""
    F = F.astype(np.float64)
    grid = np.linspace(-12, 12, 25)
    la, lb = np.meshgrid(grid, grid, indexing="ij")
    per_class = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        values = _log_marginal(F, t, la, lb)
        i, j = np.unravel_index(np.argmax(values), values.shape)
        _, neg = _nelder_mead(lambda p: -float(_log_marginal(F, t, np.array(p[0]), np.array(p[1]))), np.array([grid[i], grid[j]]), 0.5)
        per_class.append(-neg / len(y))
    return float(np.mean(per_class))


@pytest.mark.parametrize("n, d", [(20, 3), (8, 12)], ids=["n>d", "n<d"])
def test_logme_equals_the_directly_maximised_evidence(n, d):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    F = rng.normal(size=(n, d))
    F[:, 0] += y  # some signal, so the maximum is interior
    assert logme(F, y) == pytest.approx(_logme_by_search(F, y), abs=1e-6)


def test_logme_prefers_features_that_separate_the_classes():
    F, y = _blobs(200, 16, 4, spread=3.0, seed=1)
    noise = np.random.default_rng(2).normal(size=F.shape).astype(np.float32)
    assert logme(F, y) > logme(noise, y) + 0.1


def test_logme_ignores_row_order_and_feature_scale():
    F, y = _blobs(120, 10, 3, spread=1.0, seed=3)
    order = np.random.default_rng(4).permutation(len(y))
    base = logme(F, y)
    assert logme(F[order], y[order]) == pytest.approx(base, abs=1e-9)
    assert logme(F * 1000.0, y) == pytest.approx(base, abs=1e-7)
    assert logme(F / 1000.0, y) == pytest.approx(base, abs=1e-7)


def test_logme_zero_columns_change_nothing():
    # n < d: 20 zero columns add 20/2 log alpha through d/2 log alpha and take it back through
    # -1/2 log|A| (20 more eigenvalues equal to alpha). LogME.py's n < d branch would add 20/2 log alpha.
    F, y = _blobs(30, 50, 3, spread=1.0, seed=5)
    padded = np.concatenate([F, np.zeros((30, 20), dtype=F.dtype)], axis=1)
    assert logme(padded, y) == pytest.approx(logme(F, y), abs=1e-9)


# -- H-score and Ledoit-Wolf ------------------------------------------------------------------


@pytest.mark.parametrize("shrinkage", [True, False])
def test_hscore_one_dimensional_hand_case(shrinkage):
    # Values 0, 2 (class 0) and 4, 6 (class 1): mean 3, var(F) = (9 + 1 + 1 + 9) / 4 = 5; class
    # means 1 and 5, so var(E[F|y]) = (4 + 4) / 2 = 4 and H = 4 / 5. One feature: no shrinkage.
    F = np.array([[0.0], [2.0], [4.0], [6.0]])
    y = np.array([0, 0, 1, 1])
    assert hscore(F, y, shrinkage=shrinkage) == pytest.approx(0.8, abs=1e-12)


def test_hscore_matches_the_formula_with_explicit_matrices():
    from sklearn.covariance import LedoitWolf

    F, y = _blobs(90, 6, 3, spread=1.0, seed=6)
    F = F.astype(np.float64)
    g = np.stack([F[y == c].mean(0) for c in range(3)])[y]  # (n, d): each row -> its class mean
    cov_g = np.cov(g.T, bias=True)
    plain = np.trace(np.linalg.pinv(np.cov(F.T, bias=True), rcond=1e-15) @ cov_g)
    assert hscore(F, y, shrinkage=False) == pytest.approx(plain, rel=1e-9)
    lw = LedoitWolf().fit(F)
    regularised = np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * cov_g))
    assert hscore(F, y) == pytest.approx(regularised, rel=1e-9)


@pytest.mark.parametrize("n, p", [(50, 8), (10, 30), (40, 1)])
@pytest.mark.parametrize("assume_centered", [False, True])
def test_ledoit_wolf_matches_sklearn(n, p, assume_centered):
    from sklearn.covariance import ledoit_wolf as sk_ledoit_wolf

    X = np.random.default_rng(n * p).normal(size=(n, p)) @ np.diag(np.linspace(0.5, 3.0, p)) + 1.0
    cov, a = ledoit_wolf(X, assume_centered=assume_centered)
    sk_cov, sk_a = sk_ledoit_wolf(X, assume_centered=assume_centered)
    assert a == pytest.approx(sk_a, abs=1e-8)
    np.testing.assert_allclose(cov, sk_cov, atol=1e-8, rtol=0)


# -- kNN leave-one-out ------------------------------------------------------------------------


def _fan() -> tuple[np.ndarray, np.ndarray]:
    """Six 2-D points at angles (degrees) 0, 10, 20 (class 0) and 90, 100, 25 (class 1), at
    different lengths: only the angle matters to cosine similarity."""
    angles = np.radians([0, 10, 20, 90, 100, 25])
    radii = np.array([1.0, 3.0, 0.5, 2.0, 1.0, 4.0])
    F = np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    return F.astype(np.float32), np.array([0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize(
    "k, expected",
    [
        # k=1: 20 deg -> 25 deg (wrong), 25 -> 20 (wrong); the other four are right.
        (1, 4 / 6),
        # k=2: 20 deg sees 25 (class 1) and 10 (class 0): one vote each, 25 is more similar, so
        # class 1 (wrong; a lowest-class tie-break would say right); 25 sees 20 and 10 (wrong).
        (2, 4 / 6),
        # k=3: 20 deg sees 25, 10, 0 -> class 0 (right); 25 sees 20, 10, 0 -> class 0 (wrong).
        (3, 5 / 6),
    ],
)
def test_knn_loo_counts_by_hand(k, expected):
    F, y = _fan()
    assert knn_loo_accuracy(F, y, k=k) == pytest.approx(expected, abs=1e-12)


def test_knn_loo_blocks_give_the_same_answer(monkeypatch):
    F, y = _blobs(300, 8, 5, spread=0.7, seed=7)
    one_block = knn_loo_accuracy(F, y, k=5)
    monkeypatch.setattr(scores, "_KNN_BLOCK_ELEMENTS", 7 * 300)  # 7 rows per block, last one short
    assert knn_loo_accuracy(F, y, k=5) == one_block
    assert 0.2 < one_block < 1.0


def test_knn_default_k_and_bad_k():
    F, y = _blobs(40, 4, 4, spread=2.0, seed=8)  # 10 per class: k = min(10, 10 - 1) = 9
    assert knn_loo_accuracy(F, y) == knn_loo_accuracy(F, y, k=9)
    with pytest.raises(ValueError, match="k must be an integer from 1 to n - 1 = 39"):
        knn_loo_accuracy(F, y, k=40)


# -- cross-validated linear probe -------------------------------------------------------------


def test_cv_probe_separable_data_scores_one():
    F, y = _blobs(60, 5, 3, spread=10.0, seed=9)
    assert cv_linear_probe_accuracy(F, y) == 1.0


def test_cv_probe_random_labels_score_near_chance():
    rng = np.random.default_rng(10)
    F = rng.normal(size=(300, 10)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    assert 0.2 < cv_linear_probe_accuracy(F, y, seed=1) < 0.47


def test_cv_probe_small_classes_reduce_the_folds(monkeypatch):
    used = []
    real = scores._stratified_folds

    def spy(codes, n_folds, seed):
        used.append(n_folds)
        folds = real(codes, n_folds, seed)
        for c in np.unique(codes):  # every fold holds every class
            assert set(folds[codes == c]) == set(range(n_folds))
        return folds

    monkeypatch.setattr(scores, "_stratified_folds", spy)
    F, y = _blobs(23, 4, 3, spread=5.0, seed=11)
    y[:] = [0] * 3 + [1] * 10 + [2] * 10
    accuracy = cv_linear_probe_accuracy(F, y, folds=5)
    assert used == [3] and 0.0 <= accuracy <= 1.0
    cv_linear_probe_accuracy(F, y, folds=2)
    assert used == [3, 2]


def test_cv_probe_single_example_class_is_an_error():
    F, y = _blobs(21, 4, 2, spread=5.0, seed=12)
    y[-1] = 7
    with pytest.raises(ValueError, match=r"at least 2 examples of every class; class\(es\) \[7\] have 1"):
        cv_linear_probe_accuracy(F, y)


# -- registry, inputs, sampling ---------------------------------------------------------------


def test_registry_scores_all_return_floats():
    assert set(SCORES) == {"logme", "hscore", "knn", "linear_probe_cv"}
    assert DEFAULT_SCORE in SCORES
    F, y = _blobs(40, 6, 2, spread=2.0, seed=13)
    for name, score in SCORES.items():
        value = score(F, y)
        assert isinstance(value, float) and math.isfinite(value), name


@pytest.mark.parametrize(
    "F, y, message",
    [
        (np.ones(5), np.zeros(5, dtype=int), "features must be a 2-D array"),
        (np.ones((5, 2)), np.zeros(4, dtype=int), "one entry per feature row"),
        (np.ones((4, 2)), np.array([0.0, 1.0, 0.0, 1.0]), "integer class indices"),
        (np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), "NaN or infinity"),
        (np.zeros((4, 2)), np.array([0, 1, 0, 1]), "all zero"),
        (np.ones((4, 2)), np.zeros(4, dtype=int), "single class"),
    ],
)
def test_bad_inputs_are_rejected_by_every_score(F, y, message):
    for score in SCORES.values():
        with pytest.raises(ValueError, match=message):
            score(F, y)


def test_stratified_sample_caps_balance_and_determinism():
    y = np.repeat(np.arange(5), [100, 40, 7, 2, 1])
    idx = stratified_sample(y, per_class_max=30, total_max=60, seed=0)
    counts = np.bincount(y[idx], minlength=5)
    assert len(idx) == 60 and len(np.unique(idx)) == 60 and idx.dtype == np.int64
    assert list(idx) == sorted(idx)
    # water-filling: classes 2, 3, 4 keep all they have (10), the 50 left split 25 / 25
    assert counts.tolist() == [25, 25, 7, 2, 1]
    np.testing.assert_array_equal(idx, stratified_sample(y, 30, 60, seed=0))
    assert not np.array_equal(idx, stratified_sample(y, 30, 60, seed=1))


def test_stratified_sample_small_budgets():
    y = np.repeat(np.arange(4), [50, 20, 3, 2])
    counts = np.bincount(y[stratified_sample(y, 100, 9, seed=3)], minlength=4)
    assert counts.sum() == 9 and counts.min() >= 2  # min(count, 2) each, 1 spare placed at random
    counts = np.bincount(y[stratified_sample(y, 100, 4, seed=3)], minlength=4)
    assert counts.tolist() == [1, 1, 1, 1]
    everything = stratified_sample(y, 100, 1000, seed=3)
    np.testing.assert_array_equal(everything, np.arange(len(y)))
    assert np.bincount(y[stratified_sample(y, 5, 1000, seed=3)]).tolist() == [5, 5, 3, 2]
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        stratified_sample(y, 100, 3, seed=3)


def test_logme_stays_finite_when_the_features_interpolate_the_labels():
    # n < d: as the fixed point drives alpha / beta to 0, n - gamma reached exactly 0 in float,
    # beta became 0, and the score came out NaN with divide-by-zero warnings (27 rows, 64 dims).
    rng = np.random.default_rng(12)
    n, d, k = int(rng.integers(8, 40)), int(rng.choice([64, 384, 512])), int(rng.integers(2, 8))
    y = np.arange(n) % k
    F = (rng.normal(size=(k, d))[y] * rng.uniform(0, 3) + rng.normal(size=(n, d))).astype(np.float32)
    if rng.random() < 0.5:
        F /= np.linalg.norm(F, axis=1, keepdims=True)
    assert (n, d) == (27, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score = logme(F, y)
    assert np.isfinite(score)
