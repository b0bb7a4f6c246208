"""Transferability scores: how well a frozen backbone's features suit a labelled task, without training.

Why: fine-tuning every candidate backbone to find the best one costs hours; encoding a few thousand
training examples once and scoring the features costs seconds. Every score here takes frozen
features ``F`` of shape ``(n, d)`` and class indices ``y`` of shape ``(n,)`` and returns one
number where **higher is better**; compare scores of different backbones on the same examples,
never across datasets.

- :func:`logme`: log marginal likelihood (evidence) of a Bayesian linear model from the features
  to each one-hot target (You et al., ICML 2021). The default: fast and well studied.
- :func:`hscore`: H-score, ``tr(cov(F)^-1 cov(E[F|y]))`` (Bao et al., ICIP 2019), by default with
  the Ledoit-Wolf shrunk covariance (Ibrahim et al., ECML-PKDD 2022).
- :func:`knn_loo_accuracy`: leave-one-out k-nearest-neighbour accuracy under cosine similarity.
- :func:`cv_linear_probe_accuracy`: stratified k-fold accuracy of a logistic-regression probe,
  the most direct (and slowest) estimate of what a linear probe would reach.
  :func:`cv_linear_probe_predictions` gives its held-out predictions, and
  :func:`prior_weighted_accuracy` turns their per-class recall into the accuracy expected at
  another class distribution (the data's, when the scored sample is class-balanced).

:data:`SCORES` maps their names to the functions and :func:`stratified_sample` picks a bounded,
class-balanced subset of the training examples to score on.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..methods.linear_probe import fit_logistic_regression

_KNN_BLOCK_ELEMENTS = 4_000_000
"""Similarities held at once by :func:`knn_loo_accuracy` (rows x examples); 16 MB of float32."""

_LOGME_MAX_ITER = 1000
_LOGME_TOL = 1e-10
"""Stop the LogME fixed point once no class's evidence per example changes by more than this.

