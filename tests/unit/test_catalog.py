"""The catalog: resolving backbone names, spec round trips, and weight identity hashes."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import headstart.catalog as catalog
from headstart._util import sha256_file
from headstart.catalog import CATALOG, BackboneSpec, ImagePreprocessing, TextPreprocessing, identity, resolve, weight_files
from headstart.errors import BadInput


def test_catalog_names():
    assert {"minilm-l6", "efficientnet-lite0"} <= set(CATALOG)
    assert resolve("minilm-l6") is CATALOG["minilm-l6"]
    assert CATALOG["minilm-l6"].modality == "text"
    assert CATALOG["efficientnet-lite0"].modality == "image"
    assert isinstance(CATALOG["efficientnet-lite0"].preprocessing, ImagePreprocessing)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already in the catalog"):
        catalog.register(CATALOG["minilm-l6"])


def test_hub_names():
    spec = resolve("hf:sentence-transformers/all-MiniLM-L6-v2")
    assert spec.source_kind == "hub"
    assert spec.source == "sentence-transformers/all-MiniLM-L6-v2"
    assert spec.family == "hf-auto"
    with pytest.raises(BadInput, match="hf: needs a hub id"):
        resolve("hf:")


def test_local_text_folder(tiny_bert):
    spec = resolve(str(tiny_bert))
    assert spec.source_kind == "local"
    assert spec.modality == "text" and spec.family == "hf-text"
    assert spec.name == spec.source == str(tiny_bert.resolve())
    assert spec.preprocessing == TextPreprocessing(max_length=32, pooling="mean", normalize=False)


def test_local_image_folder(tiny_vit):
    spec = resolve(str(tiny_vit))
    assert spec.modality == "image" and spec.family == "hf-image"
    assert spec.preprocessing.image_size == 32
    assert spec.preprocessing.mean == (0.5, 0.5, 0.5)


def test_sentence_transformers_pooling_files(tmp_path, tiny_bert):
    folder = tmp_path / "st-model"
    shutil.copytree(tiny_bert, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (folder / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Normalize"}]))
    pre = resolve(str(folder)).preprocessing
    assert pre.pooling == "cls" and pre.normalize is True


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("minilm-l7", "Did you mean 'minilm-l6'"),
        ("efficientnet-lite5", "Did you mean 'efficientnet-lite2'"),
        ("no-such-model-anywhere", "headstart models"),
        ("", "--backbone is empty"),
        ("   ", "--backbone is empty"),
    ],
)
def test_unknown_names(name, match):
    with pytest.raises(BadInput, match=match) as err:
        resolve(name)
    assert "\n" not in str(err.value)


def test_folder_without_config(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(BadInput, match="has no config.json"):
        resolve(str(tmp_path / "m"))


def test_a_file_is_not_a_backbone(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(BadInput, match="is a file"):
        resolve(str(f))


@pytest.mark.parametrize("name", ["minilm-l6", "efficientnet-lite0"])
def test_spec_round_trip(name):
    spec = CATALOG[name]
    assert BackboneSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_local_spec_round_trip(tiny_bert, tiny_vit):
    for folder in (tiny_bert, tiny_vit):
        spec = resolve(str(folder))
        assert BackboneSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# -- identity ----------------------------------------------------------------------------------


@pytest.fixture
def weights_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights v1")
    return folder


def test_identity_of_a_single_weight_file_is_its_sha256(weights_folder):
    assert identity(weights_folder) == sha256_file(weights_folder / "model.safetensors")
    assert identity(weights_folder / "model.safetensors") == sha256_file(weights_folder / "model.safetensors")


def test_identity_is_stable_and_cached(weights_folder, tmp_path, monkeypatch):
    first = identity(weights_folder)
    cache_file = tmp_path / "home" / "cache" / "identity.json"
    cached = json.loads(cache_file.read_text())
    assert list(cached.values()) == [first]
    assert str((weights_folder / "model.safetensors").resolve()) in next(iter(cached))

    calls = []
    monkeypatch.setattr(catalog, "sha256_file", lambda p: calls.append(p) or "never used")
    assert identity(weights_folder) == first
    assert calls == []


def test_identity_cache_follows_headstart_cache(weights_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "elsewhere"))
    identity(weights_folder)
    assert (tmp_path / "elsewhere" / "identity.json").is_file()


def test_identity_changes_with_file_content(weights_folder):
    before = identity(weights_folder)
    # another size: the cache is keyed by (path, size, mtime), and mtime is coarse on some filesystems
    (weights_folder / "model.safetensors").write_bytes(b"weights v2, retrained")
    assert identity(weights_folder) != before
    (weights_folder / "model.safetensors").write_bytes(b"weights v1")
    assert identity(weights_folder) == before


def test_identity_same_size_new_mtime_is_rehashed(weights_folder):
    before = identity(weights_folder)
    f = weights_folder / "model.safetensors"
    st = f.stat()
    f.write_bytes(b"weights v9")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert identity(weights_folder) != before


def test_identity_over_several_files(weights_folder):
    (weights_folder / "model-2.safetensors").write_bytes(b"more weights")
    (weights_folder / "pytorch_model.bin").write_bytes(b"ignored when safetensors exist")
    files = weight_files(weights_folder)
    assert [f.name for f in files] == ["model-2.safetensors", "model.safetensors"]
    both = identity(weights_folder)
    assert both not in (sha256_file(files[0]), sha256_file(files[1]))
    (weights_folder / "pytorch_model.bin").write_bytes(b"still ignored")
    assert identity(weights_folder) == both
    (weights_folder / "model-2.safetensors").write_bytes(b"changed")
    assert identity(weights_folder) != both


def test_identity_ignores_a_corrupt_cache(weights_folder, tmp_path):
    cache_file = tmp_path / "home" / "cache" / "identity.json"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text("{not json")
    assert identity(weights_folder) == sha256_file(weights_folder / "model.safetensors")


def test_no_weight_files(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(BadInput, match="no weight files"):
        identity(tmp_path / "m")


def test_tiny_models_have_distinct_identities(tmp_path, tiny_bert):
    from headstart.backbones.testing import tiny_text_model

    other = tiny_text_model(tmp_path / "other", seed=1)
    same = tiny_text_model(tmp_path / "same", seed=0)
    assert identity(other) != identity(tiny_bert)
    assert identity(same) == identity(tiny_bert)  # built from the same config and seed: same weights
