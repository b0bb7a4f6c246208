"""Paired statistics: exact McNemar matches hand and exact-integer computations and never
overflows; the paired bootstrap covers a known difference about as often as it claims; verdicts
follow p, alpha, the noise floor and the metric's direction."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from headstart.evaluate.bootstrap import MacroF1, accuracy
from headstart.evaluate.stats import (
    IMPROVEMENT,
    NO_CHANGE,
    REGRESSION,
    PairedResult,
    accuracy_test,
    decide,
    mcnemar_exact,
    paired_bootstrap,
)


def exact_mcnemar(b: int, c: int) -> float:
    """Reference: the definition with exact rational arithmetic."""
    m, k = b + c, min(b, c)
    term = total = 1  # C(m, 0)
    for i in range(k):
        term = term * (m - i) // (i + 1)  # C(m, i + 1), exact
        total += term
    return float(min(Fraction(1), 2 * Fraction(total, 2**m)))


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 5, 2 / 32),                   # 2 * C(5,0) / 2^5
        (1, 9, 2 * (1 + 10) / 1024),      # 2 * (C(10,0) + C(10,1)) / 2^10 = 0.021484375
        (2, 8, 2 * (1 + 10 + 45) / 1024),  # 0.109375
        (0, 1, 1.0),
        (0, 0, 1.0),
        (7, 7, 1.0),
        (6, 7, 1.0),                      # P[X <= 6] = 1/2 exactly for m = 13
        (3, 0, 0.25),                     # 2 / 8
    ],
)
def test_mcnemar_hand_computed_cases(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-15, abs=0)


def test_mcnemar_matches_exact_rational_arithmetic_and_is_symmetric():
    rng = np.random.default_rng(0)
    for _ in range(40):
        b, c = (int(x) for x in rng.integers(0, 1500, size=2))
        assert mcnemar_exact(b, c) == pytest.approx(exact_mcnemar(b, c), rel=1e-12)
        assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_mcnemar_log_gamma_path_agrees_with_exact_integers():
    # 20,001 discordant pairs is just past the integer-comb branch.
    for b, c in ((9_900, 10_101), (9_950, 10_051), (10_011, 9_990)):
        assert mcnemar_exact(b, c) == pytest.approx(exact_mcnemar(b, c), rel=1e-9)


def test_mcnemar_large_counts_do_not_overflow_and_match_the_normal_approximation():
    b, c = 49_800, 50_200  # m = 1e5
    p = mcnemar_exact(b, c)
    assert p == mcnemar_exact(c, b)
    z = (abs(b - c) - 1) / math.sqrt(b + c)  # continuity-corrected normal approximation
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.01)
    assert mcnemar_exact(40_000, 60_000) == 0.0  # ~1e-870: underflows to zero, no error
    assert mcnemar_exact(50_000, 50_000) == 1.0


@pytest.mark.parametrize(("b", "c"), [(-1, 3), (1.5, 2), (True, 2), (2, None)])
def test_mcnemar_refuses_non_counts(b, c):
    with pytest.raises(ValueError, match="non-negative integer"):
        mcnemar_exact(b, c)


def _paired_predictions(rng: np.random.Generator, n: int, probs: tuple[float, float, float, float]):
    """Correctness pairs (both right, old only, new only, both wrong) drawn with ``probs``."""
    kind = rng.choice(4, size=n, p=probs)
    old_right = (kind == 0) | (kind == 1)
    new_right = (kind == 0) | (kind == 2)
    y_true = np.zeros(n, dtype=np.int64)
    return y_true, np.where(old_right, 0, 1), np.where(new_right, 0, 1)


def test_paired_interval_covers_the_true_difference_about_95_percent_of_the_time():
    # True accuracies 0.80 and 0.85 with correlated errors: true delta = 0.10 - 0.05 = 0.05.
    rng = np.random.default_rng(2024)
    repeats, covered = 200, 0
    for i in range(repeats):
        y_true, old, new = _paired_predictions(rng, 300, (0.75, 0.05, 0.10, 0.10))
        res = paired_bootstrap(y_true, old, new, accuracy, n_resamples=1000, seed=i)
        assert res.ci[0] <= res.delta <= res.ci[1]
        covered += res.ci[0] <= 0.05 <= res.ci[1]
    assert 0.90 <= covered / repeats <= 0.99, covered


def test_identical_predictions_give_zero_delta_and_p_one():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=150)
    pred = np.where(rng.random(150) < 0.7, y_true, (y_true + 1) % 3)
    res = paired_bootstrap(y_true, pred, pred, MacroF1(3))
    assert (res.delta, res.ci, res.p, res.n) == (0.0, (0.0, 0.0), 1.0, 150)
    acc = accuracy_test(y_true, pred, pred)
    assert (acc.delta, acc.p) == (0.0, 1.0)


def test_paired_bootstrap_result_fields_and_reproducibility():
    rng = np.random.default_rng(5)
    y_true, old, new = _paired_predictions(rng, 400, (0.70, 0.02, 0.18, 0.10))
    res = paired_bootstrap(y_true, old, new, accuracy, seed=3)
    assert isinstance(res, PairedResult)
    assert res.old == pytest.approx((old == y_true).mean())
    assert res.new == pytest.approx((new == y_true).mean())
    assert res.delta == pytest.approx(res.new - res.old)
    assert res.ci[0] > 0 and res.p == pytest.approx(2 / 2001)  # every resample favours new
    assert paired_bootstrap(y_true, old, new, accuracy, seed=3) == res
    # swapping the models mirrors the interval
    swapped = paired_bootstrap(y_true, new, old, accuracy, seed=3)
    assert swapped.delta == pytest.approx(-res.delta)
    assert swapped.ci == pytest.approx((-res.ci[1], -res.ci[0]))


def test_vectorised_and_generic_metrics_resample_identically():
    rng = np.random.default_rng(9)
    y_true = rng.integers(0, 4, size=120)
    old = np.where(rng.random(120) < 0.6, y_true, rng.integers(0, 4, size=120))
    new = np.where(rng.random(120) < 0.7, y_true, rng.integers(0, 4, size=120))
    macro = MacroF1(4)
    fast = paired_bootstrap(y_true, old, new, macro, n_resamples=200, seed=1)
    slow = paired_bootstrap(y_true, old, new, lambda t, p: macro(t, p), n_resamples=200, seed=1)
    assert fast.delta == pytest.approx(slow.delta)
    assert fast.ci == pytest.approx(slow.ci)
    assert fast.p == pytest.approx(slow.p)


def test_accuracy_test_uses_mcnemar_for_p_and_bootstrap_for_the_interval():
    rng = np.random.default_rng(11)
    y_true, old, new = _paired_predictions(rng, 500, (0.80, 0.04, 0.08, 0.08))
    old_right, new_right = old == y_true, new == y_true
    b, c = int((old_right & ~new_right).sum()), int((~old_right & new_right).sum())
    res = accuracy_test(y_true, old, new, seed=4)
    assert res.p == mcnemar_exact(b, c)
    assert res.delta == pytest.approx((c - b) / 500)
    boot = paired_bootstrap(y_true, old, new, accuracy, seed=4)
    assert res.ci == boot.ci


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pred_new": np.zeros(3, dtype=np.int64)}, "same length"),
        ({"n_resamples": 0}, "n_resamples"),
        ({"seed": -1}, "seed"),
        ({"level": 1.0}, "level"),
        ({"metric": "accuracy"}, "metric must be a function"),
    ],
)
def test_paired_bootstrap_refuses_bad_arguments(kwargs, message):
    args = {"y_true": np.zeros(4, dtype=np.int64), "pred_old": np.zeros(4, dtype=np.int64),
            "pred_new": np.zeros(4, dtype=np.int64), "metric": accuracy}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(**args)
    with pytest.raises(ValueError, match="no examples"):
        paired_bootstrap(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([], dtype=np.int64), accuracy)


def _result(delta: float, p: float) -> PairedResult:
    return PairedResult(old=0.8, new=0.8 + delta, delta=delta, ci=(delta - 0.01, delta + 0.01), p=p, n=1000)


def test_decide_by_p_and_direction():
    assert decide(_result(-0.03, 0.001)) == REGRESSION
    assert decide(_result(0.03, 0.001)) == IMPROVEMENT
    assert decide(_result(0.03, 0.2)) == NO_CHANGE
    assert decide(_result(0.03, 0.04)) == IMPROVEMENT            # default alpha 0.05
    assert decide(_result(0.03, 0.04), alpha=0.01) == NO_CHANGE
    assert decide(_result(0.03, 0.05)) == NO_CHANGE               # p < alpha is strict
    # lower is better (e.g. an error rate): a rise is a regression
    assert decide(_result(0.03, 0.001), higher_is_better=False) == REGRESSION
    assert decide(_result(-0.03, 0.001), higher_is_better=False) == IMPROVEMENT


def test_decide_with_a_noise_floor():
    tiny = _result(-0.004, 1e-6)  # detectable on a big test set, but under half a point
    assert decide(tiny) == REGRESSION
    assert decide(tiny, noise_floor=0.005) == NO_CHANGE
    assert decide(_result(-0.02, 1e-6), noise_floor=0.005) == REGRESSION
    assert decide(_result(-0.005, 1e-6), noise_floor=0.005) == NO_CHANGE  # |delta| must exceed it
    assert decide(_result(-0.02, 0.3), noise_floor=0.005) == NO_CHANGE


@pytest.mark.parametrize(("kwargs", "message"), [({"alpha": 0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"noise_floor": -0.1}, "noise_floor")])
def test_decide_refuses_bad_thresholds(kwargs, message):
    with pytest.raises(ValueError, match=message):
        decide(_result(0.01, 0.01), **kwargs)
