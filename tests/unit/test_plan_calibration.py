"""The plan's expected accuracy is on the scale of test accuracy: the cross-validated probe's
per-class recall on the class-balanced sample, weighted by the data's class priors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headstart.methods.linear_probe import fit_logistic_regression
from headstart.plan.recommend import plan
from headstart.plan.scores import (
    cv_linear_probe_accuracy,
    cv_linear_probe_predictions,
    prior_weighted_accuracy,
    stratified_sample,
)


def _skewed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """80% class 0, far from the rest; classes 1 and 2 (10% each) overlap each other."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.8, 0.1, 0.1])
    centres = np.array([[8.0, 0.0], [0.0, 0.6], [0.0, -0.6]])
    return (centres[y] + rng.normal(size=(n, 2))).astype(np.float32), y


def _probe_accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    """Accuracy of a logistic-regression probe trained and tested on the skewed distribution."""
    (F, y), (G, z) = train, test
    x = torch.from_numpy(F)
    mean, std = x.mean(0), x.std(0)
    w, b = fit_logistic_regression((x - mean) / std, torch.from_numpy(y), 3, C=1.0, max_iter=100)
    pred = (((torch.from_numpy(G) - mean) / std) @ w.T + b).argmax(1).numpy()
    return float((pred == z).mean())


def test_prior_weighted_accuracy_by_hand():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 0])  # recall 1.0 and 0.5
    assert prior_weighted_accuracy(y, pred, np.array([1.0, 1.0])) == pytest.approx(0.75)  # = plain accuracy
    assert prior_weighted_accuracy(y, pred, np.array([9.0, 1.0])) == pytest.approx(0.95)
    assert prior_weighted_accuracy(y, pred, np.array([0.0, 1.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no example"):
        prior_weighted_accuracy(y, pred, np.array([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="priors"):
        prior_weighted_accuracy(y, pred, np.array([-1.0, 2.0]))


def test_cv_predictions_give_the_cv_accuracy():
    F, y = _skewed(300, seed=3)
    pred = cv_linear_probe_predictions(F, y)
    assert pred.shape == y.shape and set(np.unique(pred)) <= {0, 1, 2}
    assert float((pred == y).mean()) == cv_linear_probe_accuracy(F, y)


def test_on_a_skewed_set_the_weighted_estimate_tracks_test_accuracy():
    F, y = _skewed(6000, seed=0)
    idx = stratified_sample(y, per_class_max=80, total_max=240, seed=0)  # class-balanced, as plan samples
    assert np.bincount(y[idx]).tolist() == [80, 80, 80]
    pred = cv_linear_probe_predictions(F[idx], y[idx])
    balanced = float((pred == y[idx]).mean())
    weighted = prior_weighted_accuracy(y[idx], pred, np.bincount(y, minlength=3))
    actual = _probe_accuracy((F[:3000], y[:3000]), (F[3000:], y[3000:]))
    # The balanced sample's accuracy weighs the two hard minority classes as much as the easy
    # majority and sits far below test accuracy; weighting by the priors puts it on that scale.
    assert actual - balanced > 0.1
    assert abs(weighted - actual) < 0.05
    assert abs(weighted - actual) < abs(balanced - actual) / 3


def test_plan_expected_accuracy_uses_the_data_class_shares(tmp_path, data_helpers, tiny_bert, monkeypatch):
    from headstart.plan import recommend

    rows, write = data_helpers
    texts = [t for t, _ in rows(100, seed=4)]
    path = write(tmp_path / "skewed.csv", list(zip(texts, ["neg"] * 90 + ["pos"] * 10, strict=True)))
    # A probe that calls everything 'neg' (class 0): recall 1 for neg, 0 for pos.
    monkeypatch.setattr(recommend, "cv_linear_probe_predictions", lambda F, y: np.zeros(len(y), dtype=np.int64))
    p = plan(path, backbones=[str(tiny_bert)], sample=20)
    lp = next(c for c in p.candidates if c.method == "linear-probe")
    assert p.profile["majority_share"] == 0.9
    assert lp.scores["linear_probe_cv"] == 0.5  # on the balanced sample (10 + 10)
    assert lp.probe_estimate == pytest.approx(0.9) == lp.expected_accuracy  # at the data's 90/10 shares
    lora = next(c for c in p.candidates if c.method == "lora")
    assert lora.expected_accuracy == pytest.approx(0.9 + recommend.METHOD_GAIN[p.profile["regime"]]["lora"] / 100)
    assert "probe estimate 90.0% at the data's class shares" in lp.why
