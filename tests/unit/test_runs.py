"""Run folders: written whole or not at all, and refused when incomplete or edited."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headstart.errors import RunIntegrityError
from headstart.runs import Predictions
from headstart.runs.run import FORMAT, manifest_checksum, read_run_folder, write_run_folder

TENSORS = {"head.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "head.bias": torch.tensor([0.5, -0.5])}
RECORDS = [  # as the classification task writes them: the true label, the prediction, the probabilities
    {"input": "good movie", "label": "pos", "predicted": "pos", "p[neg]": 0.1, "p[pos]": 0.9},
    {"input": "bad, movie", "label": "pos", "predicted": "neg", "p[neg]": 0.8, "p[pos]": 0.2},
]


def _write(out, run_id="run-1"):
    manifest = {"format": FORMAT, "id": run_id, "seed": 0, "metrics": {"test": {"summary": {"accuracy": 0.5}}}}
    return write_run_folder(out, run_id, manifest, TENSORS, {"test": {"accuracy": 0.5}}, RECORDS)


def test_round_trip(tmp_path):
    path = _write(tmp_path / "runs")
    assert path == tmp_path / "runs" / "run-1"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run-1"]  # no temporary folder left
    manifest, tensors = read_run_folder(path)
    assert manifest["id"] == "run-1" and manifest["seed"] == 0
    assert manifest["checksum"] == manifest_checksum(manifest)
    assert set(manifest["files"]) == {"weights.safetensors", "metrics.json", "predictions.csv"}
    for k, v in TENSORS.items():
        assert torch.equal(tensors[k], v)
    assert json.loads((path / "metrics.json").read_text()) == {"test": {"accuracy": 0.5}}
    lines = (path / "predictions.csv").read_text().splitlines()
    assert lines[0] == "input,label,predicted,p[neg],p[pos]"
    assert lines[2] == '"bad, movie",pos,neg,0.8,0.2'


def test_reformatting_the_manifest_is_not_an_edit(tmp_path):
    path = _write(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(manifest, indent=4, sort_keys=True))
    assert read_run_folder(path)[0] == manifest


def test_existing_run_folder_is_not_overwritten(tmp_path):
    _write(tmp_path)
    with pytest.raises(RunIntegrityError, match="already exists"):
        _write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-1"]


def test_failed_write_leaves_nothing(tmp_path):
    bad = {"head.weight": "not a tensor"}
    with pytest.raises(Exception):
        write_run_folder(tmp_path, "run-2", {"format": FORMAT, "id": "run-2"}, bad, {}, RECORDS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["weights.safetensors", "metrics.json", "predictions.csv", "manifest.json"])
def test_missing_file(tmp_path, name):
    path = _write(tmp_path)
    (path / name).unlink()
    with pytest.raises(RunIntegrityError, match=f"missing {name}"):
        read_run_folder(path)


@pytest.mark.parametrize("name", ["weights.safetensors", "metrics.json", "predictions.csv"])
def test_edited_file(tmp_path, name):
    path = _write(tmp_path)
    data = bytearray((path / name).read_bytes())
    data[-2] ^= 0x01
    (path / name).write_bytes(bytes(data))
    with pytest.raises(RunIntegrityError, match=f"{name}: edited"):
        read_run_folder(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(seed=1), "checksum mismatch"),
        (lambda m: m.pop("checksum"), "checksum mismatch"),
        (lambda m: m["files"].pop("weights.safetensors"), "checksum mismatch"),
        (lambda m: m.update(format="other/1"), "not a headstart run manifest"),
    ],
)
def test_edited_manifest(tmp_path, edit, match):
    path = _write(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunIntegrityError, match=match):
        read_run_folder(path)


def test_manifest_not_json_or_not_an_object(tmp_path):
    path = _write(tmp_path)
    (path / "manifest.json").write_text("[1, 2")
    with pytest.raises(RunIntegrityError, match="not valid JSON"):
        read_run_folder(path)
    (path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(RunIntegrityError, match="not a headstart run manifest"):
        read_run_folder(path)


def test_not_a_folder(tmp_path):
    with pytest.raises(RunIntegrityError, match="not a run folder"):
        read_run_folder(tmp_path / "nothing")


def test_predictions():
    probs = np.array([[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]])
    preds = Predictions(["neg", "pos"], probs)
    assert preds.labels == ["pos", "neg", "neg"]
    assert preds.indices.tolist() == [1, 0, 0]
    records = preds.records(["a", "b", "c"])
    assert records[0] == {"input": "a", "label": "pos", "probabilities": {"neg": 0.2, "pos": 0.8}}
    assert "input" not in preds.records()[0]
