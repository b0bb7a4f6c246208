"""Retrieval (semantic search): a text encoder whose pooled, normalised embeddings rank a corpus.

Data
    Training data is (query, positive) pairs or (query, positive, negative) triplets in a table
    (:func:`~headstart.data.retrieval.load_pairs`; ``--text-col`` names the query column,
    ``--label-col`` the positive one), a SQuAD/XQuAD ``.json`` file (question -> its paragraph,
    grouped by article), or a collection folder (BEIR ``corpus.jsonl`` / ``queries.jsonl`` /
    ``qrels``, or Cranfield) whose judgements become the training pairs. The split is seeded and
    query-disjoint (article-disjoint when the rows have groups); the validation and test splits
    search the whole corpus (every document of the data), not only their own positives.

Model and loss
    The body's pooled embedding (the backbone's pooling and normalisation) is the model: no head.
    Training uses the in-batch-negatives ranking loss
    (:class:`~headstart.train.losses.MultipleNegativesRankingLoss`, hard negatives when the data
    has a negative column) over batches with no duplicate text
    (:func:`~headstart.train.sampling.no_duplicate_batches`); the checkpoint kept is the one with
    the best validation nDCG@10 (ties: the lower validation ranking loss). Queries and documents
    get the backbone's ``query_prefix`` / ``document_prefix`` (e5's ``"query: "`` / ``"passage: "``).

Metrics
    nDCG, MRR, Recall and MAP at 1, 3, 5, 10 and 100 over the test corpus (trec_eval semantics,
    :mod:`headstart.evaluate.retrieval`), per query, each with a 95% bootstrap interval over
    queries; ``predictions.csv`` holds one row per test query with its per-query values.

Export
    A sentence-transformers folder (:mod:`headstart.export_st`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..evaluate.metrics import MetricSpec
from ..evaluate.retrieval import DEFAULT_KS, PRIMARY_METRIC, metric_specs
from .base import Objective, Scored, Task, TaskData, Training

MULTILINGUAL_DEFAULT = "use-multilingual"
"""The default backbone for non-English retrieval data: installs offline, 16 languages, frozen
features (zero-shot). Where a network exists, ``multilingual-e5-small`` / ``multilingual-minilm``
train (catalog)."""
SEARCH_DEPTH = max(DEFAULT_KS)
"""Documents ranked per query (the deepest cutoff)."""
HEADLINE = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100")
"""Metrics the run summary (manifest, store, CLI) keeps with intervals; every cutoff is in metrics.json."""
VAL_CORPUS_MAX = 2000
"""Documents searched by each validation pass during training: the validation queries' judged
documents plus a seeded sample of the rest (all of them in a corpus this small or smaller)."""
VAL_LOSS_BATCH = 32
"""Pairs per in-batch ranking loss when the validation loss (the tie-breaker) is computed."""
RESAMPLES = 1000
METRIC_SPECS = metric_specs()


def prefixed(preprocessing: Any, texts: list[str], role: str) -> list[str]:
    """``texts`` with the backbone's prefix for ``role`` ("query" or "document") in front."""
    prefix = getattr(preprocessing, f"{role}_prefix", "") or ""
    return [prefix + t for t in texts] if prefix else list(texts)


class EncoderModel(nn.Module):
    """The body and its pooling as the trainer sees it. A collated batch holds the queries'
    tensors under ``q.<name>``, the positives' under ``p.<name>`` and hard negatives' under
    ``n.<name>``; the output is their pooled embeddings ``{"q": (B, D), "p": (B, D), "n": (B, D)}``."""

    def __init__(self, backbone):
        super().__init__()
        self.body = backbone.module
        self._backbone = [backbone]  # a list: not registered as a submodule (the body already is)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in batch.items():
            role, name = key.split(".", 1)
            parts.setdefault(role, {})[name] = value
        return {role: self._backbone[0].forward_features(tensors) for role, tensors in parts.items()}

    def encode(self, prepared: list) -> torch.Tensor:
        """(N, D) embeddings of prepared texts in their order (no grad; the caller sets eval mode)."""
        bb = self._backbone[0]
        out = torch.empty((len(prepared), bb.feature_dim))
        budget, max_batch = bb.batch_budget
        for idx in bb.batches(prepared, budget, max_batch):
            batch = {k: v.to(bb.device) for k, v in bb.collate([prepared[i] for i in idx]).items()}
            out[idx] = bb.forward_features(batch).float().cpu()
        return out


