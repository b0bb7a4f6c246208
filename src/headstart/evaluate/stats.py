"""Paired statistics: did the new model change anything on these test examples, or is it noise?

Both models are scored on the *same* examples, so their errors are correlated; comparing two
independent confidence intervals would waste that pairing and call real differences noise. The
tests here use it:

* :func:`mcnemar_exact` -- McNemar's test on the discordant pairs (examples that exactly one of
  the two models gets right), in its exact binomial form. The right test for a change in accuracy.
* :func:`paired_bootstrap` -- resample the examples with replacement, score *both* models on each
  resample, and read the spread of the difference. Works for any metric (macro-F1 included).
* :func:`accuracy_test` -- McNemar for the p-value, the paired bootstrap for the interval.
* :func:`decide` -- turn a :class:`PairedResult` into "regression", "improvement" or
  "no significant change".

Like :mod:`headstart.evaluate.bootstrap`, these capture test-set sampling noise only, not the
spread between training seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .bootstrap import accuracy, resample_chunks, score_resamples

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no significant change"
VERDICTS = (REGRESSION, IMPROVEMENT, NO_CHANGE)

_EXACT_COMB_MAX_N = 20_000
"""Up to this many discordant pairs the leading binomial term is computed with integer ``math.comb``
(a few ms); above it with ``math.lgamma`` (relative error ~ n * 1e-16, 1e-11 at n = 1e5)."""


@dataclass(frozen=True)
class PairedResult:
    """Two models scored on the same ``n`` examples.

    ``old`` / ``new`` are the metric on all examples, ``delta = new - old``, ``ci`` the
    percentile-bootstrap interval of ``delta`` and ``p`` the two-sided p-value for
    H0: delta = 0 (how it is computed depends on the function that built the result).
    """

    old: float
    new: float
    delta: float
    ci: tuple[float, float]
    p: float
    n: int


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant-pair counts.

    ``b``: examples the old model got right and the new one wrong; ``c``: the other way round.
    Under H0 (both models equally accurate) each of the ``m = b + c`` discordant pairs is
    equally likely to fall either way, so ``min(b, c) ~ Binomial(m, 1/2)`` and

        p = min(1, 2 * P[X <= min(b, c)]),   X ~ Binomial(m, 1/2)
          = min(1, 2 * sum_{i=0}^{min(b,c)} C(m, i) / 2^m),

    with ``p = 1`` when ``m = 0``. McNemar, "Note on the sampling error of the difference between
    correlated proportions or percentages", Psychometrika 12(2), 1947; the exact (binomial) form
    instead of the chi-square approximation as in Fagerland, Lydersen & Laake, "The McNemar test
    for binary matched-pairs data: mid-p and asymptotic are better than exact conditional",
    BMC Medical Research Methodology 13:91, 2013 (this is the conservative exact version).

    The sum is taken from its largest term ``C(m, k) / 2^m`` (exact integer arithmetic up to
    m = 20,000, log-gamma above; no overflow for any m) downwards with the ratio
    ``C(m, i-1) / C(m, i) = i / (m - i + 1)``, stopping once the rest cannot change a double.
    p-values below ~1e-308 come back as 0.0.
    """
    for name, value in (("b", b), ("c", c)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer count of discordant pairs (got {value!r})")
    b, c = int(b), int(c)
    m, k = b + c, min(b, c)
    if abs(b - c) <= 1:  # P[X <= k] >= 1/2 exactly, so 2 * P >= 1 (also covers m == 0)
        return 1.0
    if m <= _EXACT_COMB_MAX_N:
        term = math.comb(m, k) / (1 << m)  # int / int: correctly rounded, never overflows
    else:
        term = math.exp(math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1) - m * math.log(2.0))
    total = 0.0
    for i in range(k, -1, -1):
        total += term
        ratio = i / (m - i + 1)  # C(m, i-1) / C(m, i); < 1 and shrinking since k < m / 2
        if term * ratio / (1.0 - ratio) < total * 1e-17:  # geometric bound on the remaining terms
            break
        term *= ratio
    return min(1.0, 2.0 * total)


