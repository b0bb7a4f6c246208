"""Classification metrics agree with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from headstart.evaluate import HIGHER_IS_BETTER, PRIMARY_METRIC, classification_metrics


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 7])
def test_against_sklearn_on_random_labels(seed, k):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k, n))
    classes = [f"c{i}" for i in range(k)]
    m = classification_metrics(y_true, y_pred, classes)

    assert m["n"] == n
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)), zero_division=0)
    for i, c in enumerate(classes):
        assert m["per_class"][c]["precision"] == pytest.approx(p[i])
        assert m["per_class"][c]["recall"] == pytest.approx(r[i])
        assert m["per_class"][c]["f1"] == pytest.approx(f[i])
        assert m["per_class"][c]["support"] == s[i]


def test_classes_absent_from_truth_and_predictions_do_not_count_in_macro_f1():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 1])
    m = classification_metrics(y_true, y_pred, ["a", "b", "never"])
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["per_class"]["never"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_perfect_and_empty():
    m = classification_metrics(np.array([0, 1, 2]), np.array([0, 1, 2]), ["a", "b", "c"])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    empty = classification_metrics(np.array([], dtype=int), np.array([], dtype=int), ["a", "b"])
    assert empty["n"] == 0 and empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0


def test_primary_metric_is_declared():
    assert PRIMARY_METRIC == "accuracy" and HIGHER_IS_BETTER is True
