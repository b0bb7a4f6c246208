"""Image classification on a folder of generated images with the tiny ViT."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

import headstart as hs
from headstart.backbones import open_backbone
from headstart.backbones.vision import load_image
from headstart.catalog import ImagePreprocessing
from headstart.errors import BadInput
from headstart.runs import Store


@pytest.fixture
def image_run(tmp_path, image_folder, tiny_vit):
    return hs.adapt(image_folder, backbone=str(tiny_vit), out=tmp_path / "out")


def test_adapt_on_an_image_folder(image_run, image_folder, tiny_vit):
    m = image_run.manifest
    assert m["modality"] == "image"
    assert m["classes"] == ["blue", "red"]
    assert m["backbone"]["name"] == str(tiny_vit.resolve())
    assert m["data"]["train"]["examples"] == 32
    assert m["data"]["train"]["columns"] == {}
    assert m["method"]["fit"]["trainable_params"] == 2 * (32 + 1)
    assert m["metrics"]["test"]["summary"]["n"] == m["data"]["split"]["test"] > 0
    assert image_run.evaluate(image_folder, record=False)["accuracy"] >= 0.9  # red vs blue is easy


def test_predict_on_a_flat_folder(image_run, flat_images):
    folder, truth = flat_images
    preds = image_run.predict(folder)
    assert preds.probabilities.shape == (len(truth), 2)
    np.testing.assert_allclose(preds.probabilities.sum(1), 1.0, atol=1e-6)
    assert np.mean([p == t for p, t in zip(preds.labels, truth, strict=True)]) >= 5 / 6


def test_predict_on_image_paths_and_reload(image_run, flat_images):
    folder, _ = flat_images
    paths = sorted(str(p) for p in folder.iterdir())
    expected = image_run.predict(folder).probabilities
    np.testing.assert_array_equal(image_run.predict(paths).probabilities, expected)
    np.testing.assert_array_equal(hs.load(image_run.path).predict(paths).probabilities, expected)


def test_cli_adapt_and_predict_images(tmp_path, cli, image_folder, flat_images, tiny_vit):
    folder, truth = flat_images
    store = tmp_path / "store.sqlite3"
    made = cli("adapt", image_folder, "--backbone", tiny_vit, "--out", tmp_path / "out", "--store", store, "--json")
    assert made.rc == 0, made
    assert [r["modality"] for r in Store(store).runs()] == ["image"]
    result = cli("predict", made.json()["path"], folder)
    assert result.rc == 0, result
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [r["input"] for r in rows] == [str(p) for p in sorted(folder.iterdir())]
    assert list(rows[0]) == ["input", "label", "p[blue]", "p[red]"]
    evaluated = cli("eval", made.json()["path"], image_folder, "--store", store, "--json")
    assert evaluated.rc == 0, evaluated
    assert evaluated.json()["metrics"]["n"] == 32


def test_image_run_refuses_stdin_and_texts(tmp_path, cli, image_run, assert_bad_input, train_csv):
    assert_bad_input(cli("predict", image_run.path, "-", stdin="good movie\n"), "takes image", "not stdin")
    assert_bad_input(cli("predict", image_run.path, train_csv), "holds text", "takes image")


def test_unreadable_image_is_one_line(tmp_path, cli, image_run, assert_bad_input):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "fake.png").write_bytes(b"not a png at all")
    assert_bad_input(cli("predict", image_run.path, folder), "fake.png", "cannot read the image")


def test_text_backbone_on_images_and_image_backbone_on_text(tmp_path, image_folder, train_csv, tiny_bert, tiny_vit):
    with pytest.raises(BadInput, match="takes text but .* holds image"):
        hs.adapt(image_folder, backbone=str(tiny_bert), out=tmp_path / "out")
    with pytest.raises(BadInput, match="takes image but .* holds text"):
        hs.adapt(train_csv, backbone=str(tiny_vit), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_image_preprocessing(tmp_path):
    from PIL import Image

    path = tmp_path / "wide.png"
    Image.new("RGB", (64, 32), (255, 0, 0)).save(path)
    squash = load_image(str(path), ImagePreprocessing(image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    assert squash.shape == (3, 16, 16) and squash.dtype == np.float32
    np.testing.assert_allclose(squash[0], 1.0, atol=1e-6)  # red: (1 - 0.5) / 0.5
    np.testing.assert_allclose(squash[2], -1.0, atol=1e-6)
    crop = load_image(str(path), ImagePreprocessing(image_size=16, resize="shortest-side"))
    assert crop.shape == (3, 16, 16)


def test_vit_features(tiny_vit, image_folder):
    bb, bb_hash = open_backbone(str(tiny_vit))
    assert bb.modality == "image" and bb.feature_dim == 32 and len(bb_hash) == 64
    paths = sorted(str(p) for p in (image_folder / "red").iterdir())[:3]
    feats = bb.embed(paths)
    assert feats.shape == (3, 32) and np.isfinite(feats).all()


@pytest.mark.parametrize("method", ["lora", "adapter", "finetune"])
def test_trained_methods_run_on_a_vision_transformer(tmp_path, image_folder, tiny_vit, method):
    """The same LoRA / adapter code finds the ViT's blocks and linear layers (not only BERT's)."""
    run = hs.adapt(image_folder, backbone=str(tiny_vit), method=method, out=tmp_path / "out",
                   method_options={"epochs": 3, "batch_size": 8, "head_init": "zero", "lr": 3e-3, "head_lr": 3e-2})
    fit = run.manifest["method"]["fit"]
    if method == "lora":
        assert fit["target_count"] == 12  # 2 blocks x (q, k, v, attention out, intermediate, output)
    if method == "adapter":
        assert fit["adapter_count"] == 4
    again = hs.load(run.path).predict(image_folder)
    np.testing.assert_allclose(again.probabilities, run.predict(image_folder).probabilities, atol=1e-6)


def test_images_named_in_a_csv(tmp_path, image_folder, tiny_vit, assert_bad_input, cli):
    """A table with an image-path column (relative to the table's folder) and a label column is
    image data, read like an image folder."""
    import shutil

    from headstart.data import load_dataset

    shutil.copytree(image_folder, tmp_path / "pics")
    rows = [(f"pics/{p.parent.name}/{p.name}", p.parent.name) for p in sorted((tmp_path / "pics").glob("*/*.png"))]
    table = tmp_path / "images.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([("image", "label"), *rows])
    ds = load_dataset(table)
    assert ds.modality == "image" and ds.columns == {"text": "image", "label": "label"}
    assert ds.inputs[0] == str(tmp_path / rows[0][0]) and ds.labels[0] == rows[0][1]
    run = hs.adapt(table, backbone=str(tiny_vit), out=tmp_path / "out")
    assert run.manifest["modality"] == "image" and run.manifest["classes"] == ["blue", "red"]
    assert run.evaluate(table, record=False)["accuracy"] >= 0.9
    np.testing.assert_allclose(run.predict(table).probabilities, run.predict(image_folder).probabilities, atol=1e-6)
    with open(table, "a", newline="") as f:
        csv.writer(f).writerow(("pics/red/missing.png", "red"))
    assert_bad_input(cli("adapt", table, "--backbone", tiny_vit, "--out", tmp_path / "o2"),
                     "image file", "missing.png", "does not exist", "relative to the table's folder")