def paired_bootstrap(
    y_true: np.ndarray,
    pred_old: np.ndarray,
    pred_new: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedResult:
    """Paired percentile bootstrap of ``metric(y_true, pred_new) - metric(y_true, pred_old)``.

    Each resample draws ``n`` example indices with replacement and applies the *same* indices to
    both models (Koehn, "Statistical significance tests for machine translation evaluation",
    EMNLP 2004; Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13), giving
    ``R = n_resamples`` differences ``d_1..d_R``. ``ci`` is their ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles.

    ``p`` is the two-sided p-value obtained by inverting that percentile interval (the smallest
    ``1 - level`` at which the interval would exclude 0), with the Monte Carlo ``+1`` correction
    for Monte Carlo p-values (Davison & Hinkley, *Bootstrap Methods and their Application*, 1997,
    ch. 4), so it is never 0:

        p = min(1, 2 * min(#{d_r <= 0} + 1, #{d_r >= 0} + 1) / (R + 1))

    Identical predictions give ``delta = 0`` and ``p = 1``. The smallest reachable p is
    ``2 / (R + 1)``, so use ``n_resamples`` well above ``2 / alpha``.

    ``metric`` is any ``f(y_true, y_pred) -> float``; a :class:`~.bootstrap.BatchMetric`
    (``accuracy``, ``MacroF1(k)``) scores all resamples at once. Raises ``ValueError`` for arrays
    of different lengths, no examples, or bad ``n_resamples`` / ``seed`` / ``level``.
    """
    y_true = _one_dim(y_true, "y_true")
    pred_old, pred_new = _one_dim(pred_old, "pred_old"), _one_dim(pred_new, "pred_new")
    n = len(y_true)
    if len(pred_old) != n or len(pred_new) != n:
        raise ValueError(f"y_true, pred_old and pred_new must have the same length (got {n}, {len(pred_old)}, {len(pred_new)})")
    if n == 0:
        raise ValueError("no examples: y_true, pred_old and pred_new are empty")
    _check_resampling(n_resamples, seed, level)
    if not callable(metric):
        raise ValueError(f"metric must be a function f(y_true, y_pred) -> float (got {metric!r})")

    old, new = float(metric(y_true, pred_old)), float(metric(y_true, pred_new))
    deltas = np.empty(int(n_resamples), dtype=np.float64)
    for start, stop, idx in resample_chunks(n, n_resamples, seed):  # idx (rows, n): one resample per row, shared by both models
        deltas[start:stop] = score_resamples(metric, y_true, pred_new, idx) - score_resamples(metric, y_true, pred_old, idx)

    tail = (1.0 - level) / 2.0
    low, high = np.quantile(deltas, [tail, 1.0 - tail])
    r = len(deltas)
    at_or_below = (int(np.count_nonzero(deltas <= 0)) + 1) / (r + 1)
    at_or_above = (int(np.count_nonzero(deltas >= 0)) + 1) / (r + 1)
    p = min(1.0, 2.0 * min(at_or_below, at_or_above))
    return PairedResult(old=old, new=new, delta=new - old, ci=(float(low), float(high)), p=p, n=n)


def accuracy_test(
    y_true: np.ndarray,
    pred_old: np.ndarray,
    pred_new: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedResult:
    """Compare two models' accuracy on the same examples.

    ``p`` is :func:`mcnemar_exact` on the discordant counts ``b = #(old right, new wrong)`` and
    ``c = #(old wrong, new right)``; note ``delta = (c - b) / n``. ``ci`` is the paired
    bootstrap interval of ``delta`` (:func:`paired_bootstrap` with the vectorised accuracy).
    """
    boot = paired_bootstrap(y_true, pred_old, pred_new, accuracy, n_resamples=n_resamples, seed=seed, level=level)
    y_true = np.asarray(y_true)
    old_right, new_right = np.asarray(pred_old) == y_true, np.asarray(pred_new) == y_true
    b = int(np.count_nonzero(old_right & ~new_right))
    c = int(np.count_nonzero(~old_right & new_right))
    return PairedResult(old=boot.old, new=boot.new, delta=boot.delta, ci=boot.ci, p=mcnemar_exact(b, c), n=boot.n)


def decide(
    result: PairedResult,
    *,
    alpha: float = 0.05,
    noise_floor: float | None = None,
    higher_is_better: bool = True,
) -> str:
    """Verdict on a comparison: ``"regression"``, ``"improvement"`` or ``"no significant change"``.

    The change is significant when ``result.p < alpha`` and, if ``noise_floor`` is given,
    ``|delta| > noise_floor`` too (``noise_floor`` is in the metric's units: 0.01 is one
    percentage point of accuracy). This keeps a tiny but statistically detectable change on a
    large test set from failing a check. ``alpha`` is the accepted false-alarm rate per
    comparison (default 0.05); when many metrics or slices are tested at once, lower it (e.g.
    Bonferroni: ``alpha / number_of_tests``). A significant change is an improvement when
    ``delta`` moves in the good direction (up when ``higher_is_better``), else a regression.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number strictly between 0 and 1, e.g. 0.05 (got {alpha!r})")
    if noise_floor is not None and (
        isinstance(noise_floor, bool) or not isinstance(noise_floor, (int, float)) or not noise_floor >= 0
    ):
        raise ValueError(f"noise_floor must be a number >= 0 in the metric's units, e.g. 0.01, or None (got {noise_floor!r})")
    significant = result.p < alpha and (noise_floor is None or abs(result.delta) > noise_floor)
    if not significant or result.delta == 0:
        return NO_CHANGE
    better = result.delta > 0 if higher_is_better else result.delta < 0
    return IMPROVEMENT if better else REGRESSION


def _one_dim(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (got shape {arr.shape})")
    return arr


def _check_resampling(n_resamples: int, seed: int, level: float) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer >= 1 (got {n_resamples!r})")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number strictly between 0 and 1, e.g. 0.95 (got {level!r})")