class Retrieval(Task):
    name: ClassVar[str] = "retrieval"
    primary: ClassVar[MetricSpec] = METRIC_SPECS[PRIMARY_METRIC]
    metrics: ClassVar[tuple[MetricSpec, ...]] = tuple(METRIC_SPECS.values())
    has_head: ClassVar[bool] = False
    predicts: ClassVar[bool] = False
    shown: ClassVar[dict[str, str]] = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@10": "Recall@10",
                                       "recall@100": "Recall@100"}

    compared: ClassVar[tuple[str, str]] = ("ndcg@10", "mrr@10")
    unit: ClassVar[str] = "queries"

    def run_values(self, run_path, manifest):
        """Per-query values of the test queries (``predictions.csv``) as the "predictions" (the
        truth side is zeros: the values are already scores); the statistic is their mean."""
        import csv

        from ..evaluate.retrieval import prediction_mean

        out: dict[str, list[float]] = {name: [] for name in self.compared}
        try:
            with open(Path(run_path) / "predictions.csv", newline="", encoding="utf-8") as f:
                for rec in csv.DictReader(f):
                    for name in self.compared:
                        out[name].append(float(rec[name]))
        except (OSError, KeyError, ValueError):
            return None
        if not out[self.compared[0]]:
            return None
        return {name: (np.zeros(len(v)), np.array(v), prediction_mean) for name, v in out.items()}

    def moved_example(self, row: dict) -> tuple[str, str]:
        return row["input"], f"query {row['query_id']}"

    def default_backbone(self, data) -> str:
        """``minilm-l6`` for English data; the multilingual ``use-multilingual`` (frozen
        features) when most of the queries and documents are in other languages."""
        from ..plan.profile import LANGUAGE_WARN_SHARE, detect_scripts

        sample = self._sample_texts(data)
        shares = detect_scripts(sample) if sample else {}
        other = sum(share for lang, share in shares.items() if lang != "en")
        return MULTILINGUAL_DEFAULT if other >= LANGUAGE_WARN_SHARE else "minilm-l6"

    def default_method(self, backbone: str) -> str:
        """``finetune`` for a body that trains; ``frozen`` (zero-shot) for frozen-feature backbones."""
        from ..backbones import family_trains
        from ..catalog import resolve

        spec = resolve(backbone)
        return "finetune" if spec.family == "hf-auto" or family_trains(spec) else "frozen"

    @staticmethod
    def _sample_texts(data, n: int = 200) -> list[str]:
        from ..data.retrieval import load_pairs, load_retrieval_eval, read_squad

        path = Path(data).expanduser()
        if path.is_dir():
            ev = load_retrieval_eval(path)
            return list(ev.queries.values())[:n] + list(ev.documents().values())[:n]
        pairs = read_squad(path) if path.suffix.lower() == ".json" else load_pairs(path)
        return list(pairs.queries[:n]) + list(dict.fromkeys(pairs.positives))[:n]

    def describe_data(self, manifest: dict) -> str:
        split = manifest["data"]["split"]
        return (f"{split['train']} training {manifest['data']['train'].get('kind', 'pairs')} / {split['val']} validation "
                f"queries / {split['test']} test queries over {manifest['data']['test'].get('corpus', '?')} documents")

    # -- data ------------------------------------------------------------------------------------
    def read(self, recipe) -> TaskData:
        from ..data import Dataset
        from ..data.retrieval import (load_pairs, load_retrieval_eval, pairs_from_eval, read_squad, split_eval,
                                      split_pairs)
        from ..errors import BadInput

        path = Path(recipe.data).expanduser()
        test_fraction = 0.0 if recipe.test is not None else recipe.test_fraction
        common = {"val_fraction": recipe.val_fraction, "test_fraction": test_fraction, "seed": recipe.seed_of_split}
        if path.is_dir():
            collection = load_retrieval_eval(path)
            parts = split_eval(collection, **common)
            train = pairs_from_eval(parts.train)
            val, test = parts.val, parts.test
            fingerprint, columns, unit = collection.fingerprint, {}, "query"
            corpus_size = len(collection.corpus)
        else:
            if path.suffix.lower() == ".json":
                pairs = read_squad(path)
            else:
                pairs = load_pairs(path, query_col=recipe.text_col, positive_col=recipe.label_col, fmt=recipe.fmt,
                                   header=recipe.header)
            unit = "group" if pairs.groups is not None else "query"
            parts = split_pairs(pairs, by=unit, **common)
            documents = _documents(pairs)
            train = parts.train
            val = _collection(pairs.source, documents, parts.val)
            test = _collection(pairs.source, documents, parts.test) if parts.test is not None else None
            fingerprint, columns, corpus_size = pairs.fingerprint, pairs.columns, len(documents)
        if not train.queries:
            raise BadInput(f"{path}: the split left no training pairs; give more queries or lower --val-fraction/--test-fraction")
        if recipe.test is not None:
            test = load_retrieval_eval(recipe.test)
            _check_unseen(test, train, recipe.test)
        val_search = _val_corpus(val, recipe.seed_of_split)
        texts = Dataset(inputs=list(train.queries[:500]) + list(dict.fromkeys(train.positives))[:500], labels=None,
                        modality="text", source=str(path))
        return TaskData(
            train=train, val=val_search, test=test, modality="text",
            train_record={"source": str(path), "fingerprint": fingerprint, "examples": len(train), "columns": columns,
                          "kind": "triplets" if train.negatives is not None else "pairs"},
            test_record={"source": str(test.source) if recipe.test is not None else "held out from train",
                         "fingerprint": test.fingerprint, "examples": len(test.qrels), "corpus": len(test.corpus)},
            split_record={**common, "by": unit, "train": len(train), "val": len(val.qrels), "test": len(test.qrels),
                          "corpus": corpus_size, "val_corpus": len(val_search.corpus)},
            separate_test=recipe.test is not None, texts=texts,
        )

    def read_eval(self, run, data, *, text_col=None, header=None):
        from ..data.retrieval import load_retrieval_eval
        from ..errors import BadInput

        if not isinstance(data, (str, Path)):
            raise BadInput("evaluating a retrieval run takes a file or folder: pairs, a SQuAD .json, or a collection "
                           "(corpus.jsonl + queries.jsonl + qrels)")
        ev = load_retrieval_eval(data)
        return ev, str(ev.source or data), ev.fingerprint

    def examples(self, data) -> int:
        if hasattr(data, "qrels"):  # a collection: its queries and the documents embedded for them
            return len(data.qrels) + len(data.corpus)
        return len(data)

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, method, backbone, test, ctx, *, n_resamples: int = RESAMPLES, intervals: bool = True) -> Scored:
        """Embed the test queries and corpus with the adapted body, rank the corpus exactly, and
        score every judged query (intervals are always computed: they are cheap over queries)."""
        from ..data import Dataset

        pre = backbone.spec.preprocessing

        def embed(texts: list[str], role: str) -> np.ndarray:
            return method.embed(backbone, Dataset(inputs=prefixed(pre, texts, role), labels=None, modality="text",
                                                  source=str(test.source)), ctx)

        scores, rankings = rank_collection(test, embed)
        means = scores.means()
        summary: dict[str, Any] = {name: round(means[name], 6) for name in HEADLINE}
        for name in HEADLINE:
            _, low, high = scores.interval(name, n_resamples=n_resamples)
            summary[f"{name}_ci"] = [round(float(low), 6), round(float(high), 6)]
        summary.update(queries=len(scores.query_ids), corpus=len(test.corpus), excluded_queries=scores.n_excluded,
                       ci_level=0.95, ci_resamples=n_resamples)
        detail = {**{k: round(v, 6) for k, v in means.items()}, **summary,
                  "excluded": scores.excluded}
        row_of = {q: i for i, q in enumerate(scores.query_ids)}
        records = []
        for qid in scores.query_ids:
            i = row_of[qid]
            ranked = rankings[qid]
            records.append({"query_id": qid, "input": test.queries[qid],
                            **{name: round(float(scores.per_query[name][i]), 6) for name in HEADLINE},
                            "relevant": " ".join(d for d, g in test.qrels[qid].items() if g > 0),
                            "top10": " ".join(ranked[:10])})
        return Scored(summary=summary, detail=detail, records=records)

    def suite_cells(self, run, path, metrics, *, n_resamples: int, seed: int):
        """A collection, SQuAD file or pairs table searched exactly with the run's embeddings."""
        from ..data.retrieval import load_retrieval_eval

        ev = load_retrieval_eval(path)
        sc = rank_collection(ev, lambda texts, role: run.embed(texts, role=role))[0]
        cells = {}
        for m in metrics:
            mean, low, high = sc.interval(m, n_resamples=n_resamples, seed=seed)
            cells[m] = {"value": float(mean), "ci": [float(low), float(high)], "n": len(sc.query_ids)}
        return cells, str(ev.source or ""), ev.fingerprint

    def example_values(self, run, path, metrics):
        """Per-query values of a collection, SQuAD file or pairs table searched with the run."""
        from ..data.retrieval import load_retrieval_eval
        from ..evaluate.retrieval import prediction_mean

        ev = load_retrieval_eval(path)
        sc = rank_collection(ev, lambda texts, role: run.embed(texts, role=role))[0]
        return {m: (np.zeros(len(sc.query_ids)), np.asarray(sc.per_query[m], dtype=float), prediction_mean)
                for m in metrics}, ev.fingerprint

    # -- trained methods -------------------------------------------------------------------------
    def preset(self, method: str, train) -> tuple[str, dict]:
        from .base import sized_preset

        return sized_preset("retrieval", method, len(train), PRESETS, _COMMON, _EPOCHS)

    def build_model(self, backbone, cfg, ctx) -> nn.Module:
        return EncoderModel(backbone)

    def training(self, model, train, val, cfg, ctx) -> Training:
        from ..train.losses import MultipleNegativesRankingLoss
        from ..train.sampling import no_duplicate_batches

        bb = model._backbone[0]
        pre = bb.spec.preprocessing
        roles = {"q": bb.prepare(prefixed(pre, list(train.queries), "query")),
                 "p": bb.prepare(prefixed(pre, list(train.positives), "document"))}
        if train.negatives is not None:
            roles["n"] = bb.prepare(prefixed(pre, list(train.negatives), "document"))
        lengths = [sum(bb.cost(prepared[i]) for prepared in roles.values()) for i in range(len(train))]
        keys = [tuple(t for t in (train.queries[i], train.positives[i],
                                  train.negatives[i] if train.negatives is not None else None)) for i in range(len(train))]
        mnrl = MultipleNegativesRankingLoss()

        collate = role_collate(bb, roles)

        def loss(outputs: dict[str, torch.Tensor], idx: list[int]) -> torch.Tensor:
            return mnrl(outputs["q"], outputs["p"], outputs.get("n"))

        qids = [q for q in val.queries if q in val.qrels]
        docs = val.documents()
        dids = list(docs)
        val_q = bb.prepare(prefixed(pre, [val.queries[q] for q in qids], "query"))
        val_d = bb.prepare(prefixed(pre, [docs[d] for d in dids], "document"))
        row = {d: i for i, d in enumerate(dids)}
        first_relevant = [row[max(val.qrels[q].items(), key=lambda kv: kv[1])[0]] for q in qids]

        def evaluate(m: nn.Module) -> dict[str, float]:
            from ..evaluate.retrieval import exact_search, retrieval_metrics

            q_emb, d_emb = m.encode(val_q), m.encode(val_d)
            top = exact_search(q_emb.numpy(), d_emb.numpy(), k=min(SEARCH_DEPTH, len(dids)))
            scores = retrieval_metrics(top.rankings(qids, dids), val.qrels, ks=(10,), metrics=("ndcg",))
            positives = d_emb[first_relevant]
            losses = [mnrl(q_emb[s:s + VAL_LOSS_BATCH], positives[s:s + VAL_LOSS_BATCH])
                      for s in range(0, len(qids), VAL_LOSS_BATCH)]
            return {PRIMARY_METRIC: scores.means()["ndcg@10"], "loss": float(torch.cat(losses).mean())}

        objective = Objective(loss=loss, evaluate=evaluate, metric=self.primary, val_examples=len(val_q) + len(val_d))
        return Training(lengths=lengths, collate=collate, objective=objective,
                        batches=lambda rng: no_duplicate_batches(keys, lengths, cfg.batch_size, rng))

    def verbs(self, modality: str) -> tuple:
        from .verbs import Param, Verb

        return (
            Verb("embed", "unit-length embeddings of each text by the adapted encoder", item="text", field="inputs",
                 call=_embed_verb, needs=("embed",), result="embeddings", example="card not working",
                 params=(Param("role", str, "query", "query or document: the backbone's prefix for it goes in front "
                                                      "(e5's 'query: ' / 'passage: '; most have none)",
                               choices=("query", "document")),)),
            Verb("search", "the nearest documents of the served index for each query", item="text", field="queries",
                 call=_search_verb, needs=("embed", "index"), result="results", example="card not working",
                 params=(Param("k", int, 10, "documents per query", ge=1, le=1000),
                         Param("index", str, "", "which served index (its folder name); may be left out when the "
                                                 "server holds one"))),
        )

    def export(self, run, out, *, merge: bool = False) -> dict:
        from ..export_st import export_sentence_transformer

        return export_sentence_transformer(run, out)

    def onnx_graph(self, method, backbone, ctx, texts):
        """The pooled (and normalised) body itself: output ``embeddings`` (B, dim); the role
        prefixes go in the record, and the check embeds the texts as queries and as documents."""
        from ..data import Dataset
        from ..export_onnx import OnnxGraph

        pre = backbone.spec.preprocessing
        reference = {role: method.embed(backbone, Dataset(inputs=prefixed(pre, texts, role), labels=None, modality="text",
                                                          source="<export check>"), ctx)
                     for role in ("query", "document")}
        return OnnxGraph(top=nn.Identity(), output="embeddings", reference=reference,
                         fields={"prompts": {"query": pre.query_prefix, "document": pre.document_prefix},
                                 "dim": backbone.feature_dim})


