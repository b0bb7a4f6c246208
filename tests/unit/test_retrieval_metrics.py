"""Retrieval metrics per query (nDCG/MRR/recall/MAP@k), correlations for scored pairs, exact search.

The graded metrics are checked by hand on a 3-query example and against trec_eval itself
(``pytrec_eval``, from the ``test`` extra) on random rankings with graded judgements.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from headstart.evaluate import retrieval as R
from headstart.evaluate.bootstrap import bootstrap_ci
from headstart.evaluate.retrieval import (
    MetricSpec,
    exact_search,
    metric_specs,
    pearson,
    retrieval_metrics,
    spearman,
)

# q1 has three graded documents, q2 one, q3 two it never retrieves, q4 none relevant (excluded).
QRELS = {
    "q1": {"a": 3, "b": 2, "c": 1},
    "q2": {"d": 1},
    "q3": {"e": 1, "f": 1},
    "q4": {"g": 0},
}
RANKINGS = {
    "q1": ["b", "x", "a", "c"],
    "q2": ["x", "y", "d"],
    "q3": ["y", "z", "w"],
    "q4": ["g"],
}


def test_ndcg_by_hand_on_three_queries():
    scores = retrieval_metrics(RANKINGS, QRELS, ks=(3,))
    # q1: DCG@3 = 2/log2(2) + 0/log2(3) + 3/log2(4) = 2 + 0 + 1.5 = 3.5
    #     IDCG@3 = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.26186 + 0.5 = 4.76186
    q1 = 3.5 / (3 + 2 / math.log2(3) + 0.5)
    assert q1 == pytest.approx(0.735006, abs=1e-6)
    # q2: DCG@3 = 1/log2(4) = 0.5, IDCG@3 = 1/log2(2) = 1
    q2 = 0.5
    # q3: nothing relevant in the top 3
    q3 = 0.0
    assert scores.query_ids == ["q1", "q2", "q3"]
    assert scores.excluded == ["q4"] and scores.n_excluded == 1
    np.testing.assert_allclose(scores.per_query["ndcg@3"], [q1, q2, q3])
    assert scores.means()["ndcg@3"] == pytest.approx((q1 + q2 + q3) / 3)
    # MRR@3: first relevant at rank 1, 3, never
    np.testing.assert_allclose(scores.per_query["mrr@3"], [1.0, 1 / 3, 0.0])
    # recall@3: q1 retrieves b and a of its 3 (c is at rank 4), q2 its 1, q3 none of 2
    np.testing.assert_allclose(scores.per_query["recall@3"], [2 / 3, 1.0, 0.0])
    # MAP@3: q1 (P@1 + P@3) / 3 = (1 + 2/3) / 3; q2 P@3 / 1 = 1/3
    np.testing.assert_allclose(scores.per_query["map@3"], [(1 + 2 / 3) / 3, 1 / 3, 0.0])


def test_cutoff_changes_what_counts():
    scores = retrieval_metrics(RANKINGS, QRELS, ks=(1, 4))
    np.testing.assert_allclose(scores.per_query["recall@4"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(scores.per_query["mrr@1"], [1.0, 0.0, 0.0])
    # ndcg@1 of q1: gain 2 at rank 1 against the ideal 3
    assert scores.per_query["ndcg@1"][0] == pytest.approx(2 / 3)


def test_matches_trec_eval_on_random_graded_rankings():
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec_eval (pip install pytrec_eval-terrier, in the test extra) is the reference")
    rng = np.random.default_rng(13)
    qrels, rankings, run = {}, {}, {}
    for q in range(60):
        qid = str(q + 1)
        judged = rng.choice(300, size=int(rng.integers(1, 40)), replace=False)
        qrels[qid] = {f"d{d}": int(rng.integers(0, 5)) for d in judged}  # grades 0..4
        ranked = rng.choice(300, size=int(rng.integers(0, 150)), replace=False)
        rankings[qid] = [f"d{d}" for d in ranked]
        run[qid] = {f"d{d}": float(len(ranked) - i) for i, d in enumerate(ranked)}  # no ties
    ks = (1, 5, 10, 100)
    scores = retrieval_metrics(rankings, qrels, ks=ks)
    judged_relevant = [q for q in qrels if any(g > 0 for g in qrels[q].values())]
    assert sorted(scores.query_ids, key=int) == sorted(judged_relevant, key=int)
    assert scores.n_excluded == len(qrels) - len(judged_relevant)
    cut = ",".join(map(str, ks))
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{cut}", f"map_cut.{cut}", f"recall.{cut}", "recip_rank"})
    ref = evaluator.evaluate({q: r for q, r in run.items() if r})
    empty = {q: dict.fromkeys(ref[next(iter(ref))], 0.0) for q in run if not run[q]}  # retrieved nothing: trec_eval -c
    ref.update(empty)
    for k in ks:
        for ours, theirs in (("ndcg", "ndcg_cut"), ("map", "map_cut"), ("recall", "recall")):
            expected = [ref[q][f"{theirs}_{k}"] for q in scores.query_ids]
            np.testing.assert_allclose(scores.per_query[f"{ours}@{k}"], expected, atol=1e-12, err_msg=f"{ours}@{k}")
    # MRR without a cutoff is trec_eval's recip_rank: take k beyond every ranking's length
    deep = retrieval_metrics(rankings, qrels, ks=(1000,), metrics=("mrr",))
    np.testing.assert_allclose(deep.per_query["mrr@1000"], [ref[q]["recip_rank"] for q in deep.query_ids], atol=1e-12)
    # ... and MRR@10 is recip_rank of the run cut at 10
    cut10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(
        {q: {d: s for d, s in r.items() if s > len(r) - 10} for q, r in run.items() if r})
    expected = [cut10[q]["recip_rank"] if q in cut10 else 0.0 for q in scores.query_ids]
    np.testing.assert_allclose(retrieval_metrics(rankings, qrels, ks=(10,)).per_query["mrr@10"], expected, atol=1e-12)


def test_queries_without_relevant_documents_are_excluded_and_counted():
    qrels = {"1": {"a": 1}, "2": {"b": 0}, "10": {"c": 2}}
    rankings = {"1": ["a"], "2": ["b"], "10": [], "extra": ["a"]}  # "extra" has no judgements at all
    scores = retrieval_metrics(rankings, qrels, ks=(10,))
    assert scores.query_ids == ["1", "10"]  # numeric ids in numeric order
    assert scores.excluded == ["2", "extra"]
    np.testing.assert_allclose(scores.per_query["ndcg@10"], [1.0, 0.0])  # an empty ranking scores 0


def test_bad_rankings_are_refused():
    with pytest.raises(ValueError, match="no entry for query 'q2'"):
        retrieval_metrics({"q1": ["a"]}, {"q1": {"a": 1}, "q2": {"b": 1}})
    with pytest.raises(ValueError, match="lists document 'a' twice"):
        retrieval_metrics({"q1": ["a", "b", "a"]}, {"q1": {"a": 1}})
    with pytest.raises(ValueError, match="ks must be"):
        retrieval_metrics({"q1": ["a"]}, {"q1": {"a": 1}}, ks=(0,))
    with pytest.raises(ValueError, match="unknown retrieval metric 'p'"):
        retrieval_metrics({"q1": ["a"]}, {"q1": {"a": 1}}, metrics=("p",))


def test_specs_declare_direction_and_bounds():
    specs = metric_specs(ks=(10, 100))
    assert set(specs) == {f"{m}@{k}" for m in ("ndcg", "mrr", "recall", "map") for k in (10, 100)}
    assert specs["ndcg@10"] == MetricSpec(name="ndcg@10", higher_is_better=True, bounds=(0.0, 1.0))
    scores = retrieval_metrics(RANKINGS, QRELS, ks=(3,))
    assert set(scores.specs) == set(scores.per_query)
    for name, values in scores.per_query.items():
        lo, hi = scores.specs[name].bounds
        assert ((values >= lo) & (values <= hi)).all()
    assert R.PRIMARY_METRIC == "ndcg@10" and R.HIGHER_IS_BETTER
    assert R.CORRELATION_SPECS["spearman"].bounds == (-1.0, 1.0)


def test_interval_over_queries_uses_the_seeded_bootstrap():
    rng = np.random.default_rng(0)
    qrels = {str(i): {"a": 1} for i in range(200)}
    rankings = {str(i): (["a"] if rng.random() < 0.6 else ["b", "a"]) for i in range(200)}
    scores = retrieval_metrics(rankings, qrels, ks=(1,))
    mean, low, high = scores.interval("ndcg@1", n_resamples=500, seed=3)
    assert low < mean < high and mean == pytest.approx(scores.means()["ndcg@1"])
    assert scores.interval("ndcg@1", n_resamples=500, seed=3) == (mean, low, high)
    values = scores.per_query["ndcg@1"]
    loop = bootstrap_ci(values, values, lambda a, b: float(np.mean(a)), n_resamples=500, seed=3)  # unvectorised path
    assert loop == pytest.approx((mean, low, high))


@pytest.mark.parametrize("ties", [False, True])
def test_correlations_match_scipy(ties):
    stats = pytest.importorskip("scipy.stats", reason="scipy is the reference for Spearman/Pearson")
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 6, size=300).astype(float) if ties else rng.uniform(0, 5, size=300)
    predicted = gold + rng.normal(scale=1.5, size=300)
    if ties:
        predicted = np.round(predicted)
    assert spearman(gold, predicted) == pytest.approx(stats.spearmanr(gold, predicted).statistic, abs=1e-12)
    assert pearson(gold, predicted) == pytest.approx(stats.pearsonr(gold, predicted).statistic, abs=1e-12)


def test_correlation_intervals_are_seeded_and_equal_the_unvectorised_bootstrap():
    rng = np.random.default_rng(2)
    gold = rng.uniform(0, 5, size=120)
    predicted = gold + rng.normal(size=120)
    result = R.correlation_metrics(gold, predicted, n_resamples=300, seed=5)
    assert set(result) == {"spearman", "pearson"}
    for name, metric in (("spearman", spearman), ("pearson", pearson)):
        estimate, low, high = result[name]
        assert low < estimate < high <= 1.0
        loop = bootstrap_ci(gold, predicted, lambda a, b, m=metric: m(a, b), n_resamples=300, seed=5)
        assert loop == pytest.approx(result[name], abs=1e-12)
    assert R.correlation_metrics(gold, predicted, n_resamples=300, seed=5) == result
    with pytest.raises(ValueError, match="at least 2 pairs"):
        R.correlation_metrics([1.0], [2.0])
    assert math.isnan(pearson(np.ones(5), np.arange(5.0)))


def _brute_force(queries: np.ndarray, corpus: np.ndarray, k: int) -> list[list[int]]:
    out = []
    for q in queries:
        sims = []
        for j, d in enumerate(corpus):
            sims.append((float(np.dot(q, d) / (np.linalg.norm(q) * np.linalg.norm(d))), j))
        sims.sort(key=lambda s: (-s[0], s[1]))
        out.append([j for _, j in sims[:k]])
    return out


def test_exact_search_equals_brute_force_on_unnormalised_embeddings(monkeypatch):
    rng = np.random.default_rng(4)
    queries = rng.normal(size=(23, 8)) * rng.uniform(0.1, 10, size=(23, 1))  # not unit length
    corpus = rng.normal(size=(57, 8)) * rng.uniform(0.1, 10, size=(57, 1))
    expected = _brute_force(queries, corpus, 5)
    result = exact_search(queries, corpus, k=5)
    assert result.indices.tolist() == expected
    assert result.indices.shape == result.scores.shape == (23, 5)
    assert (np.diff(result.scores, axis=1) <= 1e-7).all()
    assert result.scores[0, 0] == pytest.approx(np.dot(queries[0], corpus[expected[0][0]])
                                                / np.linalg.norm(queries[0]) / np.linalg.norm(corpus[expected[0][0]]), abs=1e-6)
    monkeypatch.setattr(R, "_SEARCH_CHUNK_ELEMENTS", 100)  # one query row at a time
    chunked = exact_search(queries, corpus, k=5)
    assert chunked.indices.tolist() == expected
    np.testing.assert_allclose(chunked.scores, result.scores, atol=1e-6)  # BLAS sums in another order


def test_exact_search_edges_and_rankings():
    corpus = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # rows 0 and 1 tie for the query [1, 0]
    result = exact_search(np.array([[1.0, 0.0], [0.0, 3.0]]), corpus, k=10)  # k above the corpus size
    assert result.indices.tolist() == [[0, 1, 2], [2, 0, 1]]  # ties: lower row first
    assert result.rankings(["qa", "qb"], ["x", "y", "z"]) == {"qa": ["x", "y", "z"], "qb": ["z", "x", "y"]}
    with pytest.raises(ValueError, match="dimension"):
        exact_search(np.ones((1, 3)), corpus)
    with pytest.raises(ValueError, match="k must be"):
        exact_search(np.ones((1, 2)), corpus, k=0)


def test_exact_search_feeds_the_metrics():
    rng = np.random.default_rng(5)
    corpus = rng.normal(size=(40, 16))
    queries = corpus[:10] + rng.normal(scale=0.01, size=(10, 16))  # each query sits on its own document
    doc_ids = [f"d{i}" for i in range(40)]
    rankings = exact_search(queries, corpus, k=10).rankings([f"q{i}" for i in range(10)], doc_ids)
    scores = retrieval_metrics(rankings, {f"q{i}": {f"d{i}": 1} for i in range(10)}, ks=(1, 10))
    assert scores.means()["ndcg@10"] == pytest.approx(1.0)
    assert scores.means()["mrr@1"] == pytest.approx(1.0)