The iteration can creep along a flat ridge of the evidence for many steps (alpha / beta still
drifting while the evidence no longer moves), so convergence is judged on the evidence itself."""


def logme(F: np.ndarray, y: np.ndarray) -> float:
    """LogME: the maximised log evidence of a Bayesian linear model from features to labels, per example.

    You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021. For each class ``c`` the one-hot target ``t = [y == c]`` (n,) gets the
    model ``t = F w + noise``, ``w ~ N(0, alpha^-1 I_d)``, ``noise ~ N(0, beta^-1 I_n)``. Its log
    evidence is

        L(alpha, beta) = n/2 log beta + d/2 log alpha - n/2 log 2pi
                         - beta/2 ||F m - t||^2 - alpha/2 ||m||^2 - 1/2 log|A|,
        A = alpha I_d + beta F^T F,   m = beta A^-1 F^T t.

    With the eigenvalues ``s_i^2`` of ``F^T F``, ``log|A| = sum_i log(alpha + beta s_i^2)`` over
    all ``d`` of them (zero ones included). ``alpha`` and ``beta`` are maximised by the fixed point
    of MacKay's updates (Bishop, *Pattern Recognition and Machine Learning*, 2006, sec. 3.5.2):

        gamma = sum_i beta s_i^2 / (alpha + beta s_i^2),
        alpha <- gamma / ||m||^2,   beta <- (n - gamma) / ||F m - t||^2,

    evaluated in the eigenbasis computed once, as in the paper and the authors' ``LogME.py``
    (github.com/thuml/LogME). The score is the mean over classes of ``L / n``.

    Differences from ``LogME.py``: the eigenbasis comes from the smaller of ``F^T F`` (d x d) and
    ``F F^T`` (n x n), so memory is ``O(min(n, d)^2)``; the evidence counts ``log alpha`` once for
    each zero eigenvalue (``LogME.py``'s fixed-point variant omits those terms when ``n < d``, which
    adds ``(d - n)/2 log alpha / n``); and there is no absolute ``1e-5`` added to the denominators,
    so the score does not change when ``F`` is multiplied by a constant. Classes with no examples
    are skipped. Computed in float64.

    Raises ``ValueError`` for malformed inputs (see :func:`_check_inputs`).
    """
    F, y = _check_inputs(F, y, "logme")
    F = F.astype(np.float64, copy=False)
    n, d = F.shape
    classes = np.unique(y)
    T = (y[:, None] == classes[None, :]).astype(np.float64)  # (n, C) one-hot targets
    t2 = T.sum(axis=0)  # (C,) ||t||^2: the class counts
    if n >= d:
        sigma, V = np.linalg.eigh(F.T @ F)  # (d,), (d, d): F^T F = V diag(s^2) V^T
        sigma = np.clip(sigma, 0.0, None)[:, None]  # (d, 1)
        z2 = (V.T @ (F.T @ T)) ** 2  # (d, C): z_i = v_i^T F^T t = s_i u_i^T t
        n_zero = 0
        u2 = None
    else:
        sigma, U = np.linalg.eigh(F @ F.T)  # (n,), (n, n): F F^T = U diag(s^2) U^T
        sigma = np.clip(sigma, 0.0, None)[:, None]  # (n, 1)
        u2 = (U.T @ T) ** 2  # (n, C): (u_i^T t)^2; U is a full basis of R^n
        z2 = sigma * u2
        n_zero = d - n  # eigenvalues of F^T F that are zero

    def fit_terms(ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """gamma, ||m||^2, ||F m - t||^2 (each (C,)) at lambda = alpha / beta."""
        denom = ratio + sigma  # (r, C)
        gamma = (sigma / denom).sum(axis=0)
        m2 = (z2 / denom**2).sum(axis=0)  # m = V diag(1 / (lambda + s^2)) z
        if u2 is None:  # ||t||^2 - ||projection||^2 + ||shrunk residual||^2, without dividing by s^2
            res2 = t2 - (z2 * (sigma + 2.0 * ratio) / denom**2).sum(axis=0)
        else:  # (u_i^T (F m - t)) = -lambda / (lambda + s_i^2) u_i^T t
            res2 = (u2 * (ratio / denom) ** 2).sum(axis=0)
        tiny = 1e-300
        return gamma, np.maximum(m2, tiny), np.maximum(res2, tiny * t2)

    def evidence(alpha: np.ndarray, beta: np.ndarray, m2: np.ndarray, res2: np.ndarray) -> np.ndarray:
        """L(alpha, beta) / n for each class, (C,)."""
        log_det = np.log(alpha + beta * sigma).sum(axis=0) + n_zero * np.log(alpha)  # log|A|
        log_ev = (
            n / 2 * np.log(beta)
            + d / 2 * np.log(alpha)
            - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res2
            - alpha / 2 * m2
            - log_det / 2
        )
        return log_ev / n

    alpha = np.ones(len(classes))
    beta = np.ones(len(classes))
    previous = np.full(len(classes), -np.inf)
    for _ in range(_LOGME_MAX_ITER):
        ratio = alpha / beta
        gamma, m2, res2 = fit_terms(ratio)
        current = evidence(alpha, beta, m2, res2)
        if np.all(np.abs(current - previous) <= _LOGME_TOL):
            break
        previous = current
        alpha = gamma / m2
        # n - gamma -> 0 when the features interpolate the targets (n < d); in float it can reach 0
        # exactly, and beta = 0 would make the next ratio infinite. A relative floor keeps beta > 0.
        beta = np.maximum(n - gamma, 1e-12 * n) / res2
    else:
        _, m2, res2 = fit_terms(alpha / beta)
        current = evidence(alpha, beta, m2, res2)
    return float(np.mean(current))


def hscore(F: np.ndarray, y: np.ndarray, shrinkage: bool = True) -> float:
    """H-score: how much of the features' variance the class means explain.

    Bao et al., "An Information-theoretic Approach to Transferability in Task Transfer Learning",
    ICIP 2019:

        H(F) = tr(cov(F)^-1 cov(E[F | y])),

    where ``E[F | y]`` replaces each row by the mean of its class, so
    ``cov(E[F | y]) = sum_c p_c mu_c mu_c^T`` with centred class means ``mu_c`` and class shares
    ``p_c``. Both covariances divide by ``n``.

    With ``shrinkage`` (the default), the "regularised H-score" of Ibrahim, Ponomareva & Mazumder,
    "Newer is not always better: Rethinking transferability metrics, their peculiarities,
    stability and performance", ECML-PKDD 2022:

        H_a(F) = tr(cov_a(F)^-1 (1 - a) cov(E[F | y])),

    with ``cov_a`` the Ledoit-Wolf estimate and ``a`` its shrinkage (:func:`ledoit_wolf`). Without
    shrinkage ``cov(F)`` is inverted with ``pinv(rcond=1e-15)`` as in Bao et al.'s code, which is
    unstable when ``d`` is large relative to ``n``.

    Raises ``ValueError`` for malformed inputs (see :func:`_check_inputs`).
    """
    F, y = _check_inputs(F, y, "hscore")
    F = F.astype(np.float64, copy=False)
    n, d = F.shape
    centred = F - F.mean(axis=0)  # (n, d)
    means, counts = _class_means(centred, y)  # (C, d), (C,)
    weights = counts / n  # p_c
    if shrinkage:
        cov, a = ledoit_wolf(centred, assume_centered=True)
        scale = 1.0 - a
    else:
        cov, scale = centred.T @ centred / n, 1.0
    # tr(cov^-1 sum_c p_c mu_c mu_c^T) = sum_c p_c mu_c^T cov^-1 mu_c, through cov = W diag(e) W^T
    e, W = np.linalg.eigh(cov)
    keep = e > 1e-15 * max(float(e.max()), 0.0)
    proj = W[:, keep].T @ means.T  # (kept, C)
    quad = (proj**2 / e[keep, None]).sum(axis=0)  # (C,) mu_c^T cov^+ mu_c
    return float(scale * (weights * quad).sum())


def ledoit_wolf(X: np.ndarray, assume_centered: bool = False) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of the rows of ``X`` (n, p) and its shrinkage.

    Ledoit & Wolf, "A well-conditioned estimator for large-dimensional covariance matrices",
    Journal of Multivariate Analysis 88 (2004). With ``S = X^T X / n`` (after centring) and
    ``mu = tr(S) / p``:

        delta^2 = ||S - mu I||_F^2 / p,
        b^2     = min(delta^2, (mean_k ||x_k||^4 - ||S||_F^2) / (n p)),
        a       = b^2 / delta^2   (0 when b^2 = 0),
        cov     = (1 - a) S + a mu I.

    ``sum_k ||x_k x_k^T - S||_F^2 = sum_k ||x_k||^4 - n ||S||_F^2`` gives the middle line without
    forming the ``n`` outer products. Same result as ``sklearn.covariance.ledoit_wolf``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be a two-dimensional array (n, p) with n >= 1 (got shape {X.shape})")
    n, p = X.shape
    if not assume_centered:
        X = X - X.mean(axis=0)
    S = X.T @ X / n  # (p, p) empirical covariance
    mu = np.trace(S) / p
    S_f2 = float((S * S).sum())  # ||S||_F^2
    delta2 = (S_f2 - p * mu**2) / p  # ||S - mu I||_F^2 / p
    b_bar2 = (float(((X * X).sum(axis=1) ** 2).sum()) / n - S_f2) / (n * p)
    b2 = min(b_bar2, delta2)
    a = 0.0 if b2 <= 0 else b2 / delta2
    cov = (1.0 - a) * S
    cov.flat[:: p + 1] += a * mu
    return cov, float(a)


def knn_loo_accuracy(F: np.ndarray, y: np.ndarray, k: int | None = None) -> float:
    """Leave-one-out k-nearest-neighbour accuracy under cosine similarity.

    Each example is classified by its ``k`` most similar other examples (rows L2-normalised,
    similarity ``f_i . f_j``): the class with the most votes wins, ties go to the class with the
    larger summed similarity, then to the lower class index. The score is the share classified
    correctly. ``k`` defaults to ``min(10, median class size - 1)``, at least 1: an example has at
    most ``class size - 1`` neighbours of its own class, so in a few-shot set (say 5 per class) a
    larger ``k`` would fill the vote with other classes.

    Similarities are computed in float32 in blocks of rows (``_KNN_BLOCK_ELEMENTS`` at once), so
    memory stays bounded (16 MB at n = 20,000); time is ``O(n^2 d)``.

    Raises ``ValueError`` for malformed inputs (see :func:`_check_inputs`) or ``k`` outside
    ``1..n-1``.
    """
    F, y = _check_inputs(F, y, "knn_loo_accuracy")
    n = len(y)
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    n_classes = len(counts)
    if k is None:
        k = int(min(10, max(1, int(np.median(counts)) - 1)))
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an integer from 1 to n - 1 = {n - 1} (got {k!r})")
    k = int(k)

    x = torch.from_numpy(np.ascontiguousarray(F, dtype=np.float32))
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)  # (n, d) unit rows
    labels = torch.from_numpy(codes.astype(np.int64))
    rows = max(1, _KNN_BLOCK_ELEMENTS // n)
    correct = 0
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        b = stop - start
        sim = x[start:stop] @ x.T  # (b, n) cosine similarities
        sim[torch.arange(b), torch.arange(start, stop)] = -math.inf  # leave each example out
        top_sim, top_idx = sim.topk(k, dim=1)  # (b, k)
        top_lab = labels[top_idx]  # (b, k)
        votes = torch.zeros(b, n_classes, dtype=torch.float64).scatter_add_(1, top_lab, torch.ones(b, k, dtype=torch.float64))
        summed = torch.zeros(b, n_classes, dtype=torch.float64).scatter_add_(1, top_lab, top_sim.double())
        # Lexicographic (votes, summed similarity): summed similarities of two classes differ by
        # at most 2k, less than one vote's weight of 2k + 1. argmax takes the first (lowest) class.
        pred = (votes * (2 * k + 1) + summed).argmax(dim=1)
        correct += int((pred == labels[start:stop]).sum())
    return correct / n


def cv_linear_probe_accuracy(
    F: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0, l2: float = 1e-2, max_iter: int = 100
) -> float:
    """Stratified k-fold cross-validated accuracy of a multinomial logistic-regression probe: the
    share of :func:`cv_linear_probe_predictions` that are right (see there)."""
    pred = cv_linear_probe_predictions(F, y, folds=folds, seed=seed, l2=l2, max_iter=max_iter)
    return float((pred == np.unique(np.asarray(y), return_inverse=True)[1]).mean())


def cv_linear_probe_predictions(
    F: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0, l2: float = 1e-2, max_iter: int = 100
) -> np.ndarray:
    """Each example's class as predicted by a stratified k-fold cross-validated multinomial
    logistic-regression probe that did not see it: (n,) indices into ``np.unique(y)``.

    Each fold's probe minimises, on standardised features (training-fold mean and std),

        mean_i CE(softmax(W x_i + b), y_i) + l2/2 ||W||^2

    with full-batch L-BFGS (``max_iter`` iterations; :func:`headstart.methods.linear_probe.
    fit_logistic_regression` with ``C = 1 / (l2 n_train)``), and predicts its held-out fold.
    ``l2`` is fixed rather than tuned: the score ranks backbones, it does not choose a probe.

    Folds are stratified (each class's examples, shuffled with ``seed``, are dealt round-robin to
    the folds), so every training fold holds every class. When the smallest class has fewer
    examples than ``folds``, ``min(folds, smallest class size)`` folds are used.

    Raises ``ValueError`` for malformed inputs (see :func:`_check_inputs`), a class with a single
    example, ``folds < 2``, a negative seed or ``l2 <= 0``.
    """
    F, y = _check_inputs(F, y, "cv_linear_probe_accuracy")
    if not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2 (got {folds!r})")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 > 0 or not math.isfinite(l2):
        raise ValueError(f"l2 must be a finite number > 0, e.g. 1e-2 (got {l2!r})")
    if not isinstance(max_iter, (int, np.integer)) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1 (got {max_iter!r})")
    classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        single = classes[counts < 2].tolist()
        raise ValueError(
            f"cross-validation needs at least 2 examples of every class; class(es) {single[:10]} have 1. "
            "Drop those classes or add examples."
        )
    n_folds = int(min(folds, counts.min()))
    fold_of = _stratified_folds(codes, n_folds, int(seed))  # (n,) fold index of each example

    x = torch.from_numpy(np.ascontiguousarray(F, dtype=np.float32))
    labels = torch.from_numpy(codes.astype(np.int64))
    fold_t = torch.from_numpy(fold_of)
    predicted = torch.empty(len(labels), dtype=torch.int64)
    for fold in range(n_folds):
        test = fold_t == fold
        x_train, y_train = x[~test], labels[~test]
        mean = x_train.mean(0)
        std = x_train.std(0, unbiased=False).clamp_min(1e-6 * max(1.0, float(x_train.abs().max())) + 1e-12)
        C = 1.0 / (l2 * len(y_train))  # penalty ||W||^2 / (2 C n_train) = l2/2 ||W||^2
        w, b = fit_logistic_regression((x_train - mean) / std, y_train, len(classes), C, int(max_iter))
        predicted[test] = (((x[test] - mean) / std) @ w.T + b).argmax(dim=1)
    return predicted.numpy()


def prior_weighted_accuracy(y: np.ndarray, pred: np.ndarray, priors: np.ndarray) -> float:
    """Accuracy at the class distribution ``priors`` of a classifier with predictions ``pred`` for
    examples of classes ``y`` (both (n,) indices 0..C-1):

        acc = sum_c p_c * recall_c,   recall_c = share of class c's examples predicted c,

    since accuracy on any distribution is the class shares' average of the per-class recalls.
    Measured on a class-balanced sample, ``pred == y``'s mean weighs every class alike; weighting
    by the data's own shares puts the estimate on the scale of test accuracy, which a skewed test
    split (the majority class mostly right) reaches differently. ``priors`` (C,) is normalised
    here; a class absent from ``y`` must have prior 0.

    Raises ``ValueError`` when shapes disagree or a class with a positive prior has no example.
    """
    y, pred, priors = np.asarray(y), np.asarray(pred), np.asarray(priors, dtype=np.float64)
    if y.shape != pred.shape or y.ndim != 1:
        raise ValueError(f"y and pred must be 1-D arrays of the same length (got {y.shape} and {pred.shape})")
    if priors.ndim != 1 or (priors < 0).any() or not priors.sum() > 0:
        raise ValueError(f"priors must be a 1-D array of non-negative class shares with a positive sum (got {priors!r})")
    counts = np.bincount(y, minlength=len(priors))[: len(priors)]  # (C,)
    hits = np.bincount(y[pred == y], minlength=len(priors))[: len(priors)]  # (C,)
    absent = np.flatnonzero((counts == 0) & (priors > 0))
    if len(absent):
        raise ValueError(f"classes {absent[:10].tolist()} have a positive prior but no example to measure recall on")
    recall = np.divide(hits, counts, out=np.zeros(len(priors)), where=counts > 0)
    return float((priors / priors.sum() * recall).sum())


SCORES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "logme": logme,
    "hscore": hscore,
    "knn": knn_loo_accuracy,
    "linear_probe_cv": cv_linear_probe_accuracy,
}
"""Transferability scores by name; each is ``score(F, y) -> float``, higher is better."""

DEFAULT_SCORE = "linear_probe_cv"
"""The score `plan` orders backbones by: an accuracy estimate, and the best Kendall tau in
benchmarks/plan_validation.py (benchmarks/README.md)."""


def stratified_sample(y: np.ndarray, per_class_max: int, total_max: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced subset: at most ``per_class_max`` per class, ``total_max`` in all.

    Each class's quota is ``min(its count, per_class_max, L)`` with the largest level ``L`` that
    keeps the total within ``total_max``; the few places left over go one each to randomly chosen
    classes that still have examples. So rare classes keep all they have up to the level, every
    class gets ``min(count, 2)`` whenever ``total_max`` allows it, and the subset is as balanced as
    the counts permit. Which examples fill a quota is random. The same ``seed`` gives the same
    indices, returned sorted (int64).

    Raises ``ValueError`` if ``y`` is not a 1-D array of integers, if a cap is not an integer
    >= 1, or if ``total_max`` is smaller than the number of classes (not every class could be kept).
    """
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"y must be a one-dimensional array of integer class indices (got shape {y.shape}, dtype {y.dtype})")
    for name, value in (("per_class_max", per_class_max), ("total_max", total_max)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    if not len(classes):
        return np.zeros(0, dtype=np.int64)
    if total_max < len(classes):
        raise ValueError(
            f"total_max={total_max} is smaller than the number of classes ({len(classes)}), so some class "
            f"would be left out; raise total_max to at least {len(classes)}"
        )
    rng = np.random.default_rng(int(seed))
    caps = np.minimum(counts, per_class_max)  # (C,)
    if caps.sum() <= total_max:
        quota = caps
    else:
        # Water-filling: the largest level L with sum(min(caps, L)) <= total_max, then the rest.
        level = 0
        for candidate in np.unique(caps):  # sum(min(caps, L)) grows with L; jump between distinct caps
            if np.minimum(caps, candidate).sum() > total_max:
                below = np.minimum(caps, level).sum()
                above = int((caps > level).sum())  # classes that grow with the level
                level += (total_max - below) // above
                break
            level = int(candidate)
        quota = np.minimum(caps, level)
        spare = int(total_max - quota.sum())
        if spare:
            open_ = np.flatnonzero(caps > quota)
            quota[rng.choice(open_, size=spare, replace=False)] += 1
    chosen = [
        rng.choice(np.flatnonzero(codes == c), size=int(q), replace=False) for c, q in enumerate(quota) if q > 0
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _check_inputs(F: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(F, y)`` as arrays after checking: F (n, d) finite, not all zero; y (n,) integers >= 0, 2+ classes."""
    F, y = np.asarray(F), np.asarray(y)
    if F.ndim != 2 or F.shape[0] < 2 or F.shape[1] < 1:
        raise ValueError(f"{name}: features must be a 2-D array (n examples, d dims) with n >= 2 (got shape {F.shape})")
    if not (np.issubdtype(F.dtype, np.floating) or np.issubdtype(F.dtype, np.integer)):
        raise ValueError(f"{name}: features must be numbers (got dtype {F.dtype})")
    if y.ndim != 1 or len(y) != len(F):
        raise ValueError(f"{name}: labels must be a 1-D array with one entry per feature row ({len(F)}) (got shape {y.shape})")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integer class indices 0..k-1 (got dtype {y.dtype})")
    if y.min() < 0:
        raise ValueError(f"{name}: labels must be integer class indices 0..k-1 (got a negative label, {y.min()})")
    if not np.isfinite(F).all():
        raise ValueError(f"{name}: features contain NaN or infinity; check the backbone's outputs")
    if not F.any():
        raise ValueError(f"{name}: features are all zero; check the backbone's outputs")
    if len(np.unique(y)) < 2:
        raise ValueError(f"{name}: labels hold a single class ({y[0]}); a transferability score needs at least 2")
    return F, y.astype(np.int64, copy=False)


def _stratified_folds(codes: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (n,) per example: each class shuffled, then dealt round-robin to the folds.

    The deal continues where the previous class stopped, so fold sizes differ by at most one and
    each class's share of a fold by at most one example.
    """
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(codes), dtype=np.int64)
    offset = 0
    for c in range(int(codes.max()) + 1):
        members = rng.permutation(np.flatnonzero(codes == c))
        fold_of[members] = (offset + np.arange(len(members))) % n_folds
        offset += len(members)
    return fold_of


def _class_means(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean row of ``X`` (n, d) per class present in ``y``, in class order: (C, d), and counts (C,)."""
    order = np.argsort(y, kind="stable")
    _, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    sums = np.add.reduceat(X[order], starts, axis=0)  # (C, d)
    return sums / counts[:, None], counts