# Hyperparameters by the number of training pairs: few <= 500 < medium <= 5000 < large. The body
# rates follow sentence-transformers' MNRL recipes (2e-5 for full fine-tuning); LoRA-style
# methods take a ~10x larger rate (benchmarks/retrieval.py measures both against the peer).
_COMMON = {
    "few": {"batch_size": 32, "patience": 3, "eval_every": 1.0},
    "medium": {"batch_size": 32, "patience": 2, "eval_every": 0.5},
    "large": {"batch_size": 64, "patience": 2, "eval_every": 0.25},
}
_EPOCHS = {"few": 8, "medium": 3, "large": 1}
PRESETS: dict[str, dict] = {
    "finetune": {"lr": 2e-5},
    "lora": {"lr": 2e-4, "rank": 8, "alpha": 16.0, "lora_dropout": 0.0},
    "dora": {"lr": 2e-4, "rank": 8, "alpha": 16.0, "lora_dropout": 0.0},
    "qlora": {"lr": 2e-4, "rank": 8, "alpha": 16.0, "lora_dropout": 0.0},
    "adapter": {"lr": 2e-4, "bottleneck": 64},
    "scratch": {"lr": 5e-4},
}


def rank_collection(ev, embed, **metric_options):
    """Rank ``ev``'s whole corpus exactly for each judged query with ``embed(texts, role)`` (role
    "query" or "document") and score it: (:class:`RetrievalScores`, rankings). The one scoring
    path of test splits, suites and the plan; ``metric_options`` go to ``retrieval_metrics``."""
    from ..evaluate.retrieval import exact_search, retrieval_metrics

    qids = [q for q in ev.queries if q in ev.qrels]
    docs = ev.documents()
    dids = list(docs)
    top = exact_search(embed([ev.queries[q] for q in qids], "query"), embed([docs[d] for d in dids], "document"),
                       k=min(SEARCH_DEPTH, len(dids)))
    rankings = top.rankings(qids, dids)
    return retrieval_metrics(rankings, ev.qrels, **metric_options), rankings


