"""The Python API: adapt -> Run -> predict / evaluate / load, the run manifest, caching and base identity."""

from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import headstart as hs
from headstart.backbones.testing import tiny_text_model
from headstart.backbones import open_backbone
from headstart.catalog import identity
from headstart.data import Dataset, load_dataset
from headstart.errors import BadInput, RunIntegrityError
from headstart.runs import Store

TEXTS = ["the movie was good", "the food was awful", "i love this film", "i hate my card"]


@pytest.fixture
def run(tmp_path, tiny_bert, train_csv):
    return hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "out")


def test_adapt_returns_a_run_that_predicts(run, tmp_path):
    assert isinstance(run, hs.Run)
    assert run.path.parent == tmp_path / "out"
    assert run.path.name == run.id
    assert run.classes == ["neg", "pos"]
    assert run.id in repr(run) and "linear-probe" in repr(run)
    preds = run.predict(TEXTS)
    assert len(preds.labels) == len(TEXTS)
    assert set(preds.labels) <= {"neg", "pos"}
    assert preds.probabilities.shape == (len(TEXTS), 2)
    np.testing.assert_allclose(preds.probabilities.sum(1), 1.0, atol=1e-6)


def test_adapt_learns_the_task(run, tmp_path, write_table, sentiment_rows):
    held_out = write_table(tmp_path / "held-out.csv", sentiment_rows(20, seed=10))
    metrics = run.evaluate(held_out, record=False)
    assert metrics["accuracy"] >= 0.7  # chance is 0.5; the tiny random BERT still separates the words


def test_run_folder_and_manifest_record_everything(trained_run, tiny_bert):
    path = trained_run.path
    assert {p.name for p in path.iterdir()} == {"manifest.json", "weights.safetensors", "metrics.json", "predictions.csv"}
    m = json.loads((path / "manifest.json").read_text())
    assert m["id"] == path.name == trained_run.id
    assert m["format"] == "headstart.run/1"
    assert m["task"] == "classification" and m["modality"] == "text"
    # backbone: name + sha256 + the spec (preprocessing travels with it)
    assert m["backbone"]["name"] == str(tiny_bert.resolve())
    assert re.fullmatch(r"[0-9a-f]{64}", m["backbone"]["sha256"])
    assert m["backbone"]["sha256"] == identity(tiny_bert)
    assert m["backbone"]["spec"]["preprocessing"]["max_length"] == 32
    # method + resolved config
    assert m["method"]["name"] == "linear-probe"
    config = m["method"]["config"]
    assert config["C"] in config["Cs"]
    assert m["method"]["fit"]["C"] == config["C"]
    assert m["method"]["fit"]["trainable_params"] == 2 * (32 + 1)
    # data fingerprint, split, seed
    assert m["data"]["train"]["fingerprint"] == load_dataset(trained_run.data).fingerprint
    assert m["data"]["train"]["examples"] == 40
    assert m["data"]["train"]["columns"] == {"text": "text", "label": "label"}
    split = m["data"]["split"]
    assert split["train"] + split["val"] + split["test"] == 40
    assert m["data"]["test"]["examples"] == split["test"]
    assert m["seed"] == 0
    assert m["classes"] == ["neg", "pos"]
    assert m["precision"] == {"requested": "auto", "used": "fp32"}
    # versions, metrics, timings
    assert m["versions"]["headstart"] == hs.__version__
    assert {"python", "torch", "numpy", "transformers"} <= set(m["versions"])
    summary = m["metrics"]["test"]["summary"]
    assert set(summary) == {"accuracy", "macro_f1", "n"} and summary["n"] == split["test"]
    assert {"read_s", "fit_s", "eval_s", "total_s"} <= set(m["timings"])
    assert set(m["files"]) == {"weights.safetensors", "metrics.json", "predictions.csv"}
    # the other files agree with the manifest
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == summary["accuracy"]
    assert set(metrics["test"]["per_class"]) == {"neg", "pos"}
    rows = list(csv.DictReader((path / "predictions.csv").open()))
    assert len(rows) == split["test"]
    assert list(rows[0]) == ["input", "label", "predicted", "p[neg]", "p[pos]"]
    accuracy = np.mean([r["label"] == r["predicted"] for r in rows])
    assert accuracy == pytest.approx(summary["accuracy"])
    tensors = load_file(str(path / "weights.safetensors"))
    assert tensors["head.weight"].shape == (2, 32) and tensors["head.bias"].shape == (2,)


