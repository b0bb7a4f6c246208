"""Retrieval metrics, per query, with the semantics of trec_eval; correlations for scored pairs;
exact nearest-neighbour search for evaluation.

Per-query metrics (``ndcg@k``, ``mrr@k``, ``recall@k``, ``map@k``) come back as one array per
metric over the same ordered queries, so bootstrap intervals and paired tests over queries (as
:mod:`headstart.evaluate.bootstrap` and drift do over examples) work unchanged. Each metric is
declared by a :class:`MetricSpec` (name, direction, bounds) that suites, gates and drift can read.

Definitions (``rel(d)`` is the judged grade of document ``d``, 0 when unjudged; relevant means
grade > 0; ``R`` is the number of relevant judged documents of the query; ranks start at 1):

- ``ndcg@k``: ``DCG@k / IDCG@k`` with ``DCG@k = sum_{i<=k} rel(d_i) / log2(i + 1)`` (linear
  gains, Järvelin & Kekäläinen 2002) and IDCG the DCG of the query's judged grades sorted
  descending, cut at k: trec_eval's ``ndcg_cut``. Negative grades count as 0.
- ``mrr@k``: ``1 / rank`` of the first relevant document in the top k, else 0.
- ``recall@k``: relevant documents in the top k / ``R`` (trec_eval ``recall_k``).
- ``map@k``: sum of precision@i over the ranks i <= k holding a relevant document, divided by
  ``R`` (trec_eval ``map_cut``: the divisor is R, not min(R, k)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .bootstrap import bootstrap_ci
from .metrics import MetricSpec

RETRIEVAL_METRICS = ("ndcg", "mrr", "recall", "map")
DEFAULT_KS = (1, 3, 5, 10, 100)
PRIMARY_METRIC = "ndcg@10"
HIGHER_IS_BETTER = True

_SEARCH_CHUNK_ELEMENTS = 16_000_000
"""Query x document scores held at once by :func:`exact_search` (64 MB of float32)."""


def metric_specs(ks: Sequence[int] = DEFAULT_KS, metrics: Sequence[str] = RETRIEVAL_METRICS) -> dict[str, MetricSpec]:
    """``{"ndcg@10": MetricSpec(...), ...}`` for every metric at every cutoff (all in [0, 1], higher better)."""
    ks, metrics = _check_ks(ks), _check_metrics(metrics)
    return {f"{m}@{k}": MetricSpec(name=f"{m}@{k}") for m in metrics for k in ks}


CORRELATION_SPECS = {
    "spearman": MetricSpec(name="spearman", higher_is_better=True, bounds=(-1.0, 1.0)),
    "pearson": MetricSpec(name="pearson", higher_is_better=True, bounds=(-1.0, 1.0)),
}


@dataclass(frozen=True)
class RetrievalScores:
    """Per-query metric values: ``per_query[name][i]`` is metric ``name`` of ``query_ids[i]``.

    ``excluded`` lists the queries left out because they have no relevant judged document (their
    metrics are undefined: recall and map divide by 0, nDCG's ideal is 0).
    """

    query_ids: list[str]
    per_query: dict[str, np.ndarray]
    specs: dict[str, MetricSpec]
    excluded: list[str] = field(default_factory=list)

    @property
    def n_excluded(self) -> int:
        return len(self.excluded)

    def means(self) -> dict[str, float]:
        """Each metric averaged over the evaluated queries (trec_eval's summary line)."""
        return {name: float(v.mean()) if len(v) else float("nan") for name, v in self.per_query.items()}

    def interval(self, name: str, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
        """``(mean, low, high)``: percentile-bootstrap interval of the mean over queries."""
        values = self.per_query[name]
        return bootstrap_ci(values, values, query_mean, n_resamples=n_resamples, level=level, seed=seed)


class QueryMean:
    """Mean of per-query values (``y_true`` is the values; ``y_pred`` is ignored), vectorised
    over resamples, for :func:`headstart.evaluate.bootstrap.bootstrap_ci`."""

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.mean(y_true)) if len(y_true) else float("nan")

    def batch(self, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.asarray(y_true, dtype=np.float64)[idx].mean(axis=1)

    def __repr__(self) -> str:
        return "query_mean"


query_mean = QueryMean()


class PredictionMean:
    """Mean of per-query values given as ``y_pred`` (``y_true`` is ignored), vectorised over
    resamples: the statistic of :func:`headstart.evaluate.stats.paired_bootstrap` when two runs'
    per-query values of the same queries are compared (old and new are the "predictions")."""

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.mean(y_pred)) if len(y_pred) else float("nan")

    def batch(self, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.asarray(y_pred, dtype=np.float64)[idx].mean(axis=1)

    def __repr__(self) -> str:
        return "prediction_mean"


prediction_mean = PredictionMean()


def retrieval_metrics(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    metrics: Sequence[str] = RETRIEVAL_METRICS,
) -> RetrievalScores:
    """Per-query ``ndcg@k``, ``mrr@k``, ``recall@k`` and ``map@k`` (see the module docstring).

    ``rankings[qid]`` is the query's ranked document ids, best first (only the first ``max(ks)``
    are read; an id may appear once); ``qrels[qid]`` its judged ``{doc id: grade}``. Evaluated are
    the queries of ``qrels`` with at least one relevant (grade > 0) document, in sorted id order
    (numeric ids numerically); every one of them needs an entry in ``rankings`` (an empty list for
    a query that retrieved nothing, which scores 0). Queries without a relevant document, in the
    qrels or only in the rankings, are excluded and listed in ``RetrievalScores.excluded``.
    """
    ks, metrics = _check_ks(ks), _check_metrics(metrics)
    depth = max(ks)
    evaluated, excluded = [], []
    for qid in sorted(set(qrels) | set(rankings), key=_id_sort_key):
        judged = qrels.get(qid, {})
        (evaluated if any(g > 0 for g in judged.values()) else excluded).append(qid)
    missing = [q for q in evaluated if q not in rankings]
    if missing:
        raise ValueError(
            f"rankings has no entry for query {missing[0]!r} ({len(missing)} judged queries in all); "
            "pass an empty list for a query that retrieved nothing"
        )
    discount = 1.0 / np.log2(np.arange(2, depth + 2))  # (depth,) 1/log2(rank + 1)
    values = {f"{m}@{k}": np.empty(len(evaluated)) for m in metrics for k in ks}
    for row, qid in enumerate(evaluated):
        judged = qrels[qid]
        ranked = list(rankings[qid])[:depth]
        if len(set(ranked)) != len(ranked):
            dup = next(d for i, d in enumerate(ranked) if d in ranked[:i])
            raise ValueError(f"ranking of query {qid!r} lists document {dup!r} twice; each document may be ranked once")
        gains = np.array([max(judged.get(d, 0), 0) for d in ranked], dtype=np.float64)  # (n_ranked,)
        relevant = gains > 0
        n_relevant = sum(1 for g in judged.values() if g > 0)
        ideal = np.sort(np.array([max(g, 0) for g in judged.values()], dtype=np.float64))[::-1]
        hits = np.cumsum(relevant)  # relevant documents in the top i
        ranks = np.arange(1, len(ranked) + 1)
        first = int(np.argmax(relevant)) + 1 if relevant.any() else 0
        for k in ks:
            top = min(k, len(ranked))
            if "ndcg" in metrics:
                dcg = float((gains[:top] * discount[:top]).sum())
                idcg = float((ideal[:k] * discount[: min(k, len(ideal))]).sum())
                values[f"ndcg@{k}"][row] = dcg / idcg
            if "mrr" in metrics:
                values[f"mrr@{k}"][row] = 1.0 / first if 0 < first <= k else 0.0
            if "recall" in metrics:
                values[f"recall@{k}"][row] = (hits[top - 1] if top else 0) / n_relevant
            if "map" in metrics:
                precision = hits[:top] / ranks[:top]
                values[f"map@{k}"][row] = float(precision[relevant[:top]].sum()) / n_relevant
    return RetrievalScores(query_ids=evaluated, per_query=values, specs=metric_specs(ks, metrics), excluded=excluded)


# -- scored pairs ----------------------------------------------------------------------------------


class Pearson:
    """Pearson's r of ``(y_true, y_pred)``, vectorised over bootstrap resamples."""

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(_pearson_rows(np.asarray(y_true, dtype=np.float64)[None, :], np.asarray(y_pred, dtype=np.float64)[None, :])[0])

    def batch(self, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return _pearson_rows(np.asarray(y_true, dtype=np.float64)[idx], np.asarray(y_pred, dtype=np.float64)[idx])

    def __repr__(self) -> str:
        return "pearson"


class Spearman:
    """Spearman's rho: Pearson's r of the average ranks (ties share their mean rank, as
    ``scipy.stats.spearmanr``); each resample is re-ranked, since resampling creates ties."""

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return pearson(_average_ranks(np.asarray(y_true, dtype=np.float64)), _average_ranks(np.asarray(y_pred, dtype=np.float64)))

    def batch(self, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
        a, b = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
        ra = np.stack([_average_ranks(a[i]) for i in idx])  # (R, n)
        rb = np.stack([_average_ranks(b[i]) for i in idx])
        return _pearson_rows(ra, rb)

    def __repr__(self) -> str:
        return "spearman"


pearson = Pearson()
spearman = Spearman()
"""``pearson(x, y)`` / ``spearman(x, y)``: the correlation; NaN when either side is constant."""


def correlation_metrics(scores: Sequence[float], similarities: Sequence[float], *, n_resamples: int = 1000,
                        level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``{"spearman": (rho, low, high), "pearson": (r, low, high)}`` between gold ``scores`` and
    predicted ``similarities`` (e.g. cosine), each with a percentile-bootstrap interval over pairs
    (:func:`headstart.evaluate.bootstrap.bootstrap_ci`, same seed, same interval)."""
    y_true, y_pred = np.asarray(scores, dtype=np.float64), np.asarray(similarities, dtype=np.float64)
    if len(y_true) < 2:
        raise ValueError(f"correlation needs at least 2 pairs (got {len(y_true)})")
    return {name: bootstrap_ci(y_true, y_pred, metric, n_resamples=n_resamples, level=level, seed=seed)
            for name, metric in (("spearman", spearman), ("pearson", pearson))}


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of two (R, n) arrays; NaN for a constant row."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denom
    return np.clip(r, -1.0, 1.0)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    new = np.r_[True, sorted_x[1:] != sorted_x[:-1]]  # (n,) start of a tie group
    group = np.cumsum(new) - 1
    starts = np.r_[np.flatnonzero(new), len(x)]  # (groups + 1,)
    mean_rank = (starts[:-1] + starts[1:] - 1) / 2.0 + 1.0
    ranks = np.empty(len(x))
    ranks[order] = mean_rank[group]
    return ranks


# -- exact search ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopK:
    """The k nearest documents of each query: ``indices[i]`` (corpus rows, best first) and their
    cosine ``scores[i]``; both ``(n_queries, k)``."""

    indices: np.ndarray
    scores: np.ndarray

    def rankings(self, query_ids: Sequence[str], corpus_ids: Sequence[str]) -> dict[str, list[str]]:
        """``{query id: [doc id, ...]}``, ready for :func:`retrieval_metrics`."""
        if len(query_ids) != len(self.indices):
            raise ValueError(f"{len(query_ids)} query ids for {len(self.indices)} queries")
        return {q: [corpus_ids[j] for j in row] for q, row in zip(query_ids, self.indices.tolist(), strict=True)}


def exact_search(queries: np.ndarray, corpus: np.ndarray, k: int = 10) -> TopK:
    """Top-``k`` corpus rows by cosine similarity for every query row (brute force, exact).

    Both sides are L2-normalised here (already-normalised input is unchanged), then scored in
    query chunks of at most ~16M query x document scores (64 MB), keeping each chunk's top k with
    ``argpartition``: memory stays bounded for 10k x 10k and beyond. Ties are broken by the lower
    corpus row. ``k`` above the corpus size returns every document.
    """
    q = _unit_rows(queries, "queries")  # (nq, dim)
    c = _unit_rows(corpus, "corpus")  # (nc, dim)
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but the corpus {c.shape[1]}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (got {k!r})")
    nq, nc = len(q), len(c)
    k = min(int(k), nc)
    indices = np.empty((nq, k), dtype=np.int64)
    scores = np.empty((nq, k), dtype=np.float32)
    rows = max(1, _SEARCH_CHUNK_ELEMENTS // max(1, nc))
    for start in range(0, nq, rows):
        sims = q[start:start + rows] @ c.T  # (chunk, nc)
        if k < nc:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (chunk, k) unordered top k
        else:
            part = np.broadcast_to(np.arange(nc), sims.shape)
        top = np.take_along_axis(sims, part, axis=1)
        order = np.lexsort((part, -top), axis=1)  # by score descending, then row ascending
        indices[start:start + rows] = np.take_along_axis(part, order, axis=1)
        scores[start:start + rows] = np.take_along_axis(top, order, axis=1)
    return TopK(indices=indices, scores=scores)


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or not arr.size:
        raise ValueError(f"{name} must be a non-empty 2-D array of embeddings (got shape {arr.shape})")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.where(norms > 0, norms, 1.0)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be integers >= 1, e.g. (1, 10, 100) (got {ks!r})")
    return tuple(sorted(set(int(k) for k in ks)))


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in RETRIEVAL_METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown retrieval metric {unknown[0] if unknown else '(none)'!r}; choose from {', '.join(RETRIEVAL_METRICS)}")
    return metrics


def _id_sort_key(i: str):
    return (0, int(i), i) if isinstance(i, str) and i.isdigit() else (1, 0, str(i))