def role_collate(bb, roles: dict[str, list]):
    """``collate(idx)`` for :class:`EncoderModel`: each role's prepared texts (queries ``q``,
    positives ``p``, ...) collated by the backbone, their tensors under ``<role>.<name>``."""

    def collate(idx: list[int]) -> dict[str, torch.Tensor]:
        out = {}
        for role, prepared in roles.items():
            out.update({f"{role}.{k}": v for k, v in bb.collate([prepared[i] for i in idx]).items()})
        return out

    return collate


def _documents(pairs) -> dict[str, str]:
    """Every distinct positive and negative text of the data as the corpus, ``d1``, ``d2``, ... in
    order of first appearance (the ids :func:`eval_from_pairs` gives)."""
    from ..data.retrieval import eval_from_pairs

    return eval_from_pairs(pairs).corpus


def _collection(source: str, documents: dict[str, str], part):
    """The queries and judgements of ``part`` (pairs) over the whole corpus ``documents``."""
    from ..data.retrieval import RetrievalEval

    did = {text: d for d, text in documents.items()}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    qid_of: dict[str, str] = {}
    for q, pos in zip(part.queries, part.positives, strict=True):
        qid = qid_of.setdefault(q, f"q{len(qid_of) + 1}")
        queries[qid] = q
        qrels.setdefault(qid, {})[did[pos]] = 1
    return RetrievalEval(queries=queries, corpus=documents, qrels=qrels, source=source)


