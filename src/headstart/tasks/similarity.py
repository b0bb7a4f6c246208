"""Similarity (STS): scored sentence pairs; the encoder's cosine must order pairs as the gold
scores do.

Data
    (sentence1, sentence2, score) rows in CSV/TSV/JSONL/Parquet
    (:func:`~headstart.data.retrieval.load_scored_pairs`: columns ``sentence1``/``sentence2`` and
    ``score``/``similarity``/``label``; a headerless file of exactly three columns, such as
    stsb-multi-mt's, reads as sentence1, sentence2, score with ``--no-header``). The score scale is
    inferred (0-1, -1-1, 0-5, 0-10, 0-100) and recorded. The split is seeded, by pair.

Model and loss
    The body's pooled embedding (no head), trained with CoSENT
    (:class:`~headstart.train.losses.CoSENTLoss`: a batch-level ranking loss, weighted per
    micro-batch by its size under accumulation); the state with the best validation Spearman is
    kept. Methods as for retrieval (the encoder is the same model): ``frozen`` is the zero-shot
    baseline; a retrieval-style export (sentence-transformers folder) follows from the task it
    extends.

Metrics
    Spearman's rho (primary) and Pearson's r between the gold scores and the cosine, each with a
    95% bootstrap interval over pairs; ``predictions.csv`` holds every test pair's gold score and
    cosine, so compare's intervals and drift's paired bootstrap are computed over the same pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..evaluate.metrics import MetricSpec
from .base import Objective, Scored, TaskData, Training
from .retrieval import Retrieval, prefixed, role_collate

VAL_LOSS_BATCH = 64
"""Pairs per CoSENT loss when the validation loss (the tie-breaker) is computed."""


class Similarity(Retrieval):
    name: ClassVar[str] = "similarity"
    primary: ClassVar[MetricSpec] = MetricSpec("spearman", higher_is_better=True, bounds=(-1.0, 1.0))
    metrics: ClassVar[tuple[MetricSpec, ...]] = (primary, MetricSpec("pearson", higher_is_better=True, bounds=(-1.0, 1.0)))
    shown: ClassVar[dict[str, str]] = {"spearman": "Spearman", "pearson": "Pearson"}
    compared: ClassVar[tuple[str, str]] = ("spearman", "pearson")
    unit: ClassVar[str] = "pairs"

    def moved_example(self, row: dict) -> None:
        """Its compared values are correlations over the whole set, not per pair: no per-example list."""
        return None

    # -- data ------------------------------------------------------------------------------------
    def read(self, recipe) -> TaskData:
        from ..data import Dataset

        pairs = _load(recipe.data, recipe)
        test_fraction = 0.0 if recipe.test is not None else recipe.test_fraction
        train, val, test = _split(pairs, recipe.val_fraction, test_fraction, recipe.seed_of_split)
        if recipe.test is not None:
            test = _load(recipe.test, recipe)
        texts = Dataset(inputs=list(pairs.sentences1[:500]) + list(pairs.sentences2[:500]), labels=None, modality="text",
                        source=str(pairs.source))
        return TaskData(
            train=train, val=val, test=test, modality="text",
            train_record={"source": str(pairs.source), "fingerprint": pairs.fingerprint, "examples": len(pairs),
                          "columns": pairs.columns, "kind": "scored pairs", "score_range": list(pairs.score_range)},
            test_record={"source": str(test.source) if recipe.test is not None else "held out from train",
                         "fingerprint": test.fingerprint, "examples": len(test)},
            split_record={"val_fraction": recipe.val_fraction, "test_fraction": test_fraction, "seed": recipe.seed_of_split,
                          "by": "pair", "train": len(train), "val": len(val), "test": len(test)},
            separate_test=recipe.test is not None, texts=texts,
        )

    @staticmethod
    def _sample_texts(data, n: int = 200) -> list[str]:
        from ..recipe import Recipe

        pairs = _load(data, Recipe(data=str(data)))
        return list(pairs.sentences1[:n]) + list(pairs.sentences2[:n])

    def read_eval(self, run, data, *, text_col=None, header=None):
        from ..errors import BadInput
        from ..recipe import Recipe

        if not isinstance(data, (str, Path)):
            raise BadInput("evaluating a similarity run takes a file of scored pairs (sentence1, sentence2, score)")
        pairs = _load(data, Recipe(data=str(data), header=header))
        return pairs, str(pairs.source), pairs.fingerprint

    def examples(self, data) -> int:
        return 2 * len(data)

    def describe_data(self, manifest: dict) -> str:
        split = manifest["data"]["split"]
        lo, hi = manifest["data"]["train"].get("score_range", ("?", "?"))
        return f"{split['train']} train / {split['val']} validation / {split['test']} test scored pairs (scores {lo:g}..{hi:g})"

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, method, backbone, test, ctx, *, n_resamples: int = 1000, intervals: bool = True) -> Scored:
        from ..data import Dataset
        from ..evaluate.retrieval import correlation_metrics

        pre = backbone.spec.preprocessing
        a = method.embed(backbone, Dataset(inputs=prefixed(pre, list(test.sentences1), "query"), labels=None,
                                           modality="text", source=str(test.source)), ctx)
        b = method.embed(backbone, Dataset(inputs=prefixed(pre, list(test.sentences2), "query"), labels=None,
                                           modality="text", source=str(test.source)), ctx)
        sims = _cosine(a, b)
        found = correlation_metrics(test.scores, sims, n_resamples=n_resamples)
        summary: dict[str, Any] = {}
        for name, (value, low, high) in found.items():
            summary[name] = round(float(value), 6)
            summary[f"{name}_ci"] = [round(float(low), 6), round(float(high), 6)]
        summary.update(n=len(test), ci_level=0.95, ci_resamples=n_resamples)
        records = [{"sentence1": s1, "sentence2": s2, "score": float(y), "cosine": round(float(c), 6)}
                   for s1, s2, y, c in zip(test.sentences1, test.sentences2, test.scores, sims, strict=True)]
        return Scored(summary=summary, detail=dict(summary), records=records)

    def run_values(self, run_path, manifest):
        """(gold scores, cosines, statistic) per compared metric, from ``predictions.csv``."""
        import csv

        from ..evaluate.retrieval import pearson, spearman

        gold, cos = [], []
        try:
            with open(Path(run_path) / "predictions.csv", newline="", encoding="utf-8") as f:
                for rec in csv.DictReader(f):
                    gold.append(float(rec["score"]))
                    cos.append(float(rec["cosine"]))
        except (OSError, KeyError, ValueError):
            return None
        if not gold:
            return None
        y, p = np.array(gold), np.array(cos)
        return {"spearman": (y, p, spearman), "pearson": (y, p, pearson)}

    # -- trained methods -------------------------------------------------------------------------
    def training(self, model, train, val, cfg, ctx) -> Training:
        from ..train.losses import CoSENTLoss

        bb = model._backbone[0]
        pre = bb.spec.preprocessing
        roles = {"a": bb.prepare(prefixed(pre, list(train.sentences1), "query")),
                 "b": bb.prepare(prefixed(pre, list(train.sentences2), "query"))}
        scores = torch.tensor(train.scores, dtype=torch.float32)
        lengths = [bb.cost(roles["a"][i]) + bb.cost(roles["b"][i]) for i in range(len(train))]
        cosent = CoSENTLoss()

        collate = role_collate(bb, roles)

        def loss(outputs: dict[str, torch.Tensor], idx: list[int]) -> torch.Tensor:
            return cosent(outputs["a"], outputs["b"], scores[idx].to(outputs["a"].device))

        val_a = bb.prepare(prefixed(pre, list(val.sentences1), "query"))
        val_b = bb.prepare(prefixed(pre, list(val.sentences2), "query"))
        val_scores = np.asarray(val.scores, dtype=np.float64)

        def evaluate(m: nn.Module) -> dict[str, float]:
            from ..evaluate.retrieval import spearman

            a, b = m.encode(val_a), m.encode(val_b)
            sims = _cosine(a.numpy(), b.numpy())
            y = torch.tensor(val_scores, dtype=torch.float32)
            losses = [float(cosent(a[s:s + VAL_LOSS_BATCH], b[s:s + VAL_LOSS_BATCH], y[s:s + VAL_LOSS_BATCH]))
                      for s in range(0, len(val_scores), VAL_LOSS_BATCH)]
            rho = spearman(val_scores, sims)
            return {"spearman": float(rho) if np.isfinite(rho) else -1.0, "loss": float(np.mean(losses))}

        objective = Objective(loss=loss, evaluate=evaluate, metric=self.primary, val_examples=2 * len(val_scores),
                              per_example=False)
        return Training(lengths=lengths, collate=collate, objective=objective)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(1)


def _load(path, recipe):
    """Scored pairs from ``path``; a headerless three-column file is sentence1, sentence2, score."""
    from ..data.retrieval import load_scored_pairs

    named = {}
    if recipe.header is False:
        named = {"sentence1_col": "0", "sentence2_col": "1", "score_col": "2"}
    return load_scored_pairs(path, fmt=recipe.fmt, header=recipe.header, **named)


def _split(pairs, val_fraction: float, test_fraction: float, seed: int):
    """Seeded split by pair: at least one validation pair, and one test pair when asked for."""
    from ..errors import BadInput

    n = len(pairs)
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_test - n_val < 2:
        raise BadInput(f"{pairs.source}: {n} scored pairs leave too few to train on after the split; add pairs or lower "
                       "--val-fraction/--test-fraction")
    parts = (order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test])
    return tuple(_subset(pairs, sorted(p.tolist())) for p in parts)


def _subset(pairs, index: list[int]):
    from ..data.retrieval import ScoredPairs

    return ScoredPairs(sentences1=[pairs.sentences1[i] for i in index], sentences2=[pairs.sentences2[i] for i in index],
                       scores=[pairs.scores[i] for i in index], score_range=pairs.score_range, source=pairs.source,
                       origin=[pairs.origin[i] for i in index] if pairs.origin else [], columns=pairs.columns)


__all__ = ["Similarity"]
