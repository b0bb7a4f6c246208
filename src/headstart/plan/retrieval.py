"""``plan --task retrieval``: which encoder to start from and which method the data and budget
justify, before any training.

1. The data is read and split as ``adapt --task retrieval`` will (:meth:`Retrieval.read`).
2. Every candidate backbone (the installed text backbones of the catalog, or ``--backbones``)
   embeds a sample of the user's own training queries (``--sample``, seeded) and the whole corpus
   (capped as validation caps it), and ranks it: **zero-shot nDCG@10** with a 95% bootstrap
   interval over the sampled queries. Zero-shot is what ``--method frozen`` gives, and it is
   the floor a trained method starts from.
3. The cost model (:mod:`headstart.plan.cost`: encoding and forward+backward throughput measured
   here once per backbone and cached, scaled by the speed check) predicts each backbone x method's
   wall time: ``frozen`` encodes the test queries and corpus; a trained method also runs its
   preset schedule (epochs x training pairs, each pair a query and a document through
   forward+backward at the method's relative speed) and its validation passes.
4. The recommendation: the backbone with the best zero-shot nDCG@10 (a backbone whose interval
   overlaps the best one's and that trains is preferred over a frozen-only one when there are
   enough pairs to train on); on it, ``finetune`` when there are at least
   :data:`MIN_PAIRS_TO_TRAIN` training pairs and it fits the budget, else ``lora`` when that fits,
   else ``frozen``. Trained methods' gains are not predicted (no calibrated prior exists for
   retrieval yet): the plan says so, and ``compare --task retrieval --methods frozen,lora,finetune``
   measures them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import status
from ..errors import BadInput, HeadstartError

MIN_PAIRS_TO_TRAIN = 50
"""Below this many training pairs the plan recommends the zero-shot encoder: a few dozen pairs
rarely move a pretrained encoder, and the validation split is then too small to tell."""
TRAINED = ("finetune", "lora")
"""Trained methods the plan weighs, heaviest first (the others are compared with ``compare``)."""
DEFAULT_BUDGET_S = 1800.0


@dataclass
class Candidate:
    backbone: str
    method: str
    zero_shot_ndcg: float | None
    ci: tuple[float, float] | None
    predicted_s: float | None
    fits: bool
    note: str = ""


@dataclass
class RetrievalPlan:
    data: str
    task: str
    budget_s: float
    sample: dict
    candidates: list[Candidate] = field(default_factory=list)
    recommended: Candidate | None = None
    why: str = ""
    plan_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recommended"] = asdict(self.recommended) if self.recommended else None
        return d


def plan_retrieval(data: str | Path, *, backbones: list[str] | None = None, methods: list[str] | None = None,
                   budget: float | str | None = None, sample: int = 200, seed: int = 0, text_col: str | None = None,
                   label_col: str | None = None, fmt: str | None = None, header: bool | None = None,
                   test: str | Path | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                   precision: str = "auto") -> RetrievalPlan:
    """Rank candidate encoders by zero-shot nDCG@10 on a sample of ``data``'s training queries and
    choose the method within ``budget`` (see the module docstring)."""
    from ..backbones import family_trains, open_backbone
    from ..catalog import resolve
    from ..data.retrieval import RetrievalEval
    from ..recipe import Recipe
    from ..tasks import get_task
    from ..tasks.retrieval import prefixed, rank_collection
    from ..train import resolve_precision
    from ..train.budget import parse_budget
    from .cost import METHOD_SPEED, measure_throughput, speed_check, speed_factor
    from .recommend import candidate_backbones

    t0 = time.perf_counter()
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 10:
        raise BadInput(f"--sample must be an integer >= 10 (got {sample!r})")
    budget_s = parse_budget(budget) if budget is not None else DEFAULT_BUDGET_S
    wanted = list(methods) if methods else ["frozen", *TRAINED]
    unknown = [m for m in wanted if m not in ("frozen", *TRAINED)]
    if unknown:
        raise BadInput(f"plan --task retrieval weighs the methods frozen, {', '.join(TRAINED)}; {unknown[0]!r} is not "
                       "one of them (compare measures the others)")
    task = get_task("retrieval")
    recipe = Recipe(data=str(data), test=None if test is None else str(test), task="retrieval", method="frozen", seed=seed,
                    text_col=text_col, label_col=label_col, fmt=fmt, header=header, val_fraction=val_fraction,
                    test_fraction=test_fraction, precision=precision)
    recipe.validate()
    td = task.read(recipe)
    train, val, test_set = td.train, td.val, td.test

    # The sample: distinct training queries (seeded), each judged by its positives, over the corpus.
    rng = np.random.default_rng(seed)
    by_query: dict[str, set[str]] = {}
    for q, p in zip(train.queries, train.positives, strict=True):
        by_query.setdefault(q, set()).add(p)
    chosen = sorted(by_query)
    if len(chosen) > sample:
        chosen = sorted(rng.choice(chosen, size=sample, replace=False).tolist())
    documents = dict(val.documents())
    text_to_id = {t: d for d, t in documents.items()}
    for p in {p for q in chosen for p in by_query[q]}:
        if p not in text_to_id:
            text_to_id[p] = f"s{len(text_to_id)}"
            documents[text_to_id[p]] = p
    ev = RetrievalEval(queries={f"q{i}": q for i, q in enumerate(chosen)}, corpus=documents,
                       qrels={f"q{i}": {text_to_id[p]: 1 for p in by_query[q]} for i, q in enumerate(chosen)},
                       source=str(data))
    qids, dids = list(ev.queries), list(documents)
    names = candidate_backbones("text", backbones)
    now = speed_check()
    n_pairs = len(train)
    status(f"plan: scoring {len(names)} encoders zero-shot on {len(qids)} of your queries over {len(dids)} documents")

    candidates: list[Candidate] = []
    for name in names:
        try:
            bb, bb_hash = open_backbone(resolve(name))
        except HeadstartError as e:
            candidates.append(Candidate(name, "frozen", None, None, None, False, note=f"not scored: {e}"))
            continue
        pre = bb.spec.preprocessing
        scores, _ = rank_collection(ev, lambda texts, role, bb=bb, pre=pre: bb.embed(
            prefixed(pre, texts, role), desc=f"plan: {name} {role}s"), ks=(10,), metrics=("ndcg",))
        mean, low, high = scores.interval("ndcg@10")
        used = resolve_precision(precision, bb.spec)
        texts = list(chosen[:64]) + [documents[d] for d in dids[:64]]
        tp = measure_throughput(bb, bb_hash, texts, used)
        factor = speed_factor(tp, now) or 1.0
        q_tokens = float(np.mean([bb.cost(p) for p in bb.prepare(list(train.queries[:200]))]))
        d_tokens = float(np.mean([bb.cost(p) for p in bb.prepare(list(dict.fromkeys(train.positives))[:200])]))
        n_test_tokens = len(test_set.qrels) * q_tokens + len(test_set.corpus) * d_tokens
        encode_s = n_test_tokens / tp.infer_tokens_s * factor
        trains = family_trains(bb.spec)
        for method in wanted:
            if method == "frozen":
                predicted = encode_s
                note = "zero-shot: what the base gives as it is"
            elif not trains:  # frozen features only: its one row is the zero-shot one
                continue
            else:
                regime, values = task.preset(method, train)
                epochs = values["epochs"]
                pair_tokens = q_tokens + d_tokens + (d_tokens if train.negatives is not None else 0.0)
                train_s = epochs * n_pairs * pair_tokens / (tp.train_tokens_s * METHOD_SPEED[method]) * factor
                evals = epochs / values["eval_every"] + 1
                val_s = evals * (len(val.qrels) * q_tokens + len(val.corpus) * d_tokens) / tp.infer_tokens_s * factor
                predicted = encode_s + train_s + val_s
                note = f"{regime} preset: {epochs:g} epochs of {n_pairs} pairs; gain over zero-shot measured by the run"
            candidates.append(Candidate(name, method, float(mean), (float(low), float(high)), round(predicted, 1),
                                        predicted <= budget_s, note=note))

    plan = RetrievalPlan(data=str(data), task="retrieval", budget_s=budget_s,
                         sample={"queries": len(qids), "documents": len(dids), "training_pairs": n_pairs, "seed": seed},
                         candidates=candidates)
    plan.recommended, plan.why = _recommend(candidates, n_pairs)
    plan.plan_s = round(time.perf_counter() - t0, 2)
    return plan


def _recommend(candidates: list[Candidate], n_pairs: int) -> tuple[Candidate | None, str]:
    scored = [c for c in candidates if c.zero_shot_ndcg is not None]
    if not scored:
        return None, "no candidate could be scored"
    best = max(scored, key=lambda c: c.zero_shot_ndcg)
    enough = n_pairs >= MIN_PAIRS_TO_TRAIN
    pool = [best.backbone]
    if enough:  # a trainable encoder within the best one's interval is worth more than a frozen one
        trainable = {c.backbone for c in scored if c.method in TRAINED and c.predicted_s is not None}
        close = [c for c in scored if c.method == "frozen" and c.backbone in trainable and c.ci is not None
                 and best.ci is not None and c.ci[1] >= best.ci[0]]
        if best.backbone not in trainable and close:
            pool = [max(close, key=lambda c: c.zero_shot_ndcg).backbone]
    backbone = pool[0]
    options = {c.method: c for c in scored if c.backbone == backbone}
    if enough:
        for method in TRAINED:
            c = options.get(method)
            if c is not None and c.fits:
                why = (f"best zero-shot nDCG@10 among the encoders that train ({c.zero_shot_ndcg:.3f}); {n_pairs} training "
                       f"pairs justify training, and {method} fits the budget (predicted {c.predicted_s:.0f}s)")
                return c, why
    c = options.get("frozen")
    if c is None:
        return None, "no candidate fits"
    reason = (f"only {n_pairs} training pairs (< {MIN_PAIRS_TO_TRAIN})" if not enough
              else "no trained method fits the budget" if any(m in options for m in TRAINED)
              else "the best encoder gives frozen features only")
    return c, f"best zero-shot nDCG@10 ({c.zero_shot_ndcg:.3f}); {reason}: use it as it is"


def table(plan: RetrievalPlan) -> str:
    """The ranked candidates as aligned text, the recommendation last."""
    lines = [f"plan for retrieval on {plan.data}: {plan.sample['queries']} sampled queries over "
             f"{plan.sample['documents']} documents, {plan.sample['training_pairs']} training pairs, budget "
             f"{plan.budget_s:.0f}s",
             f"  {'backbone':<22} {'method':<9} {'zero-shot nDCG@10 [95%]':<26} {'predicted':>10}  note"]
    ranked = sorted(plan.candidates, key=lambda c: (-(c.zero_shot_ndcg or -1), c.method))
    for c in ranked:
        score = f"{c.zero_shot_ndcg:.3f} [{c.ci[0]:.3f}, {c.ci[1]:.3f}]" if c.ci else "-"
        pred = f"{c.predicted_s:.0f}s" if c.predicted_s is not None else "-"
        mark = "*" if c is plan.recommended else " "
        lines.append(f"{mark} {c.backbone:<22} {c.method:<9} {score:<26} {pred:>10}  {c.note}")
    if plan.recommended is not None:
        r = plan.recommended
        lines.append(f"recommended: --backbone {r.backbone} --method {r.method} ({plan.why})")
    else:
        lines.append(f"no recommendation: {plan.why}")
    return "\n".join(lines)


__all__ = ["Candidate", "MIN_PAIRS_TO_TRAIN", "RetrievalPlan", "plan_retrieval", "table"]
