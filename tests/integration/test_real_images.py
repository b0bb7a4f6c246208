"""Image backbone on real weights (packaged EfficientNet-Lite0) and real data (CIFAR-10 JPEGs).

The subset is 30 training and 20 test images per class (the first ones by file name), copied
into a class-per-folder tree. Measured on the development machine (2 CPU cores, torch 2.13.0
CPU): test accuracy 0.63 / 0.64 / 0.63 for seeds 0 / 1 / 2 in fp32 (what 'auto' picks for this
backbone), 0.625 / 0.64 in bf16; with mean/std 0.5 instead of ImageNet's, 0.645 / 0.645 / 0.655.
On 200 test images one standard error is ~3.4 points; the floor is 0.58.
"""

from __future__ import annotations

import json
import shutil

import pytest

import headstart as hs

pytestmark = pytest.mark.integration

TRAIN_PER_CLASS, TEST_PER_CLASS = 30, 20


def _subset(src, dst, per_class: int) -> dict[str, list]:
    picked = {}
    for class_dir in sorted(d for d in src.iterdir() if d.is_dir()):
        files = sorted(class_dir.glob("*.jpg"))[:per_class]
        assert len(files) == per_class, f"{class_dir} has fewer than {per_class} images"
        (dst / class_dir.name).mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, dst / class_dir.name / f.name)
        picked[class_dir.name] = [dst / class_dir.name / f.name for f in files]
    return picked


def test_cifar10_subset_efficientnet_lite0(efficientnet_lite0, shared_data, tmp_path):
    from headstart.catalog import CATALOG

    cifar = shared_data("cifar10_jpg")
    train = shared_data("cifar10_jpg", "train")
    test = shared_data("cifar10_jpg", "test")
    assert cifar.is_dir()
    _subset(train, tmp_path / "train", TRAIN_PER_CLASS)
    test_files = _subset(test, tmp_path / "test", TEST_PER_CLASS)

    run = hs.adapt(tmp_path / "train", test=tmp_path / "test", backbone="efficientnet-lite0", out=tmp_path / "runs")

    summary = run.metrics["test"]["summary"]
    assert run.manifest["modality"] == "image"
    assert run.classes == sorted(test_files)
    assert summary["n"] == 10 * TEST_PER_CLASS
    assert summary["accuracy"] >= 0.58, summary
    assert run.manifest["backbone"]["sha256"] == CATALOG["efficientnet-lite0"].pinned_sha256

    # Predicting on image paths gives the same labels as the run's own test predictions.
    some = [str(test_files[c][0]) for c in run.classes]
    preds = run.predict(some)
    assert preds.probabilities.shape == (10, 10)
    assert set(preds.labels) <= set(run.classes)
    reopened = hs.load(run.path)
    assert reopened.predict(some).labels == preds.labels


def test_cli_predict_json_stdout_is_clean(efficientnet_lite0, shared_data, tmp_path, capsys):
    from headstart.cli import main

    train = shared_data("cifar10_jpg", "train")
    small = tmp_path / "train"
    for name in ("cat", "ship"):
        (small / name).mkdir(parents=True)
        for f in sorted((train / name).glob("*.jpg"))[:6]:
            shutil.copyfile(f, small / name / f.name)
    flat = tmp_path / "predict"
    flat.mkdir()
    for f in sorted((train / "ship").glob("*.jpg"))[6:8]:
        shutil.copyfile(f, flat / f.name)
    run = hs.adapt(small, backbone="efficientnet-lite0", test_fraction=0.34, out=tmp_path / "runs")

    capsys.readouterr()
    assert main(["predict", str(run.path), str(flat), "--json", "--quiet"]) == 0
    records = json.loads(capsys.readouterr().out)  # the backbone loads anew here, in the CLI's Run
    assert len(records) == 2 and all(r["label"] in ("cat", "ship") for r in records)
