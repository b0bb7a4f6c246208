"""`headstart export RUN --format onnx`: one ONNX graph of the run's forward, checked against the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import headstart as hs
from headstart.errors import BadInput

FAST = ["--set", "epochs=1", "--set", "batch_size=8"]
TEXTS = ["good movie", "awful food", "the price was very bad", "i love this film", "my card"]


def export_onnx_module():
    import importlib

    return importlib.import_module("headstart.export_onnx")  # the module (hs.export is a function)


def adapt(cli, data, backbone, tmp_path, *extra) -> Path:
    r = cli("adapt", data, "--backbone", backbone, "--out", tmp_path / "runs", "--json", *extra)
    assert r.rc == 0, r
    return Path(r.json()["path"])


def assert_graph(out: Path, inputs: list[str], output: str, width: int) -> None:
    """model.onnx takes int64 (batch, sequence) inputs and gives a (batch, width) output."""
    import onnx

    model = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in model.graph.input] == inputs
    for i in model.graph.input:
        assert i.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch", "sequence"]
    (out_value,) = model.graph.output
    assert out_value.name == output
    dims = out_value.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == width


@pytest.fixture(scope="module")
def typed_bert(tmp_path_factory, tiny_bert) -> Path:
    """The tiny BERT with a tokenizer that also makes token_type_ids (as BERT/MiniLM tokenizers do)."""
    import shutil

    folder = tmp_path_factory.mktemp("backbones") / "tiny-bert-types"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_linear_probe_export_gives_the_runs_probabilities(cli, trained_run, tmp_path):
    from headstart.export_onnx import OnnxRun

    out = tmp_path / "onnx"
    r = cli("export", trained_run.path, "--out", out, "--format", "onnx")
    assert r.rc == 0, r
    assert r.err == ""  # the exporter's warnings and prints are silenced
    assert f"exported run {trained_run.id} (linear-probe) to {out}" in r.out
    assert "checked on" in r.out and "OnnxRun (onnxruntime" in r.out and "tolerance 1e-04, fp32" in r.out
    assert sorted(p.name for p in out.iterdir()) == ["headstart.json", "model.onnx", "tokenizer.json", "tokenizer_config.json"]
    run = hs.load(trained_run.path)
    meta = json.loads((out / "headstart.json").read_text())
    assert meta["task"] == "classification" and meta["classes"] == run.classes and meta["source_run"] == run.id
    assert meta["output"] == "probabilities" and meta["opset"] == 17 and meta["max_length"] == 32
    assert meta["check"]["max_abs_diff"] <= meta["check"]["tolerance"] == 1e-4
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 32
    assert_graph(out, ["input_ids", "attention_mask"], "probabilities", len(run.classes))

    clf = OnnxRun(out, intra_op_num_threads=2)
    assert clf.task == "classification" and clf.classes == run.classes
    probs = clf.predict_proba(TEXTS, batch_size=2)  # batched by length, returned in input order
    np.testing.assert_allclose(probs, run.predict(TEXTS).probabilities, atol=1e-4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    with pytest.raises(BadInput, match="classification export"):
        clf.embed(TEXTS)


def test_lora_export_merges_and_json_output(cli, train_csv, typed_bert, tmp_path):
    from headstart.export_onnx import OnnxRun

    path = adapt(cli, train_csv, typed_bert, tmp_path, "--method", "lora", *FAST)
    out = tmp_path / "onnx"
    r = cli("export", path, "--out", out, "--format", "onnx", "--json")  # LoRA is merged for the graph: no --merge needed
    assert r.rc == 0, r
    record = r.json()
    assert record["path"] == str(out) and record["method"] == "lora" and record["merged"] is True
    assert record["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert record["check"]["max_abs_diff"] <= 1e-4 and record["checked"].startswith("checked on")
    assert_graph(out, ["input_ids", "attention_mask", "token_type_ids"], "probabilities", 2)
    run = hs.load(path)
    np.testing.assert_allclose(OnnxRun(out).predict_proba(TEXTS), run.predict(TEXTS).probabilities, atol=1e-4)
    human = cli("export", path, "--out", tmp_path / "onnx2", "--format", "onnx")
    assert "(lora, merged)" in human.out, human


def test_retrieval_export_gives_the_runs_embeddings_for_both_roles(cli, pairs_csv, tiny_bert, tmp_path):
    from headstart.export_onnx import OnnxRun

    r = cli("adapt", pairs_csv, "--task", "retrieval", "--backbone", tiny_bert, "--method", "lora", "--out",
            tmp_path / "runs", "--json", *FAST)
    assert r.rc == 0, r
    run = hs.load(r.json()["path"])
    out = tmp_path / "enc"
    r = cli("export", run.path, "--out", out, "--format", "onnx", "--json")
    assert r.rc == 0, r
    record = r.json()
    assert record["task"] == "retrieval" and record["output"] == "embeddings" and record["dim"] == 32
    assert record["check"]["roles"] == ["query", "document"] and record["check"]["max_abs_diff"] <= 1e-4
    assert record["prompts"] == {"query": "", "document": ""}
    assert_graph(out, ["input_ids", "attention_mask"], "embeddings", 32)
    enc = OnnxRun(out)
    texts = ["cat where is it", "red red food price", "my refund please"]
    for role in ("query", "document"):
        np.testing.assert_allclose(enc.embed(texts, role=role), run.embed(texts, role=role), atol=1e-4)
    assert record["normalize"] == run.manifest["backbone"]["spec"]["preprocessing"]["normalize"]  # pooled as the run
    with pytest.raises(BadInput, match="predict_proba|retrieval export"):
        enc.predict_proba(texts)
    # The loader puts a role's prefix (e5's "query: ") in front of that role's texts.
    meta = json.loads((out / "headstart.json").read_text())
    meta["prompts"] = {"query": "cat ", "document": ""}
    (out / "headstart.json").write_text(json.dumps(meta))
    enc = OnnxRun(out)
    np.testing.assert_allclose(enc.embed(["where is it"], role="query"), enc.embed(["cat where is it"], role="document"),
                               atol=1e-6)


@pytest.mark.parametrize("task, method, data", [("classification", "adapter", "train_csv"), ("retrieval", "frozen", "pairs_csv")])
def test_adapter_and_frozen_runs_export_too(task, method, data, tiny_bert, tmp_path, request):
    """Adapters stay layers of the graph; a frozen (zero-shot) encoder is the base itself."""
    from headstart.export_onnx import OnnxRun

    options = {"epochs": 1, "batch_size": 8} if method == "adapter" else None
    run = hs.adapt(request.getfixturevalue(data), task=task, backbone=str(tiny_bert), method=method, method_options=options,
                   out=tmp_path / "runs", store=tmp_path / "store.sqlite3")
    record = hs.export(run, tmp_path / "onnx", format="onnx")
    assert record["method"] == method and record["merged"] is False and record["check"]["max_abs_diff"] <= 1e-4
    onnx_run = OnnxRun(tmp_path / "onnx")
    if task == "classification":
        np.testing.assert_allclose(onnx_run.predict_proba(TEXTS), run.predict(TEXTS).probabilities, atol=1e-4)
    else:
        np.testing.assert_allclose(onnx_run.embed(TEXTS, role="document"), run.embed(TEXTS, role="document"), atol=1e-4)


def test_failed_check_writes_nothing(trained_run, tmp_path, monkeypatch):
    from headstart.errors import CheckFailed

    monkeypatch.setattr(export_onnx_module(), "TOLERANCE", -1.0)
    with pytest.raises(CheckFailed, match="nothing was written"):
        hs.export(hs.load(trained_run.path), tmp_path / "new-parent" / "onnx", format="onnx")
    assert not (tmp_path / "new-parent").exists()  # no folder, no temporary folder, no parent


def test_refusals_are_one_line(cli, trained_run, tmp_path, image_folder, tiny_vit, monkeypatch, assert_bad_input):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert_bad_input(cli("export", trained_run.path, "--out", busy, "--format", "onnx"), "busy", "not an empty folder")
    assert (busy / "keep.txt").read_text() == "x"

    image_run = hs.adapt(image_folder, backbone=str(tiny_vit), out=tmp_path / "runs")
    out = tmp_path / "img"
    line = assert_bad_input(cli("export", image_run.path, "--out", out, "--format", "onnx"), "--format onnx",
                            "hf-image", "hf-text", "--format hf")
    assert "text classification and retrieval" in line and not out.exists()

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    assert_bad_input(cli("export", trained_run.path, "--out", out, "--format", "onnx"), "pip install 'headstart[onnx-export]'")
    assert not out.exists()


def test_tasks_without_an_onnx_graph_say_so():
    from headstart.tasks import get_task

    with pytest.raises(BadInput, match="cannot be exported to ONNX yet; use --format hf"):
        get_task("generation").onnx_graph(None, None, None, ["a"])
