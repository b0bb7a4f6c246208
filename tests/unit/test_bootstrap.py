"""Percentile-bootstrap intervals: they cover the truth about as often as they claim, are
reproducible, agree between the vectorised and the generic paths, and refuse bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.evaluate import classification_metrics
from headstart.evaluate.bootstrap import MacroF1, accuracy, bootstrap_ci, macro_f1


def test_accuracy_interval_covers_the_true_rate_about_95_percent_of_the_time():
    # Bernoulli(0.8) correctness, n = 400: the 95% interval should contain 0.8 in ~95% of repeats.
    rng = np.random.default_rng(1234)
    covered = 0
    repeats = 200
    for i in range(repeats):
        y_true = np.zeros(400, dtype=np.int64)
        y_pred = np.where(rng.random(400) < 0.8, 0, 1)
        est, low, high = bootstrap_ci(y_true, y_pred, accuracy, n_resamples=1000, seed=i)
        assert low <= est <= high
        covered += low <= 0.8 <= high
    assert 0.90 <= covered / repeats <= 0.99, covered


def test_interval_width_shrinks_with_more_examples():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        y_pred = np.where(rng.random(n) < 0.7, 0, 1)
        _, low, high = bootstrap_ci(np.zeros(n, dtype=np.int64), y_pred, accuracy)
        widths.append(high - low)
    # sd ~ sqrt(p(1-p)/n): 16x the examples -> ~1/4 the width
    assert 0.15 < widths[1] / widths[0] < 0.4


def test_all_correct_is_a_degenerate_interval():
    y = np.array([0, 1, 2, 1, 0, 2, 2])
    assert bootstrap_ci(y, y, accuracy) == (1.0, 1.0, 1.0)
    assert bootstrap_ci(y, y, MacroF1(3)) == (1.0, 1.0, 1.0)


def test_same_seed_same_interval_other_seed_other_interval():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 4, 150)
    y_pred = np.where(rng.random(150) < 0.6, y_true, rng.integers(0, 4, 150))
    a = bootstrap_ci(y_true, y_pred, MacroF1(4), seed=7)
    assert bootstrap_ci(y_true, y_pred, MacroF1(4), seed=7) == a
    assert bootstrap_ci(y_true, y_pred, MacroF1(4), seed=8) != a
    assert a[1] < a[0] < a[2]


def test_vectorised_and_generic_paths_agree():
    """Any f(y_true, y_pred) works; the built-in metrics only compute the same thing faster."""
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, 90)
    y_pred = np.where(rng.random(90) < 0.7, y_true, rng.integers(0, 3, 90))

    def plain_accuracy(t, p):
        return float((t == p).mean())

    def plain_macro_f1(t, p):
        return classification_metrics(t, p, ["a", "b", "c"])["macro_f1"]

    assert bootstrap_ci(y_true, y_pred, plain_accuracy, n_resamples=300, seed=2) == pytest.approx(
        bootstrap_ci(y_true, y_pred, accuracy, n_resamples=300, seed=2)
    )
    assert bootstrap_ci(y_true, y_pred, plain_macro_f1, n_resamples=300, seed=2) == pytest.approx(
        bootstrap_ci(y_true, y_pred, MacroF1(3), n_resamples=300, seed=2)
    )


def test_resamples_are_processed_in_chunks(monkeypatch):
    import headstart.evaluate.bootstrap as bs

    rng = np.random.default_rng(9)
    y_true = rng.integers(0, 2, 50)
    y_pred = rng.integers(0, 2, 50)
    whole = bootstrap_ci(y_true, y_pred, accuracy, n_resamples=200, seed=1)
    monkeypatch.setattr(bs, "_CHUNK_ELEMENTS", 50 * 7)  # 7 resamples per chunk
    assert bootstrap_ci(y_true, y_pred, accuracy, n_resamples=200, seed=1) == whole


def test_macro_f1_matches_classification_metrics():
    rng = np.random.default_rng(11)
    for k in (2, 5):
        y_true = rng.integers(0, k, 60)
        y_pred = rng.integers(0, k - 1, 60)  # class k-1 never predicted
        expected = classification_metrics(y_true, y_pred, [str(i) for i in range(k)])["macro_f1"]
        assert macro_f1(y_true, y_pred, k) == pytest.approx(expected)
    # a class present in neither truth nor predictions does not count (as scikit-learn)
    assert macro_f1(np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1]), 3) == 1.0


@pytest.mark.parametrize(
    "y_true, y_pred, options, needle",
    [
        ([0, 1, 1], [0, 1], {}, "differ in length"),
        ([], [], {}, "no examples"),
        ([[0, 1]], [[0, 1]], {}, "one-dimensional"),
        ([0, 1], [0, 1], {"n_resamples": 0}, "n_resamples"),
        ([0, 1], [0, 1], {"n_resamples": 10.5}, "n_resamples"),
        ([0, 1], [0, 1], {"level": 1.0}, "level"),
        ([0, 1], [0, 1], {"level": 0}, "level"),
        ([0, 1], [0, 1], {"level": 95}, "level"),
        ([0, 1], [0, 1], {"seed": -1}, "seed"),
        ([0, 1], [0, 1], {"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error(y_true, y_pred, options, needle):
    with pytest.raises(ValueError, match=needle):
        bootstrap_ci(np.array(y_true), np.array(y_pred), accuracy, **options)


def test_bad_metric_arguments_raise_value_error():
    with pytest.raises(ValueError, match="n_classes"):
        MacroF1(0)
    with pytest.raises(ValueError, match="class indices in 0..1"):
        bootstrap_ci(np.array([0, 2]), np.array([0, 1]), MacroF1(2))
    with pytest.raises(ValueError, match="metric must be a function"):
        bootstrap_ci(np.array([0, 1]), np.array([0, 1]), "accuracy")  # type: ignore[arg-type]
