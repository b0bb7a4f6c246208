"""Stratified, seeded splits and dataset fingerprints."""

from __future__ import annotations

from collections import Counter

import pytest

from headstart.data import Dataset, stratified_split
from headstart.errors import BadInput


def make(labels: list[str], texts: list[str] | None = None, source: str = "data.csv") -> Dataset:
    texts = texts if texts is not None else [f"text {i}" for i in range(len(labels))]
    return Dataset(inputs=texts, labels=labels, modality="text", source=source, origin=[f"{source} line {i + 2}" for i in range(len(labels))])


UNEVEN = make(["a"] * 30 + ["b"] * 20 + ["c"] * 10)


def _ids(ds: Dataset) -> list[str]:
    return list(ds.inputs)


def test_split_partitions_the_data():
    split = stratified_split(UNEVEN, val_fraction=0.1, test_fraction=0.2, seed=0)
    parts = [_ids(split.train), _ids(split.val), _ids(split.test)]
    everything = [x for p in parts for x in p]
    assert sorted(everything) == sorted(UNEVEN.inputs)
    assert len(set(everything)) == len(everything)
    assert split.sizes() == {"train": len(split.train), "val": len(split.val), "test": len(split.test)}


def test_split_is_stratified_with_expected_sizes():
    split = stratified_split(UNEVEN, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert Counter(split.test.labels) == {"a": 6, "b": 4, "c": 2}
    assert Counter(split.val.labels) == {"a": 3, "b": 2, "c": 1}
    assert Counter(split.train.labels) == {"a": 21, "b": 14, "c": 7}


def test_split_keeps_origins_and_source():
    split = stratified_split(UNEVEN, val_fraction=0.1, test_fraction=0.2, seed=0)
    for part in (split.train, split.val, split.test):
        assert part.source == "data.csv"
        for text, origin in zip(part.inputs, part.origin, strict=True):
            assert origin == f"data.csv line {int(text.split()[1]) + 2}"


def test_same_seed_same_split_other_seed_other_split():
    a = stratified_split(UNEVEN, val_fraction=0.1, test_fraction=0.2, seed=7)
    b = stratified_split(UNEVEN, val_fraction=0.1, test_fraction=0.2, seed=7)
    c = stratified_split(UNEVEN, val_fraction=0.1, test_fraction=0.2, seed=8)
    assert (_ids(a.train), _ids(a.val), _ids(a.test)) == (_ids(b.train), _ids(b.val), _ids(b.test))
    assert (_ids(a.train), _ids(a.test)) != (_ids(c.train), _ids(c.test))
    assert Counter(a.test.labels) == Counter(c.test.labels)


def test_every_class_is_in_train_even_when_tiny():
    data = make(["big"] * 20 + ["two"] * 2 + ["three"] * 3)
    split = stratified_split(data, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert set(split.train.labels) == {"big", "two", "three"}
    assert set(split.test.labels) == {"big", "two", "three"}  # the held-out example goes to test first


def test_without_test_fraction():
    split = stratified_split(UNEVEN, val_fraction=0.2, test_fraction=0.0, seed=0)
    assert split.test is None
    assert split.sizes()["test"] == 0
    assert len(split.train) + len(split.val) == len(UNEVEN)
    assert Counter(split.val.labels) == {"a": 6, "b": 4, "c": 2}


def test_class_with_one_example_is_refused():
    data = make(["a"] * 10 + ["b"] * 10 + ["lonely"])
    with pytest.raises(BadInput, match=r"data.csv: classes with fewer than 2 examples cannot be split: 'lonely' \(1\)"):
        stratified_split(data, val_fraction=0.1, test_fraction=0.2, seed=0)


def test_many_tiny_classes_are_summarised():
    data = make(["a"] * 10 + [f"c{i}" for i in range(8)])
    with pytest.raises(BadInput, match="and 3 more"):
        stratified_split(data, val_fraction=0.1, test_fraction=0.2, seed=0)


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (1.0, 0.0), (0.5, 0.5), (0.1, -0.1), (0.1, 1.0)])
def test_bad_fractions(val, test):
    with pytest.raises(BadInput, match="split fractions"):
        stratified_split(UNEVEN, val_fraction=val, test_fraction=test, seed=0)


def test_unlabelled_data_cannot_be_split():
    data = Dataset(inputs=["a", "b"], labels=None, modality="text", source="x.csv")
    with pytest.raises(BadInput, match="no labels"):
        stratified_split(data, val_fraction=0.1, test_fraction=0.2, seed=0)


# -- fingerprints ------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_ignores_the_file_name():
    labels = ["a", "b", "a", "b"]
    assert make(labels).fingerprint == make(list(labels), source="elsewhere.tsv").fingerprint
    assert len(make(labels).fingerprint) == 64


def test_fingerprint_changes_with_a_label():
    assert make(["a", "b", "a", "b"]).fingerprint != make(["a", "b", "a", "a"]).fingerprint


def test_fingerprint_changes_with_a_text_or_the_order():
    labels = ["a", "b"]
    assert make(labels, ["x", "y"]).fingerprint != make(labels, ["x", "z"]).fingerprint
    assert make(["a", "b"], ["x", "y"]).fingerprint != make(["b", "a"], ["y", "x"]).fingerprint


def test_fingerprint_of_unlabelled_data_differs_from_labelled():
    labelled = make(["a", "b"], ["x", "y"])
    unlabelled = Dataset(inputs=["x", "y"], labels=None, modality="text", source="x")
    assert labelled.fingerprint != unlabelled.fingerprint


def test_image_fingerprint_follows_file_content(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    before = Dataset(inputs=[str(a), str(b)], labels=["x", "y"], modality="image", source=str(tmp_path)).fingerprint
    b.write_bytes(b"changed")
    after = Dataset(inputs=[str(a), str(b)], labels=["x", "y"], modality="image", source=str(tmp_path)).fingerprint
    assert before != after


def test_concat_and_subset():
    data = make(["a", "b", "a", "b"])
    sub = data.subset([3, 0])
    assert sub.inputs == ["text 3", "text 0"] and sub.labels == ["b", "a"]
    assert sub.origin == ["data.csv line 5", "data.csv line 2"]
    both = Dataset.concat(sub, data.subset([1]))
    assert both.inputs == ["text 3", "text 0", "text 1"] and both.labels == ["b", "a", "b"]
