"""Evaluation suites: a valid file loads with defaults filled in; every problem in a bad file is
reported at once with file and key; gates parse and check; slices give the right masks and
per-slice metrics match a hand computation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from headstart.errors import BadInput
from headstart.evaluate import classification_metrics
from headstart.evaluate.suite import Gate, Slice, Suite, evaluate_slices, load_suite, parse_gate, slice_masks

VALID = """\
name: banking-regression
datasets:
  - name: test
    path: data/test.csv
    text_col: text
    label_col: label
  - name: public
    path: hf:banking77
    split: test
metrics: [accuracy, macro_f1]
slices:
  - label
  - column: language
gates:
  - accuracy >= 0.85
  - macro_f1 drop <= 1.0 pt
  - {gate: "accuracy >= 0.9", dataset: test, slice: "label=refund"}
"""


def write_suite(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    data = folder / "data"
    data.mkdir(exist_ok=True)
    (data / "test.csv").write_text("text,label,language\nhello,refund,en\nhallo,card,de\n", encoding="utf-8")
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(BadInput) as info:
        load_suite(path)
    return str(info.value)


def test_valid_suite_loads(tmp_path):
    suite = load_suite(write_suite(tmp_path, VALID))
    assert isinstance(suite, Suite) and suite.name == "banking-regression"
    test, public = suite.datasets
    assert (test.name, test.source, test.path, test.hf_name) == ("test", "data/test.csv", (tmp_path / "data/test.csv").resolve(), None)
    assert (test.text_col, test.label_col, test.split) == ("text", "label", None)
    assert (public.path, public.hf_name, public.split) == (None, "banking77", "test")
    assert suite.metrics == ("accuracy", "macro_f1")
    assert suite.slices == (Slice("label"), Slice("column", "language"))
    g0, g1, g2 = suite.gates
    assert (g0.metric, g0.op, g0.threshold, g0.relative, g0.dataset, g0.slice) == ("accuracy", ">=", 0.85, False, None, "all")
    assert (g1.metric, g1.op, g1.threshold, g1.relative) == ("macro_f1", "<=", 1.0, True)
    assert (g2.dataset, g2.slice, g2.text, g2.where) == ("test", "label=refund", "accuracy >= 0.9", "gates[2]")
    assert g2.applies_to("test") and not g2.applies_to("public") and g0.applies_to("public")
    assert suite.dataset("public") is public
    with pytest.raises(BadInput, match="Did you mean 'test'"):
        suite.dataset("tset")


def test_defaults_and_hash(tmp_path):
    minimal = "name: m\ndatasets:\n  - {name: test, path: data/test.csv}\n"
    suite = load_suite(write_suite(tmp_path, minimal))
    assert suite.metrics == ("accuracy", "macro_f1") and suite.slices == () and suite.gates == ()
    assert len(suite.sha256) == 64
    # comments, key order and spacing do not change the hash; content does
    same = "# a comment\ndatasets:\n  - path: data/test.csv\n    name: test\nname:   m\nmetrics: [accuracy, macro_f1]\n"
    assert load_suite(write_suite(tmp_path, same, "same.yaml")).sha256 == suite.sha256
    other = minimal + "gates: ['accuracy >= 0.5']\n"
    assert load_suite(write_suite(tmp_path, other, "other.yaml")).sha256 != suite.sha256


def test_every_error_is_reported_at_once(tmp_path):
    bad = """\
    name: broken
    datasets:
      - name: test
        path: data/test.csv
        label_col: lable
      - name: test
        path: data/x.csv
      - name: notes
        path: data/test.docx
        split: test
    metrics: [accuracy, weighted_f1]
    slices:
      - lable
      - column: langauge
    gates:
      - accuraccy >= 0.8
      - accuracy >= 85
      - accuracy drop <= 1
      - accuracy == 0.9
      - {gate: "accuracy >= 0.9", dataset: tset, slice: "region=eu"}
    colour: blue
    """
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.docx").write_text("x", encoding="utf-8")
    message = load_error(write_suite(tmp_path, bad))
    lines = message.splitlines()
    assert lines[0] == f"suite 'broken' ({tmp_path / 'suite.yaml'}) has {len(lines) - 1} errors:"
    body = "\n".join(lines[1:])
    expected = [
        "datasets[0].label_col: 'lable' is not a column of data/test.csv",
        "datasets[1].name: 'test' is used by an earlier dataset",
        "datasets[1].path: no such file data/x.csv",
        "datasets[2].split: applies to hf: datasets only",
        "datasets[2].path: data/test.docx: unknown format '.docx'",
        "metrics[1]: unknown metric 'weighted_f1'",
        "slices[0]: unknown slice 'lable'",
        "slices[1].column: 'langauge' is not a column of dataset 'test'",
        "did you mean 'language'?",
        "gates[0]: 'accuraccy >= 0.8': unknown metric 'accuraccy'; choose from accuracy, macro_f1. Did you mean 'accuracy'?",
        "gates[1]: 'accuracy >= 85': metric values are fractions between 0 and 1 (got 85); for 85% write 0.85",
        "gates[2]: 'accuracy drop <= 1': give the allowed drop in percentage points",
        "gates[3]: 'accuracy == 0.9': not a gate",
        "gates[4].dataset: no dataset 'tset' in this suite",
        "gates[4].slice: 'region=eu' is not a slice of this suite",
        "colour: unknown key",
    ]
    for fragment in expected:
        assert fragment.lower() in body.lower(), fragment
    assert len(lines) - 1 == len(expected) - 1  # the did-you-mean fragment shares a line
    assert all(line.startswith(f"  {tmp_path / 'suite.yaml'}: ") for line in lines[1:])


def test_columns_are_checked_in_jsonl_and_parquet_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"text": ["a", "b"], "intent": ["x", "y"]}), tmp_path / "data" / "t.parquet")
    # JSONL columns are the union over all lines, as the data reader sees them
    (tmp_path / "data" / "t.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y", "lang": "de"}\n', encoding="utf-8")
    text = """\
    name: m
    datasets:
      - {name: p, path: data/t.parquet, label_col: label}
      - {name: j, path: data/t.jsonl}
    slices: [{column: lang}]
    """
    message = load_error(write_suite(tmp_path, text))
    assert "has 2 errors:" in message
    assert "datasets[0].label_col: 'label' is not a column of data/t.parquet; columns are 'text', 'intent'" in message
    assert "slices[0].column: 'lang' is not a column of dataset 'p' (data/t.parquet)" in message
    assert "dataset 'j'" not in message


def test_missing_required_keys(tmp_path):
    message = load_error(write_suite(tmp_path, "metrics: [accuracy]\n"))
    assert message.splitlines()[0].endswith("has 2 errors:")
    assert "name: missing" in message and "datasets: missing" in message


def test_gate_on_a_metric_the_suite_does_not_compute(tmp_path):
    text = "name: m\ndatasets: [{name: t, path: data/test.csv}]\nmetrics: [accuracy]\ngates: ['macro_f1 >= 0.5']\n"
    message = load_error(write_suite(tmp_path, text))
    assert "has 1 error:" in message and "'macro_f1' is not in this suite's metrics (accuracy)" in message


def test_bad_yaml_names_the_line(tmp_path):
    text = "name: m\ndatasets:\n  - name: test\n    path: [unclosed\nmetrics: [accuracy]\n"
    message = load_error(write_suite(tmp_path, text))
    assert "not valid YAML" in message and "line 5" in message


def test_duplicate_yaml_keys_are_an_error(tmp_path):
    text = "name: m\ndatasets: [{name: t, path: data/test.csv}]\nname: other\n"
    message = load_error(write_suite(tmp_path, text))
    assert "line 3" in message and "'name' appears twice" in message


def test_missing_suite_file(tmp_path):
    with pytest.raises(BadInput, match="no such suite file"):
        load_suite(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("gate", "value", "passed"),
    [
        (Gate("accuracy", ">=", 0.85), 0.85, True),
        (Gate("accuracy", ">=", 0.85), 0.8499, False),
        (Gate("accuracy", ">", 0.85), 0.85, False),
        (Gate("accuracy", "<=", 0.1), 0.1, True),
        (Gate("accuracy", "<", 0.1), 0.1, False),
        (Gate("accuracy", "<", 0.1), 0.05, True),
        (Gate("accuracy", ">=", 0.85), float("nan"), False),
    ],
)
def test_absolute_gates(gate, value, passed):
    ok, detail = gate.check(value)
    assert ok is passed
    assert detail.startswith("accuracy")


def test_relative_gates():
    gate = Gate("macro_f1", "<=", 1.0, relative=True, text="macro_f1 drop <= 1.0 pt", where="gates[1]")
    assert gate.check(0.90, 0.91) == (True, "macro_f1 drop 1.00 pt (0.9100 -> 0.9000) <= 1 pt")  # exactly at the limit
    ok, detail = gate.check(0.897, 0.91)
    assert not ok and detail == "macro_f1 drop 1.30 pt (0.9100 -> 0.8970) is not <= 1 pt"
    assert gate.check(0.95, 0.91)[0]  # an improvement is a negative drop
    assert not Gate("macro_f1", "<", 1.0, relative=True).check(0.90, 0.91)[0]
    with pytest.raises(BadInput, match=r"gates\[1\] 'macro_f1 drop <= 1.0 pt' compares with a baseline run"):
        gate.check(0.9)


def test_parse_gate_for_a_single_expression():
    gate = parse_gate(" macro_f1 drop < 0.5pt ")
    assert (gate.metric, gate.op, gate.threshold, gate.relative, gate.dataset, gate.slice) == ("macro_f1", "<", 0.5, True, None, "all")
    assert gate.canonical() == "macro_f1 drop < 0.5 pt"
    assert parse_gate("accuracy>.9").canonical() == "accuracy > 0.9"
    with pytest.raises(BadInput, match="unknown metric 'acc'"):
        parse_gate("acc >= 0.9")
    with pytest.raises(BadInput, match="not in this suite's metrics"):
        parse_gate("macro_f1 >= 0.9", metrics=["accuracy"])
    with pytest.raises(BadInput, match="gate 'macro_f1 drop < 0.5pt' compares with a baseline"):
        gate.check(0.8)


def test_slice_masks():
    labels = ["refund", "card", "refund", "card", "atm"]
    columns = {"language": ["en", "de", "de", None, "en"], "text": ["a"] * 5}
    masks = slice_masks(Slice("label"), labels, columns)
    assert list(masks) == ["label=atm", "label=card", "label=refund"]
    assert masks["label=refund"].tolist() == [True, False, True, False, False]
    lang = slice_masks(Slice("column", "language"), labels, columns)
    assert list(lang) == ["language=(missing)", "language=de", "language=en"]
    assert lang["language=de"].dtype == bool and lang["language=de"].tolist() == [False, True, True, False, False]
    assert sum(m.sum() for m in lang.values()) == 5
    with pytest.raises(BadInput, match="Did you mean 'language'"):
        slice_masks(Slice("column", "langauge"), labels, columns)


def test_gates_on_label_slices_name_per_label_metrics(tmp_path):
    bad = VALID.replace('{gate: "accuracy >= 0.9", dataset: test, slice: "label=refund"}',
                        '{gate: "macro_f1 >= 0.9", slice: "label=refund"}\n  - "recall >= 0.5"\n'
                        '  - {gate: "f1 >= 0.5", slice: "label=card"}')
    body = load_error(write_suite(tmp_path, bad))
    assert "gates[2]: 'macro_f1 >= 0.9': macro-F1 inside slice 'label=refund' means nothing" in body
    assert "'recall >= 0.9'" in body  # the suggested fix
    assert "gates[3]: 'recall >= 0.5': 'recall' is reported per label; give the gate a slice 'label=<value>'" in body
    assert "gates[4]: 'f1 >= 0.5': unknown metric 'f1' for a per-label slice; choose from recall, precision, accuracy" in body
    good = VALID.replace('"accuracy >= 0.9"', '"precision >= 0.9"')
    (_, _, gate) = load_suite(write_suite(tmp_path, good, "good.yaml")).gates
    assert (gate.metric, gate.slice) == ("precision", "label=refund")


def test_evaluate_slices_matches_a_manual_computation():
    rng = np.random.default_rng(3)
    classes = ["atm", "card", "refund"]
    y_true = rng.integers(0, 3, size=90)
    y_pred = np.where(rng.random(90) < 0.75, y_true, rng.integers(0, 3, size=90))
    labels = [classes[i] for i in y_true]
    masks = slice_masks(Slice("label"), labels, {})
    masks["empty"] = np.zeros(90, dtype=bool)
    out = evaluate_slices(y_true, y_pred, classes, masks, ["accuracy", "macro_f1"], n_resamples=200, seed=1)
    assert list(out) == ["all", "label=atm", "label=card", "label=refund", "empty"]
    whole = classification_metrics(y_true, y_pred, classes)
    assert out["all"]["accuracy"]["value"] == pytest.approx(whole["accuracy"])
    assert out["all"]["macro_f1"]["value"] == pytest.approx(whole["macro_f1"])
    assert out["all"]["accuracy"]["n"] == 90
    for i, c in enumerate(classes):
        per_label = out[f"label={c}"]
        assert set(per_label) == {"recall", "precision"}  # macro-F1 means nothing inside one true label
        sel, predicted = y_true == i, y_pred == i
        assert per_label["recall"]["value"] == pytest.approx(whole["per_class"][c]["recall"])
        assert per_label["recall"]["value"] == pytest.approx((y_pred[sel] == i).mean())
        assert per_label["precision"]["value"] == pytest.approx(whole["per_class"][c]["precision"])
        assert per_label["precision"]["value"] == pytest.approx((y_true[predicted] == i).mean())
        assert per_label["precision"]["predicted"] == int(predicted.sum())
        for entry in per_label.values():
            assert entry["n"] == int(sel.sum())
            low, high = entry["ci"]
            assert 0 <= low <= entry["value"] <= high <= 1 and low < high
    assert out["empty"]["accuracy"] == {"value": None, "ci": None, "n": 0}
    with pytest.raises(ValueError, match="Did you mean 'accuracy'"):
        evaluate_slices(y_true, y_pred, classes, {}, ["acuracy"])
