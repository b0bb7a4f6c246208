"""The frozen-feature cache: what was encoded once is never encoded again."""

from __future__ import annotations

import numpy as np

from headstart.backbones import open_backbone
from headstart.backbones.cache import FeatureCache, frozen_features
from headstart.data import Dataset


class Counter:
    def __init__(self, dim=4):
        self.dim, self.calls = dim, []

    def __call__(self, inputs):
        self.calls.append(list(inputs))
        return np.stack([np.full(self.dim, float(len(x)), dtype=np.float32) + np.arange(self.dim) for x in inputs])


def _cache(tmp_path, precision="fp32", signature=None):
    return FeatureCache("a" * 64, signature or {"pooling": "mean"}, precision, root=tmp_path / "features")


def test_second_call_computes_nothing(tmp_path):
    inputs = ["a", "bb", "ccc"]
    keys = ["k1", "k2", "k3"]
    compute = Counter()
    first, n1 = _cache(tmp_path).get_or_compute(keys, inputs, compute)
    second, n2 = _cache(tmp_path).get_or_compute(keys, inputs, compute)
    assert (n1, n2) == (3, 0)
    assert len(compute.calls) == 1
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32 and first.shape == (3, 4)


def test_only_new_inputs_are_computed_and_order_is_kept(tmp_path):
    compute = Counter()
    _cache(tmp_path).get_or_compute(["k1", "k2"], ["a", "bb"], compute)
    out, n = _cache(tmp_path).get_or_compute(["k3", "k1", "k3"], ["ccc", "a", "ccc"], compute)
    assert n == 1
    assert compute.calls[-1] == ["ccc"]  # duplicates computed once
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], compute(["a"])[0])


def test_cache_files_are_separated_by_precision_and_preprocessing(tmp_path):
    base = _cache(tmp_path)
    assert base.path != _cache(tmp_path, precision="bf16").path
    assert base.path != _cache(tmp_path, signature={"pooling": "cls"}).path
    assert base.path != FeatureCache("b" * 64, {"pooling": "mean"}, "fp32", root=tmp_path / "features").path
    compute = Counter()
    base.get_or_compute(["k"], ["x"], compute)
    _, n = _cache(tmp_path, precision="bf16").get_or_compute(["k"], ["x"], compute)
    assert n == 1


def test_default_location_is_the_headstart_cache(tmp_path, monkeypatch):
    assert FeatureCache("a" * 64, {}, "fp32").path.parent == tmp_path / "home" / "cache" / "features"
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "c"))
    assert FeatureCache("a" * 64, {}, "fp32").path.parent == tmp_path / "c" / "features"


def test_frozen_features_on_the_tiny_bert(tiny_bert):
    bb, bb_hash = open_backbone(str(tiny_bert))
    texts = ["the movie was good", "bad food", "the movie was good"]
    data = Dataset(inputs=texts, labels=None, modality="text", source="x")
    feats, n = frozen_features(bb, bb_hash, data, "fp32")
    assert n == 2  # the repeated text is encoded once
    assert feats.shape == (3, 32)
    np.testing.assert_array_equal(feats[0], feats[2])
    again, n2 = frozen_features(bb, bb_hash, data, "fp32")
    assert n2 == 0
    np.testing.assert_array_equal(again, feats)
    # the cached features are what the backbone computes, in input order, whatever the batching
    np.testing.assert_allclose(feats, bb.embed(texts), atol=1e-6)
    np.testing.assert_allclose(bb.embed(texts[:1])[0], feats[0], atol=1e-6)