def test_store_has_the_run(trained_run, tiny_bert):
    rows = Store(trained_run.store).runs()
    assert [r["id"] for r in rows] == [trained_run.id]
    row = rows[0]
    manifest = json.loads((trained_run.path / "manifest.json").read_text())
    assert row["path"] == str(trained_run.path.resolve())
    assert row["backbone_sha256"] == manifest["backbone"]["sha256"]
    assert row["data_fingerprint"] == manifest["data"]["train"]["fingerprint"]
    assert row["method"] == "linear-probe" and row["seed"] == 0 and row["modality"] == "text"
    assert row["metrics"] == manifest["metrics"]["test"]["summary"]
    assert row["manifest_sha256"] == manifest["checksum"]


def test_default_run_folder_and_store_live_in_headstart_home(tmp_path, tiny_bert, train_csv):
    run = hs.adapt(train_csv, backbone=str(tiny_bert))
    home = tmp_path / "home"
    assert run.path.parent == home / "runs"
    assert [r["id"] for r in Store(home / "store.sqlite3").runs()] == [run.id]


def test_store_from_environment(tmp_path, tiny_bert, train_csv, monkeypatch):
    monkeypatch.setenv("HEADSTART_STORE", str(tmp_path / "env-store.sqlite3"))
    run = hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "out")
    assert [r["id"] for r in Store(tmp_path / "env-store.sqlite3").runs()] == [run.id]
    assert hs.load(run.id).id == run.id


def test_save_then_load_gives_identical_predictions(run):
    expected = run.predict(TEXTS).probabilities
    by_path = hs.load(run.path).predict(TEXTS).probabilities
    by_id = hs.load(run.id).predict(TEXTS).probabilities
    by_prefix = hs.load(run.id[:20]).predict(TEXTS).probabilities
    np.testing.assert_array_equal(by_path, expected)
    np.testing.assert_array_equal(by_id, expected)
    np.testing.assert_array_equal(by_prefix, expected)
    assert hs.load(run.path).manifest == run.manifest


def test_second_adapt_encodes_nothing_and_gives_identical_weights(tmp_path, tiny_bert, train_csv):
    first = hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "out")
    second = hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "out")
    assert first.id != second.id
    fit1, fit2 = first.manifest["method"]["fit"], second.manifest["method"]["fit"]
    n = first.manifest["data"]["split"]["train"] + first.manifest["data"]["split"]["val"]
    assert fit1["examples_encoded"] == n and fit1["examples_from_cache"] == 0
    assert fit2["examples_encoded"] == 0 and fit2["examples_from_cache"] == n
    assert fit1["C"] == fit2["C"]
    w1, w2 = load_file(str(first.path / "weights.safetensors")), load_file(str(second.path / "weights.safetensors"))
    assert set(w1) == set(w2)
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    assert (first.path / "predictions.csv").read_bytes() == (second.path / "predictions.csv").read_bytes()
    assert first.manifest["metrics"] == second.manifest["metrics"]


def test_seed_changes_the_split(tmp_path, tiny_bert, train_csv):
    a = hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "out", seed=0)
    b = hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "out", seed=1)
    assert b.manifest["seed"] == 1
    inputs_a = [r["input"] for r in csv.DictReader((a.path / "predictions.csv").open())]
    inputs_b = [r["input"] for r in csv.DictReader((b.path / "predictions.csv").open())]
    assert sorted(inputs_a) != sorted(inputs_b)


def test_load_after_the_base_changed_is_refused(tmp_path, train_csv, cli):
    folder = tiny_text_model(tmp_path / "my-bert", seed=0)
    run = hs.adapt(train_csv, backbone=str(folder), out=tmp_path / "out")
    before = hs.load(run.path).predict(TEXTS).probabilities
    old_hash = run.manifest["backbone"]["sha256"]

    tiny_text_model(folder, seed=1)  # a new release of the base, in the same place
    assert identity(folder) != old_hash

    with pytest.raises(RunIntegrityError, match="base changed") as err:
        hs.load(run.path).predict(TEXTS)
    assert "allow_base_change" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RunIntegrityError, match="base changed"):
        hs.load(run.id).evaluate(train_csv)

    result = cli("predict", run.path, "-", stdin="good movie\n")
    assert result.rc == 2 and len(result.err_lines) == 1
    assert result.err_lines[0].startswith("error: ") and "base changed" in result.err

    ok = cli("predict", run.path, "-", "--allow-base-change", stdin="good movie\n")
    assert ok.rc == 0, ok

    # Allowed, the old head runs on the *new* base's features (not on features cached for the old base).
    after = hs.load(run.path, allow_base_change=True).predict(TEXTS).probabilities
    new_base, _ = open_backbone(str(folder))
    head = load_file(str(run.path / "weights.safetensors"))
    logits = torch.from_numpy(new_base.embed(TEXTS)) @ head["head.weight"].T + head["head.bias"]
    np.testing.assert_allclose(after, torch.softmax(logits, 1).numpy(), atol=1e-5)
    assert not np.allclose(after, before)