def _val_corpus(val, seed: int):
    """``val`` with its corpus cut to :data:`VAL_CORPUS_MAX` documents: every judged document of
    its queries, then a seeded sample of the others."""
    from ..data.retrieval import RetrievalEval

    if len(val.corpus) <= VAL_CORPUS_MAX:
        return val
    judged = {d for r in val.qrels.values() for d in r}
    others = [d for d in val.corpus if d not in judged]
    rng = np.random.default_rng(seed)
    keep = judged | set(rng.choice(others, size=max(0, VAL_CORPUS_MAX - len(judged)), replace=False).tolist())
    return RetrievalEval(queries=val.queries, corpus={d: t for d, t in val.corpus.items() if d in keep},
                         qrels=val.qrels, source=val.source, titles={d: t for d, t in val.titles.items() if d in keep})


def _check_unseen(test, train, path) -> None:
    """A separate test collection may not ask a training query (the split is by query)."""
    from ..data.retrieval import query_key
    from ..errors import BadInput

    seen = {query_key(q) for q in train.queries}
    shared = [q for q in test.queries.values() if query_key(q) in seen]
    if shared:
        raise BadInput(f"{path}: {len(shared)} test queries are also training queries (e.g. {shared[0][:60]!r}); "
                       "a retrieval test must ask unseen queries: remove them from one of the files")


__all__ = ["EncoderModel", "Retrieval", "prefixed"]


def _embed_verb(served, items: list, params: dict) -> list[list[float]]:
    """``POST /v1/embed``: one embedding (a list of floats) per text."""
    return [[round(float(x), 7) for x in row] for row in served.embed(items, role=params["role"])]


def _search_verb(served, items: list, params: dict) -> list[dict]:
    """``POST /v1/search``: ``{"hits": [{"id", "score", "text"}]}`` per query, best first."""
    index = served.index(params["index"])
    vectors = served.embed(items, role="query")
    found = index.search(vectors, min(params["k"], len(index)), served.producer)
    return [{"hits": [{"id": d, "score": round(float(sc), 6), "text": index.text(d)} for d, sc in zip(ids, scores, strict=True)]}
            for ids, scores in found]
