"""The similarity task (scored pairs, CoSENT, Spearman) on a tiny random encoder: reading and the
split, the per-pair records, eval/compare/drift over the same pairs, and the sentence-transformers
export."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

import headstart as hs
from headstart.recipe import Recipe
from headstart.tasks import get_task

TRAIN = ["--set", "lr=1e-3", "--set", "epochs=12", "--set", "batch_size=16", "--set", "patience=100"]


def test_adapt_reports_spearman_with_an_interval_and_writes_every_test_pair(cli, sts_csv, tiny_bert, tmp_path):
    r = cli("adapt", sts_csv, "--task", "similarity", "--backbone", tiny_bert, "--method", "finetune", "--out",
            tmp_path / "runs", *TRAIN)
    assert r.rc == 0, r
    assert "scored pairs (scores 0..5)" in r.out and any(line.strip().startswith("test Spearman ") for line in r.out.splitlines())
    run = hs.load(r.out.splitlines()[0].split()[1])
    summary = run.metrics["test"]["summary"]
    assert summary["spearman_ci"][0] <= summary["spearman"] <= summary["spearman_ci"][1] and summary["n"] == 40
    with open(run.path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and set(rows[0]) == {"sentence1", "sentence2", "score", "cosine"}
    zero = cli("adapt", sts_csv, "--task", "similarity", "--backbone", tiny_bert, "--method", "frozen", "--out",
               tmp_path / "runs", "--json").json()["manifest"]["metrics"]["test"]["summary"]["spearman"]
    assert summary["spearman"] > zero + 0.3  # CoSENT taught the relation the random body did not know


def test_headerless_three_columns_read_as_sentence_pairs(tmp_path, sts_csv):
    lines = sts_csv.read_text().splitlines()[1:]
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(lines) + "\n")
    td = get_task("similarity").read(Recipe(data=str(bare), task="similarity", header=False))
    assert td.split_record["train"] + td.split_record["val"] + td.split_record["test"] == 200
    assert td.train_record["score_range"] == [0.0, 5.0]


def test_eval_compare_drift_and_export_on_similarity_runs(cli, sts_csv, tiny_bert, tmp_path, assert_bad_input):
    from sentence_transformers import SentenceTransformer

    from headstart.backbones.testing import break_token_embeddings

    run_id = cli("adapt", sts_csv, "--task", "similarity", "--backbone", tiny_bert, "--method", "finetune", "--out",
                 tmp_path / "runs", "--json", *TRAIN).json()["run"]
    ok = cli("eval", run_id, sts_csv, "--min", "spearman=0.3")
    assert ok.rc == 0 and "Spearman" in ok.out, ok
    assert_bad_input(cli("eval", run_id, sts_csv, "--min", "ndcg@10=0.3"), "no metric 'ndcg@10'", "spearman")
    r = cli("export", run_id, "--out", tmp_path / "enc")
    assert r.rc == 0, r
    run = hs.load(run_id)
    texts = ["cat the a", "red red food"]
    np.testing.assert_allclose(SentenceTransformer(str(tmp_path / "enc"), device="cpu").encode(texts, prompt_name="query"),
                               run.embed(texts), atol=1e-4)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert, broken)
    break_token_embeddings(broken)
    d = cli("drift", run_id, "--base", broken, "--out", tmp_path / "runs", "--report", tmp_path / "report", "--json")
    result = d.json()
    checks = {c["metric"]: c for c in result["checks"]}
    assert set(checks) == {"spearman", "pearson"} and checks["spearman"]["test"] == "paired bootstrap over pairs"
    assert checks["spearman"]["delta"] < 0 and result["verdict"] == "regression" and d.rc == 1, result
    c = cli("compare", sts_csv, "--task", "similarity", "--methods", "frozen,finetune", "--backbones", tiny_bert,
            "--set", "finetune.lr=1e-3", "--set", "finetune.epochs=6", "--out", tmp_path / "cmp", "--runs-out", tmp_path / "runs")
    assert c.rc == 0 and "test Spearman [95%]" in c.out, c
    rows = json.loads(next((tmp_path / "cmp").glob("*/comparison.json")).read_text())["rows"]
    assert all(r["spearman_low"] <= r["spearman"] <= r["spearman_high"] for r in rows)
