"""Classification metrics. Every evaluator names its primary metric and its direction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIMARY_METRIC = "accuracy"
HIGHER_IS_BETTER = True


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name, direction and bounds: what selection, gates and drift need to read it
    (every task declares its metrics with these)."""

    name: str
    higher_is_better: bool = True
    bounds: tuple[float, float] = (0.0, 1.0)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support (labels as class indices)."""
    k = len(classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)  # rows: truth
    tp = np.diag(confusion).astype(float)
    predicted = confusion.sum(0).astype(float)
    support = confusion.sum(1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = (support > 0) | (predicted > 0)  # as scikit-learn: classes seen in truth or predictions
    return {
        "accuracy": float(tp.sum() / max(1, len(y_true))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": int(len(y_true)),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
    }
