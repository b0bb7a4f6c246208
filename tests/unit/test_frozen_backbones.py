"""Backbones that give frozen features only (ONNX files, numpy encoders): linear probing works,
methods that train the body are refused with a clear message, and packaged parts assemble."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

import headstart as hs
from headstart import catalog
from headstart.backbones import family_trains, open_backbone
from headstart.backbones.frozen import OnnxTextBackbone
from headstart.catalog import BackboneSpec, resolve
from headstart.errors import BackboneUnavailable, BadInput

pytest.importorskip("onnx", reason="building an ONNX file in a test needs the onnx package (test extra)")
pytest.importorskip("onnxruntime", reason="running an ONNX backbone needs onnxruntime (onnx extra)")

TEXTS = ["the movie was good", "i hate my card", "where is my parcel please", "love it"]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny_bert) -> Path:
    from headstart.backbones.testing import tiny_onnx_text_model

    return tiny_onnx_text_model(tmp_path_factory.mktemp("onnx") / "tiny", source=tiny_bert)


def test_onnx_file_resolves_as_a_frozen_text_backbone(tiny_onnx):
    spec = resolve(str(tiny_onnx))
    assert (spec.family, spec.modality, spec.tokenizer_from) == ("onnx-text", "text", str(tiny_onnx.parent))
    assert not family_trains(spec)
    assert family_trains(resolve("minilm-l6"))


def test_onnx_features_match_the_torch_model_they_were_exported_from(tiny_onnx, tiny_bert):
    onnx_bb, onnx_hash = open_backbone(str(tiny_onnx))
    torch_bb, _ = open_backbone(str(tiny_bert))
    assert isinstance(onnx_bb, OnnxTextBackbone) and onnx_bb.feature_dim == torch_bb.feature_dim
    np.testing.assert_allclose(onnx_bb.embed(TEXTS), torch_bb.embed(TEXTS), atol=1e-5)
    assert len(onnx_hash) == 64


def test_onnx_without_tokenizer_is_refused(tmp_path, tiny_onnx):
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(tiny_onnx.read_bytes())
    with pytest.raises(BadInput, match="carries no tokenizer"):
        resolve(str(lone))


def test_linear_probe_on_an_onnx_backbone(tmp_path, tiny_onnx, train_csv):
    run = hs.adapt(train_csv, backbone=str(tiny_onnx), out=tmp_path / "out")
    assert run.manifest["backbone"]["spec"]["family"] == "onnx-text"
    assert hs.load(run.path).predict(TEXTS).probabilities.shape == (len(TEXTS), 2)


@pytest.mark.parametrize("method", ["lora", "finetune", "scratch"])
def test_methods_that_train_the_body_are_refused_before_any_work(tmp_path, tiny_onnx, train_csv, method):
    with pytest.raises(BadInput, match=r"gives frozen features only \(ONNX file\); use --method linear-probe"):
        hs.adapt(train_csv, backbone=str(tiny_onnx), method=method, out=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bf16_is_refused_for_an_onnx_backbone(tiny_onnx):
    bb, _ = open_backbone(str(tiny_onnx))
    with pytest.raises(BadInput, match="--precision fp32"):
        bb.embed(TEXTS, precision="bf16")


def test_packaged_frozen_entries_are_in_the_catalog():
    for name in ("minilm-l6-int8", "paraphrase-minilm-l3", "use-multilingual"):
        assert not family_trains(catalog.CATALOG[name]), name
    assert catalog.CATALOG["use-multilingual"].languages == ("multi",)
    assert family_trains(catalog.CATALOG["mpnet-base"])


def test_missing_distribution_is_reported_with_the_install_line(monkeypatch):
    spec = BackboneSpec(name="x", modality="text", family="onnx-text", source_kind="package", source="no-such-dist-xyz",
                        locator="dist-file", source_file="a/model.onnx", install="no-such-dist-xyz==1.0")
    assert not catalog.is_installed(spec)
    with pytest.raises(BackboneUnavailable, match="pip install no-such-dist-xyz==1.0"):
        catalog.locate(spec)


def test_zip_parts_are_concatenated_and_extracted_once(tmp_path, monkeypatch):
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model-folder/config.json", "{}")
        z.writestr("model-folder/model.safetensors", b"\0" * 100)
    blob = archive.read_bytes()
    cut = len(blob) // 2
    for i, chunk in ((1, blob[:cut]), (2, blob[cut:])):
        (tmp_path / f"dist{i}").mkdir()
        (tmp_path / f"dist{i}" / f"m.zip.{i}").write_bytes(chunk)

    class FakeDist:
        def __init__(self, root):
            self.root = root

        def locate_file(self, rel):
            return self.root / rel

    monkeypatch.setattr(catalog, "_distribution", lambda name: FakeDist(tmp_path / name) if name.startswith("dist") else None)
    spec = BackboneSpec(name="parted", modality="text", family="hf-text", source_kind="package", source="dist{i}",
                        locator="zip-parts", source_file="m.zip.{i}", parts=2)
    assert catalog.is_installed(spec)
    folder = catalog.locate(spec)
    assert folder.name == "model-folder" and (folder / "config.json").read_text() == "{}"
    (tmp_path / "dist1" / "m.zip.1").unlink()  # a second call reuses the extracted folder
    assert catalog.locate(spec) == folder
