"""The retrieval task end to end on a tiny random encoder: data forms, query-disjoint splits, the
zero-shot baseline, per-query records, eval gates, refusals, export to sentence-transformers,
and index + search with the adapted encoder."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import headstart as hs
from headstart.errors import BadInput
from headstart.recipe import Recipe
from headstart.tasks import get_task

FAST = ["--set", "epochs=4", "--set", "batch_size=10", "--set", "lr=1e-2"]


def _beir(folder, rows):
    """A BEIR folder from (query, document) rows: one judgement per row."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = list(dict.fromkeys(d for _, d in rows))
    queries = list(dict.fromkeys(q for q, _ in rows))
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(queries)))
    (folder / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{queries.index(q)}\td{docs.index(d)}\t1" for q, d in rows]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_adapt_prints_ranking_metrics_and_writes_one_row_per_test_query(cli, pairs_csv, tiny_bert):
    r = cli("adapt", pairs_csv, "--task", "retrieval", "--backbone", tiny_bert, "--method", "lora", "--out", "runs", *FAST)
    assert r.rc == 0, r
    assert "training pairs" in r.out and "test queries over 10 documents" in r.out
    assert any(line.strip().startswith("test nDCG@10 ") and "MRR@10" in line for line in r.out.splitlines()), r.out
    assert "best validation ndcg@10" in r.out
    run = hs.load(r.out.splitlines()[0].split()[1])
    summary = run.metrics["test"]["summary"]
    lo, hi = summary["ndcg@10_ci"]
    assert 0 <= lo <= summary["ndcg@10"] <= hi <= 1 and summary["queries"] == run.manifest["data"]["split"]["test"]
    with open(run.path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["queries"]
    assert {"query_id", "input", "ndcg@10", "mrr@10", "recall@10", "relevant", "top10"} <= set(rows[0])
    assert np.mean([float(r["ndcg@10"]) for r in rows]) == pytest.approx(summary["ndcg@10"], abs=1e-5)
    assert run.manifest["task"] == "retrieval" and "classes" not in run.manifest
    listed = cli("runs")
    assert listed.rc == 0 and f"nDCG@10 {summary['ndcg@10']:.4f}" in listed.out, listed.out
    shown = cli("runs", run.id)
    assert shown.rc == 0 and "test nDCG@10" in shown.out, shown.out


def test_the_split_is_query_disjoint_and_val_test_search_the_whole_corpus(pairs_csv):
    td = get_task("retrieval").read(Recipe(data=str(pairs_csv), task="retrieval", seed=3))
    train = {q.casefold() for q in td.train.queries}
    assert not train & {q.casefold() for q in td.val.queries.values()}
    assert not train & {q.casefold() for q in td.test.queries.values()}
    assert len(td.test.corpus) == len(td.val.corpus) == 10  # every document, not only the split's own positives
    assert td.split_record["by"] == "query" and td.split_record["train"] == len(td.train)


def test_squad_groups_split_by_article(tmp_path):
    articles = [{"title": f"art{a}", "paragraphs": [{"context": f"context {a} {p}", "qas": [
        {"id": f"{a}-{p}-{k}", "question": f"question {a} {p} {k}"} for k in range(3)]} for p in range(2)]} for a in range(10)]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": articles}))
    td = get_task("retrieval").read(Recipe(data=str(path), task="retrieval"))
    train_articles = {q.split()[1] for q in td.train.queries}
    test_articles = {q.split()[1] for q in td.test.queries.values()}
    assert td.split_record["by"] == "group" and not train_articles & test_articles


def test_triplets_train_with_hard_negatives(tmp_path, tiny_bert, retrieval_helpers, data_helpers):
    _, write_table = data_helpers
    data = write_table(tmp_path / "triplets.jsonl", retrieval_helpers(negatives=True), ("query", "positive", "negative"))
    run = hs.adapt(data, task="retrieval", backbone=str(tiny_bert), method="lora", out=tmp_path / "runs",
                   method_options={"epochs": 2, "batch_size": 10, "lr": 1e-2})
    assert run.manifest["data"]["train"]["kind"] == "triplets"
    fit = run.manifest["method"]["fit"]
    assert fit["steps"] > 0
    assert fit["tokens_seen"] > 0 and 1.0 <= fit["padded_token_ratio"] < 3.0  # every role's tokens are counted


def test_a_beir_folder_is_data_and_a_separate_test_must_ask_unseen_queries(cli, tmp_path, tiny_bert, retrieval_helpers,
                                                                           assert_bad_input):
    rows = retrieval_helpers()
    data = _beir(tmp_path / "train", rows[:100])
    r = cli("adapt", data, "--task", "retrieval", "--backbone", tiny_bert, "--method", "frozen", "--out", "runs", "--json")
    assert r.rc == 0, r
    assert r.json()["manifest"]["data"]["split"]["corpus"] == 9  # the first 100 rows cover 9 topic documents
    held = _beir(tmp_path / "held", rows[100:])
    r = cli("adapt", data, "--test", held, "--task", "retrieval", "--backbone", tiny_bert, "--method", "frozen",
            "--out", "runs", "--json")
    assert r.rc == 0 and r.json()["manifest"]["data"]["test"]["examples"] == 20
    leaky = _beir(tmp_path / "leaky", rows[90:110])
    assert_bad_input(cli("adapt", data, "--test", leaky, "--task", "retrieval", "--backbone", tiny_bert, "--method", "frozen",
                         "--out", "runs"), "test queries are also training queries")


@pytest.mark.parametrize("argv, needles", [
    (["--method", "linear-probe"], ["does not adapt for the task 'retrieval'", "frozen"]),
    (["--method", "lora", "--set", "head_lr=1e-3"], ["head_lr", "adds no head"]),
])
def test_options_that_do_not_fit_the_task_are_refused_before_any_work(cli, pairs_csv, tiny_bert, argv, needles,
                                                                      assert_bad_input):
    assert_bad_input(cli("adapt", pairs_csv, "--task", "retrieval", "--backbone", tiny_bert, "--out", "runs", *argv),
                     *needles)


def test_frozen_is_not_a_classification_method(cli, train_csv, tiny_bert, assert_bad_input):
    assert_bad_input(cli("adapt", train_csv, "--backbone", tiny_bert, "--method", "frozen", "--out", "runs"),
                     "does not adapt for the task 'classification'", "linear-probe")


@pytest.fixture
def zero_shot(cli, pairs_csv, tiny_bert, tmp_path):
    r = cli("adapt", pairs_csv, "--task", "retrieval", "--backbone", tiny_bert, "--method", "frozen", "--out", tmp_path / "runs",
            "--json")
    assert r.rc == 0, r
    return hs.load(r.json()["path"])


def test_eval_gates_on_ranking_metrics(cli, zero_shot, pairs_csv, assert_bad_input):
    ok = cli("eval", zero_shot.path, pairs_csv, "--min", "ndcg@10=0.01")
    assert ok.rc == 0 and "nDCG@10" in ok.out and "check ndcg@10 >= 0.01: passed" in ok.out, ok
    failed = cli("eval", zero_shot.path, pairs_csv, "--min", "ndcg@10=0.99")
    assert failed.rc == 1 and "FAILED" in failed.out and "--min ndcg@10=0.99" in failed.err
    assert_bad_input(cli("eval", zero_shot.path, pairs_csv, "--min-accuracy", "0.5"), "--min-accuracy", "--min ndcg@10")
    assert_bad_input(cli("eval", zero_shot.path, pairs_csv, "--min", "ndgc@10=0.5"), "no metric 'ndgc@10'", "ndcg@10")


def test_predict_on_a_retrieval_run_says_to_embed_or_search(cli, zero_shot, assert_bad_input):
    assert_bad_input(cli("predict", zero_shot.path, "cat the a"), "retrieval run", "headstart search")
    with pytest.raises(BadInput, match="embed"):
        zero_shot.predict(["cat"])


def test_export_loads_in_sentence_transformers_with_the_runs_embeddings(cli, pairs_csv, tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer

    r = cli("adapt", pairs_csv, "--task", "retrieval", "--backbone", tiny_bert, "--method", "lora", "--out", tmp_path / "runs",
            "--json", *FAST)
    run = hs.load(r.json()["path"])
    assert cli("export", run.path, "--out", tmp_path / "enc").rc == 2  # LoRA needs --merge
    r = cli("export", run.path, "--out", tmp_path / "enc", "--merge")
    assert r.rc == 0 and "SentenceTransformer" in r.out and "checked" in r.out, r
    texts = ["cat where is it", "red red food price", "my refund please"]
    model = SentenceTransformer(str(tmp_path / "enc"), device="cpu")
    np.testing.assert_allclose(model.encode(texts, prompt_name="query"), run.embed(texts), atol=1e-4)
    record = json.loads((tmp_path / "enc" / "headstart.json").read_text())
    assert record["task"] == "retrieval" and record["check"]["max_abs_diff"] <= 1e-4


def test_index_and_search_with_the_adapted_encoder(cli, pairs_csv, tiny_bert, tmp_path, retrieval_helpers):
    r = cli("adapt", pairs_csv, "--task", "retrieval", "--backbone", tiny_bert, "--method", "finetune", "--out",
            tmp_path / "runs", "--json", "--set", "epochs=8", "--set", "batch_size=10", "--set", "lr=1e-3")
    run = hs.load(r.json()["path"])
    docs = sorted({d for _, d in retrieval_helpers()})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    assert cli("index", run.path, corpus, "--out", tmp_path / "idx").rc == 0
    hits = cli("search", tmp_path / "idx", "cat where is my", "-k", "1", "--run", run.path, "--json").json()["hits"]
    assert hits[0]["text"] == "red red food price"  # the topic's document, learnt (no word in common)


def test_non_english_pairs_default_to_the_multilingual_encoder(tmp_path, data_helpers):
    _, write_table = data_helpers
    korean = [("배송은 언제 오나요", "배송 안내 문서"), ("환불하고 싶어요", "환불 정책 문서")] * 5
    data = write_table(tmp_path / "ko.csv", korean, ("query", "positive"))
    task = get_task("retrieval")
    assert task.default_backbone(data) == "use-multilingual"
    assert task.default_method("use-multilingual") == "frozen" and task.default_method("minilm-l6") == "finetune"
    english = write_table(tmp_path / "en.csv", [("where is my parcel", "delivery times")] * 4, ("query", "positive"))
    assert task.default_backbone(english) == "minilm-l6"


def test_compare_tabulates_ranking_metrics_with_query_intervals(cli, pairs_csv, tiny_bert, tmp_path, assert_bad_input):
    r = cli("compare", pairs_csv, "--task", "retrieval", "--methods", "frozen,lora", "--backbones", tiny_bert,
            "--set", "lora.lr=1e-2", "--set", "lora.epochs=4", "--set", "lora.batch_size=10", "--out", tmp_path / "cmp",
            "--runs-out", tmp_path / "runs")
    assert r.rc == 0, r
    assert "test nDCG@10 [95%]" in r.out and "MRR@10 [95%]" in r.out and "test queries" in r.out, r.out
    saved = json.loads(next((tmp_path / "cmp").glob("*/comparison.json")).read_text())
    assert saved["data"]["task"] == "retrieval" and [m[0] for m in saved["data"]["metrics"]] == ["ndcg@10", "mrr@10"]
    frozen, lora = saved["rows"]
    assert frozen["trainable_params"] == 0 and lora["trainable_params"] > 0
    assert frozen["ndcg@10_low"] <= frozen["ndcg@10"] <= frozen["ndcg@10_high"]
    assert lora["ndcg@10"] > frozen["ndcg@10"]  # the adapted encoder beats its zero-shot baseline on the same queries
    assert (next((tmp_path / "cmp").glob("*")) / "frontier.png").stat().st_size > 0
    assert_bad_input(cli("compare", pairs_csv, "--task", "retrieval", "--methods", "linear-probe", "--backbones", tiny_bert),
                     "'linear-probe' does not adapt for the task 'retrieval'")


def test_drift_to_a_broken_base_is_a_regression_over_the_same_queries(cli, pairs_csv, tiny_bert, tmp_path,
                                                                      assert_bad_input, retrieval_helpers):
    import shutil

    from headstart.backbones.testing import break_token_embeddings

    r = cli("adapt", pairs_csv, "--task", "retrieval", "--backbone", tiny_bert, "--method", "lora", "--out",
            tmp_path / "runs", "--json", *FAST)
    run_id = r.json()["run"]
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert, broken)
    break_token_embeddings(broken)  # every word the same vector: nothing left to rank by
    wrong = tmp_path / "c.yaml"
    wrong.write_text(f"name: c\ndatasets:\n  - {{name: t, path: {pairs_csv}}}\n")
    assert_bad_input(cli("drift", run_id, "--base", broken, "--suite", wrong), "the suite checks classification runs")
    # With a suite: each run searches the suite's collection itself, compared query by query.
    held = _beir(tmp_path / "held", retrieval_helpers(seed=9)[::3])
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\ntask: retrieval\ndatasets:\n  - {{name: held, path: {held}}}\nmetrics: [ndcg@10]\n")
    s = cli("drift", run_id, "--base", broken, "--suite", suite, "--out", tmp_path / "runs", "--json")
    assert s.rc == 1, s
    checks = s.json()["checks"]
    assert [(c["dataset"], c["metric"]) for c in checks] == [("held", "ndcg@10")] and checks[0]["delta"] < 0
    d = cli("drift", run_id, "--base", broken, "--out", tmp_path / "runs", "--report", tmp_path / "report", "--json")
    assert d.rc == 1, d  # exit 1: a regression
    result = d.json()
    assert result["verdict"] == "regression" and result["task"] == "retrieval"
    checks = {c["metric"]: c for c in result["checks"]}
    assert set(checks) == {"ndcg@10", "mrr@10"} and checks["ndcg@10"]["test"] == "paired bootstrap over queries"
    assert checks["ndcg@10"]["delta"] < 0 and checks["ndcg@10"]["p"] < 0.01
    assert checks["ndcg@10"]["n"] == hs.load(run_id).metrics["test"]["summary"]["queries"]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Worse queries" in html and "ndcg@10" in html


def test_plan_ranks_encoders_by_zero_shot_ndcg_and_chooses_the_method(pairs_csv, tiny_bert, tmp_path, data_helpers,
                                                                      retrieval_helpers, cli):
    from headstart.plan.retrieval import MIN_PAIRS_TO_TRAIN, plan_retrieval

    p = plan_retrieval(pairs_csv, backbones=[str(tiny_bert)], budget="30m")
    assert {c.method for c in p.candidates} == {"frozen", "finetune", "lora"}
    zero = next(c for c in p.candidates if c.method == "frozen")
    assert 0 < zero.zero_shot_ndcg < 1 and zero.ci[0] <= zero.zero_shot_ndcg <= zero.ci[1]
    assert p.recommended.method == "finetune" and "justify training" in p.why  # 84 training pairs, within 30 minutes
    assert all(c.predicted_s is not None and c.predicted_s > 0 for c in p.candidates if c.method != "frozen")
    _, write_table = data_helpers
    few = write_table(tmp_path / "few.csv", retrieval_helpers(per_topic=4), ("query", "positive"))
    small = plan_retrieval(few, backbones=[str(tiny_bert)])
    assert small.sample["training_pairs"] < MIN_PAIRS_TO_TRAIN
    assert small.recommended.method == "frozen" and "training pairs" in small.why
    r = cli("plan", pairs_csv, "--task", "retrieval", "--backbones", tiny_bert)
    assert r.rc == 0 and "zero-shot nDCG@10" in r.out and "recommended: --backbone" in r.out, r
    run = hs.adapt(few, task="retrieval", backbone=str(tiny_bert), method="auto", out=tmp_path / "runs")
    assert run.manifest["method"]["name"] == "frozen" and run.manifest["plan"]["chosen"]["method"] == "frozen"


def test_a_retrieval_suite_gates_on_ndcg_against_a_baseline(cli, pairs_csv, tiny_bert, tmp_path, retrieval_helpers):
    r = cli("adapt", pairs_csv, "--task", "retrieval", "--backbone", tiny_bert, "--method", "lora", "--out",
            tmp_path / "runs", "--json", *FAST)
    tuned = r.json()["run"]
    zero = cli("adapt", pairs_csv, "--task", "retrieval", "--backbone", tiny_bert, "--method", "frozen", "--out",
               tmp_path / "runs", "--json").json()["run"]
    held = _beir(tmp_path / "held", retrieval_helpers(seed=9)[::3])
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: search-regression\ntask: retrieval\ndatasets:\n  - {{name: held, path: {held}}}\n"
                     "metrics: [ndcg@10, recall@1]\ngates:\n  - ndcg@10 >= 0.5\n  - ndcg@10 drop <= 1 pt\n")
    ok = cli("eval", tuned, "--suite", suite, "--baseline", zero, "--json")
    assert ok.rc == 0, ok
    cells = ok.json()["datasets"]["held"]["slices"]["all"]
    assert set(cells) == {"ndcg@10", "recall@1"} and cells["ndcg@10"]["ci"][0] <= cells["ndcg@10"]["value"]
    worse = cli("eval", zero, "--suite", suite, "--baseline", tuned)  # the zero-shot encoder drops far more than 1 pt
    assert worse.rc == 1 and "FAILED" in worse.out, worse
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: x\ntask: retrieval\ndatasets:\n  - {{name: held, path: {held}}}\nmetrics: [accuracy]\n"
                   "slices: [label]\n")
    r = cli("eval", tuned, "--suite", bad)
    assert r.rc == 2 and "unknown metric 'accuracy'" in r.err and "no slices" in r.err, r
    classification_suite = tmp_path / "c.yaml"
    classification_suite.write_text(f"name: c\ndatasets:\n  - {{name: t, path: {pairs_csv}}}\n")
    r = cli("eval", tuned, "--suite", classification_suite)
    assert r.rc == 2 and "task: retrieval" in r.err, r
