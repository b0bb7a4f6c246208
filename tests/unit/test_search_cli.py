"""`headstart index` / `headstart search` and Run.embed / Run.search on tiny random encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest

import headstart as hs

DOCS = [("d1", "good movie great film"), ("d2", "bad food awful price"), ("d3", "my card delivery"), ("d4", "love the film")]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in DOCS))
    return path


def test_index_then_search_finds_the_document_itself(cli, trained_run, corpus, tmp_path):
    r = cli("index", trained_run.path, corpus, "--out", tmp_path / "idx", "--json")
    assert r.rc == 0, r
    assert r.json()["documents"] == 4 and r.json()["kind"] == "exact"
    for doc_id, text in DOCS:
        hits = cli("search", tmp_path / "idx", text, "-k", "2", "--run", trained_run.path, "--json").json()["hits"]
        assert hits[0]["id"] == doc_id and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    text = cli("search", tmp_path / "idx", "good movie great film", "-k", "1", "--run", trained_run.path)
    assert text.rc == 0 and text.out.startswith("  1. 1.0000  [d1] good movie great film")


def test_search_finds_the_run_by_the_id_the_index_records(cli, trained_run, corpus, tmp_path):
    assert cli("index", trained_run.path, corpus, "--out", tmp_path / "idx", "--store", trained_run.store).rc == 0
    r = cli("search", tmp_path / "idx", "love the film", "--store", trained_run.store, "--json")
    assert r.rc == 0, r
    assert r.json()["run"] == trained_run.id and r.json()["hits"][0]["id"] == "d4"


def test_an_index_grows_with_new_ids_and_refuses_repeated_ones(cli, trained_run, corpus, tmp_path, assert_bad_input):
    idx = tmp_path / "idx"
    assert cli("index", trained_run.path, corpus, "--out", idx).rc == 0
    more = tmp_path / "more.csv"
    more.write_text("id,text\nd5,great great film\n")
    r = cli("index", trained_run.path, more, "--out", idx, "--json")
    assert r.rc == 0 and r.json()["documents"] == 5
    assert_bad_input(cli("index", trained_run.path, corpus, "--out", idx), "'d1'", "already in the index")


def test_queries_from_another_run_are_refused(cli, trained_run, corpus, tmp_path, train_csv, tiny_bert, assert_bad_input):
    other = hs.adapt(train_csv, backbone=str(tiny_bert), seed=1, out=tmp_path / "runs")
    assert cli("index", trained_run.path, corpus, "--out", tmp_path / "idx").rc == 0
    assert_bad_input(cli("search", tmp_path / "idx", "good", "--run", other.path), "index")
    assert_bad_input(cli("index", other.path, corpus, "--out", tmp_path / "idx"), "index")


@pytest.mark.parametrize("content, needles", [
    ("id,body2\nd1,x\n", ["no text column", "--text-col"]),
    ("id,text\nd1,good\nd1,bad\n", ["'d1' appears twice"]),
    ("id,text\nd1,\n", ["empty document text"]),
])
def test_bad_corpora_are_one_line(cli, trained_run, tmp_path, assert_bad_input, content, needles):
    path = tmp_path / "c.csv"
    path.write_text(content)
    assert_bad_input(cli("index", trained_run.path, path, "--out", tmp_path / "idx"), *needles)
    assert not (tmp_path / "idx").exists()


def test_empty_query_and_bad_k(cli, trained_run, corpus, tmp_path, assert_bad_input):
    assert cli("index", trained_run.path, corpus, "--out", tmp_path / "idx").rc == 0
    assert_bad_input(cli("search", tmp_path / "idx", "  ", "--run", trained_run.path), "QUERY is empty")
    assert_bad_input(cli("search", tmp_path / "idx", "good", "-k", "0", "--run", trained_run.path), "-k")


def test_a_lora_run_embeds_with_its_adapted_body(train_csv, tiny_bert, tmp_path):
    texts = [t for _, t in DOCS]
    probe = hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "runs")
    lora = hs.adapt(train_csv, backbone=str(tiny_bert), method="lora", out=tmp_path / "runs",
                    method_options={"epochs": 3, "batch_size": 8, "lr": 0.05, "head_init": "zero"})
    frozen, adapted = probe.embed(texts), lora.embed(texts)
    assert frozen.shape == adapted.shape == (4, frozen.shape[1])
    assert not np.allclose(frozen, adapted, atol=1e-4)  # the LoRA pairs change the body's features
    np.testing.assert_allclose(hs.load(lora.path).embed(texts), adapted, atol=1e-5)  # and reload the same
    result = lora.search(_index(lora, tmp_path / "idx", texts), "good movie great film", k=1)
    assert result.ids == ["d1"]


def _index(run, folder, texts):
    from headstart.index import VectorIndex

    index = VectorIndex.create(folder, run.embed(texts[:1]).shape[1], run.producer, kind="exact")
    index.add([d for d, _ in DOCS], texts, run.embed(texts), producer=run.producer)
    return index


def test_a_corpus_that_is_a_folder_or_missing_is_one_line(cli, trained_run, tmp_path, assert_bad_input):
    assert_bad_input(cli("index", trained_run.path, tmp_path, "--out", tmp_path / "idx"), "a folder", "corpus.jsonl")
    assert_bad_input(cli("index", trained_run.path, tmp_path / "none.csv", "--out", tmp_path / "idx"), "no such file")
    assert not (tmp_path / "idx").exists()