def test_rewriting_identical_weights_is_not_a_base_change(tmp_path, train_csv):
    folder = tiny_text_model(tmp_path / "my-bert", seed=0)
    run = hs.adapt(train_csv, backbone=str(folder), out=tmp_path / "out")
    expected = run.predict(TEXTS).probabilities
    weights = folder / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    np.testing.assert_array_equal(hs.load(run.path).predict(TEXTS).probabilities, expected)


def test_evaluate_records_in_store(run, train_csv):
    metrics = run.evaluate(train_csv)
    assert metrics["n"] == 40
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_class"]) == {"neg", "pos"}
    evals = run.store.evals(run.id)
    assert len(evals) == 1 and evals[0]["metrics"]["accuracy"] == metrics["accuracy"]
    run.evaluate(train_csv, record=False)
    assert len(run.store.evals(run.id)) == 1


def test_evaluate_refuses_unseen_labels(run, tmp_path, write_table):
    data = write_table(tmp_path / "eval.csv", [("good movie", "pos"), ("bad movie", "neutral")])
    with pytest.raises(BadInput, match="'neutral'.*never seen|never seen.*'neutral'"):
        run.evaluate(data)


def test_predict_accepts_a_file_and_a_dataset(run, tmp_path, write_table):
    data = write_table(tmp_path / "new.csv", [(t,) for t in TEXTS], ("text",))
    from_file = run.predict(data).probabilities
    from_dataset = run.predict(Dataset(inputs=TEXTS, labels=None, modality="text", source="x")).probabilities
    np.testing.assert_array_equal(from_file, run.predict(TEXTS).probabilities)
    np.testing.assert_array_equal(from_dataset, from_file)


@pytest.mark.parametrize("inputs", [[], ["good movie", ""], ["good movie", "   "], [1, 2]])
def test_predict_rejects_empty_or_non_text_inputs(run, inputs):
    with pytest.raises(BadInput):
        run.predict(inputs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "lora-probe"}, "unknown method"),
        ({"backbone": "minilm-l7"}, "minilm-l6"),
        ({"backbone": ""}, "--backbone"),
        ({"precision": "fp16"}, "--precision"),
        ({"seed": -3}, "--seed"),
        ({"method_options": {"C": 1, "tol": 1e-3}}, "'tol'"),
    ],
)
def test_adapt_rejects_bad_options(tmp_path, tiny_bert, train_csv, kwargs, match):
    kwargs = {"backbone": str(tiny_bert), **kwargs}
    with pytest.raises(BadInput, match=match):
        hs.adapt(train_csv, out=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_data_is_rejected_before_any_model_is_loaded(tmp_path, tiny_bert, write_table, sentiment_rows, monkeypatch):
    """adapt validates everything cheap (data, labels, split) before it opens the backbone."""
    import headstart.api

    def no_loading(*args, **kwargs):
        raise AssertionError("the backbone was opened before the data was validated")

    monkeypatch.setattr(headstart.api, "open_backbone", no_loading)
    one_class = write_table(tmp_path / "one.csv", [(t, "pos") for t, _ in sentiment_rows(20)])
    tiny_class = write_table(tmp_path / "tiny.csv", sentiment_rows(20) + [("my card", "meh")])
    train = write_table(tmp_path / "train.csv", sentiment_rows(20))
    unseen = write_table(tmp_path / "test.csv", [("good", "pos"), ("bad", "neg"), ("so so", "meh")])
    for data, test, match in [
        (one_class, None, "only one class"),
        (tiny_class, None, "fewer than 2"),
        (train, unseen, "never seen"),
        (tmp_path / "missing.csv", None, "no such file"),
    ]:
        with pytest.raises(BadInput, match=match):
            hs.adapt(data, test=test, backbone=str(tiny_bert), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_unknown_run(tmp_path):
    with pytest.raises(BadInput, match="no such folder and no such run id"):
        hs.load("20990101-000000-nothing")
