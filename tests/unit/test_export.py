"""Export: what the standard transformers loaders make of the folder, and the folder's file modes."""

from __future__ import annotations

import os
import stat
import sys

import numpy as np
import pytest

import headstart as hs

TEXTS = ["good movie", "awful food", "the price was very bad", "i love this film"]


@pytest.fixture
def exported(trained_run, tmp_path):
    run = hs.load(trained_run.path, store=trained_run.store)
    record = hs.export(run, tmp_path / "exported")
    return run, record, tmp_path / "exported"


def _softmax(logits):
    import torch

    return torch.softmax(logits.float(), dim=-1).detach().numpy()


def test_auto_class_with_remote_code_gives_the_runs_probabilities(exported, tmp_path, monkeypatch):
    import torch
    import transformers.dynamic_module_utils as dyn
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    run, record, out = exported
    monkeypatch.setattr(dyn, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))  # transformers copies the code there
    monkeypatch.setattr(sys, "path", list(sys.path))
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    assert type(model).__name__ == "HeadstartForSequenceClassification"
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        probs = _softmax(model(**tok(TEXTS, padding=True, truncation=True, return_tensors="pt")).logits)
    expected = run.predict(TEXTS).probabilities
    assert np.abs(probs - expected).max() <= 1e-4
    assert model.config.id2label == dict(enumerate(run.classes))
    check = record["check"]
    assert check["loaders"]["AutoModelForSequenceClassification(trust_remote_code=True)"] <= check["tolerance"] == 1e-4
    assert check["plain_auto_class_refuses"] is True
    # The pipeline goes through the same class and labels its scores with id2label.
    scores = pipeline("text-classification", model=str(out), trust_remote_code=True, top_k=None)(TEXTS[:1])[0]
    by_label = {s["label"]: s["score"] for s in scores}
    assert by_label == pytest.approx(dict(zip(run.classes, expected[0].tolist(), strict=True)), abs=1e-4)


def test_auto_class_without_remote_code_refuses_instead_of_a_random_head(exported):
    from transformers import AutoModel, AutoModelForSequenceClassification

    _, _, out = exported
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(out)
    body = AutoModel.from_pretrained(out)  # the body stays a plain encoder
    assert type(body).__name__ == "BertModel"
    assert not any(name.startswith(("classifier", "headstart_head")) for name, _ in body.named_parameters())


def test_guard_tensors_name_the_built_in_head():
    from transformers import BertConfig, MPNetConfig

    from headstart.export import _guard_tensors

    bert = _guard_tensors(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8), set())
    assert sorted(bert) == ["classifier.bias", "classifier.weight"]
    assert all(t.numel() == 0 for t in bert.values())
    mpnet = _guard_tensors(MPNetConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8), set())
    assert sorted(mpnet) == ["classifier.dense.bias", "classifier.dense.weight", "classifier.out_proj.bias",
                             "classifier.out_proj.weight"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exported_files_get_the_modes_open_and_mkdir_would_give(trained_run, tmp_path, umask):
    run = hs.load(trained_run.path, store=trained_run.store)
    before = os.umask(umask)
    try:
        hs.export(run, tmp_path / "parent" / "exported")
    finally:
        os.umask(before)
    out = tmp_path / "parent" / "exported"
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    files = list(out.iterdir())
    assert {"model.safetensors", "classifier.safetensors", "modeling_headstart.py", "headstart.json"} <= {p.name for p in files}
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
    assert [p.name for p in out.parent.iterdir()] == ["exported"]  # no temporary folder left beside it


def test_failed_check_leaves_nothing(trained_run, tmp_path, monkeypatch):
    from headstart.errors import CheckFailed

    export_mod = sys.modules["headstart.export"]  # `headstart.export` the attribute is the function

    run = hs.load(trained_run.path, store=trained_run.store)
    monkeypatch.setattr(export_mod, "_plain_auto_class_refuses", lambda folder: False)
    with pytest.raises(CheckFailed, match="random head"):
        hs.export(run, tmp_path / "new-parent" / "exported")
    assert not (tmp_path / "new-parent").exists()
