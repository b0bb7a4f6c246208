"""`headstart eval RUN --suite`: metrics with intervals per slice, gates, JUnit, store history;
and drift on a suite's data and slices."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

import headstart as hs
from headstart.errors import BadInput
from headstart.evaluate.drift import drift
from headstart.evaluate.harness import evaluate_suite
from headstart.runs import Store


@pytest.fixture
def run(tmp_path, tiny_bert, data_helpers):
    rows, write = data_helpers
    return hs.adapt(write(tmp_path / "train.csv", rows(120, seed=1)), backbone=str(tiny_bert), out=tmp_path / "runs")


@pytest.fixture
def suite(tmp_path, data_helpers):
    rows, write = data_helpers
    test = [(t, y, "en" if i % 3 else "de") for i, (t, y) in enumerate(rows(60, seed=9))]
    write(tmp_path / "suite" / "test.csv", test, columns=("text", "label", "language"))

    def make(gates: list[str], name: str = "s.yaml"):
        path = tmp_path / "suite" / name
        path.write_text("name: sentiment\ndatasets:\n  - name: held-out\n    path: test.csv\nslices:\n  - label\n"
                        "  - column: language\n" + ("gates:\n" + "".join(f"  - {g}\n" for g in gates) if gates else ""))
        return path

    return make


def test_suite_metrics_per_slice_with_intervals_and_history(run, suite):
    res = evaluate_suite(run, suite(["accuracy >= 0.5"]))
    slices = res["datasets"]["held-out"]["slices"]
    assert set(slices) == {"all", "label=neg", "label=pos", "language=de", "language=en"}
    acc = slices["all"]["accuracy"]
    assert acc["n"] == 60 and acc["ci"][0] <= acc["value"] <= acc["ci"][1]
    assert slices["language=de"]["accuracy"]["n"] == 20
    assert res["passed"] and res["gates"][0]["passed"]
    (e,) = Store().evals(run.id)
    assert e["suite"] == "sentiment" and e["suite_sha256"] == res["suite"]["sha256"] and e["passed"] == 1
    assert e["result"]["datasets"]["held-out"]["n"] == 60


def test_label_slices_report_recall_and_precision_and_gate_on_them(run, suite, cli):
    from headstart.evaluate.metrics import classification_metrics
    from headstart.evaluate.harness import class_indices, predict_indices, suite_sets
    from headstart.evaluate.suite import load_suite

    path = suite(["{gate: 'recall >= 0.0', slice: 'label=pos'}", "{gate: 'accuracy > 1.0', slice: 'label=neg'}",
                  "{gate: 'precision >= 0.0', slice: 'label=neg'}"])
    res = evaluate_suite(run, path, record=False)
    slices = res["datasets"]["held-out"]["slices"]
    (es,) = suite_sets(load_suite(path), run)
    y = class_indices(es.data.labels, run.classes, "test")
    truth = classification_metrics(y, predict_indices(run, es)[0], run.classes)["per_class"]
    for c in ("neg", "pos"):
        assert set(slices[f"label={c}"]) == {"recall", "precision"}
        assert slices[f"label={c}"]["recall"]["value"] == pytest.approx(truth[c]["recall"])
        assert slices[f"label={c}"]["precision"]["value"] == pytest.approx(truth[c]["precision"])
        assert slices[f"label={c}"]["recall"]["n"] == 30
    assert set(slices["language=de"]) == {"accuracy", "macro_f1"}  # column slices keep the suite's metrics
    recall_gate, accuracy_gate, precision_gate = res["gates"]
    assert recall_gate["passed"] and recall_gate["value"] == slices["label=pos"]["recall"]["value"]
    assert not accuracy_gate["passed"] and accuracy_gate["value"] == slices["label=neg"]["recall"]["value"]  # read as recall
    assert precision_gate["value"] == slices["label=neg"]["precision"]["value"]
    text = cli("eval", run.id, "--suite", path).out
    assert "label=pos" in text and "recall " in text and "precision " in text


def test_failed_gate_exits_1_and_writes_junit(run, suite, cli, tmp_path):
    path = suite(["accuracy >= 0.5", "accuracy < 0.5", "{gate: 'accuracy >= 0.0', slice: 'language=de'}"])
    r = cli("eval", run.id, "--suite", path, "--junit", tmp_path / "ci" / "junit.xml")
    assert r.rc == 1
    assert "gates failed" in r.err and "'accuracy < 0.5'" in r.err and "Traceback" not in r.err
    root = ET.parse(tmp_path / "ci" / "junit.xml").getroot()
    cases = root.iter("testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == 1 and "< 0.5" in failures[0].get("name")
    assert "gates FAILED" in cli("runs", run.id).out


def test_relative_gate_needs_a_baseline(run, suite, cli, tmp_path, tiny_bert):
    path = suite(["macro_f1 drop <= 1.0 pt"])
    r = cli("eval", run.id, "--suite", path)
    assert r.rc == 2 and "--baseline" in r.err
    same = hs.adapt(run.manifest["recipe"]["data"], backbone=str(tiny_bert), out=tmp_path / "runs")
    r = cli("eval", run.id, "--suite", path, "--baseline", same.id, "--json")
    assert r.rc == 0, r.err
    gate = json.loads(r.out)["gates"][0]
    assert gate["passed"] and gate["baseline"] == pytest.approx(gate["value"])


def test_suite_errors_are_reported_before_any_work(run, tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets:\n  - name: a\n    path: missing.csv\ngates:\n  - accuraccy >= 0.8\n")
    r = cli("eval", run.id, "--suite", bad)
    assert r.rc == 2
    assert "2 errors" in r.err and "missing.csv" in r.err and "did you mean 'accuracy'" in r.err.lower()
    assert Store().evals(run.id) == []


def test_eval_needs_data_or_suite(run, cli, suite):
    assert cli("eval", run.id).rc == 2
    assert cli("eval", run.id, "x.csv", "--suite", suite([])).rc == 2


def test_drift_on_a_suite_uses_its_slices(run, suite, tmp_path, tiny_bert):
    import shutil

    same = shutil.copytree(tiny_bert, tmp_path / "same")
    res = drift(run.id, str(same), suite=suite([]), out=tmp_path / "runs", report=tmp_path / "rep")
    slices = {c["slice"] for c in res.result["checks"]}
    assert slices == {"all", "label=neg", "label=pos", "language=de", "language=en"}
    assert res.verdict == "no significant change"
    assert res.result["suite"]["name"] == "sentiment"


def test_drift_on_other_data_refused_when_the_old_base_is_gone(run, suite, tmp_path, tiny_bert):
    from safetensors.torch import load_file, save_file

    f = tiny_bert / "model.safetensors"
    original = f.read_bytes()
    try:
        t = load_file(str(f))
        key = next(k for k in t if k.endswith("word_embeddings.weight"))
        t[key] = t[key] * 0.5
        save_file(t, str(f), metadata={"format": "pt"})
        with pytest.raises(BadInput, match="can only be compared on its own test set"):
            drift(run.id, str(tiny_bert), suite=suite([]), out=tmp_path / "runs")
    finally:
        f.write_bytes(original)
