"""CLIP/SigLIP backbones (family ``clip``) and the zero-shot task, on tiny random dual encoders.

Random weights do not beat chance on red vs blue, so the zero-shot path is checked exactly: the
run's probabilities against a direct computation from the transformers model, the template
averaging, predictions after a reload, and the refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import headstart as hs
from headstart.backbones import open_backbone
from headstart.backbones.vision import load_image
from headstart.catalog import BackboneSpec, check_model_folder, resolve, with_local_family
from headstart.errors import BadInput
from headstart.tasks.zero_shot import DEFAULT_TEMPLATES, class_embeddings


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from headstart.backbones.testing import tiny_clip_model

    return tiny_clip_model(tmp_path_factory.mktemp("backbones") / "tiny-clip")


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    from headstart.backbones.testing import tiny_siglip_model

    return tiny_siglip_model(tmp_path_factory.mktemp("backbones") / "tiny-siglip")


@pytest.fixture(scope="module")
def zero_shot_run(tmp_path_factory, image_folder, tiny_clip):
    out = tmp_path_factory.mktemp("zs")
    return hs.adapt(image_folder, task="zero-shot", backbone=str(tiny_clip), out=out / "out", store=out / "store.sqlite3")


def _probabilities(run) -> tuple[list[str], np.ndarray]:
    with open(run.path / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    classes = run.classes
    return [r["input"] for r in rows], np.array([[float(r[f"p[{c}]"]) for c in classes] for r in rows])


def _direct(folder, paths: list[str], classes: list[str], templates) -> np.ndarray:
    """softmax(scale * img @ mean_template_text.T) straight from the transformers model."""
    from transformers import AutoModel, AutoTokenizer

    model, tok = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    pre = open_backbone(str(folder))[0].pre
    siglip = model.config.model_type == "siglip"
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([load_image(p, pre) for p in paths]))
        img = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        text = []
        for c in classes:
            if siglip:
                enc = tok([t.format(label=c) for t in templates], padding="max_length",
                          max_length=model.config.text_config.max_position_embeddings, return_tensors="pt")
                out = model.get_text_features(input_ids=enc["input_ids"])
            else:
                enc = tok([t.format(label=c) for t in templates], padding=True, return_tensors="pt")
                out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            mean = torch.nn.functional.normalize(out.pooler_output, dim=-1).mean(0)
            text.append(mean / mean.norm())
        logits = model.logit_scale.exp() * img @ torch.stack(text).T
    return torch.softmax(logits, dim=-1).numpy()


# -- the backbone family ---------------------------------------------------------------------------


def test_folder_rule_detects_clip_and_siglip(tiny_clip, tiny_siglip):
    for folder in (tiny_clip, tiny_siglip):
        assert check_model_folder(folder) == "clip"
        spec = resolve(str(folder))
        assert (spec.family, spec.modality) == ("clip", "image")
        hub = BackboneSpec(name="hf:someone/clip", modality="text", family="hf-auto", source_kind="hub", source="someone/clip")
        assert (with_local_family(hub, folder).family, with_local_family(hub, folder).modality) == ("clip", "image")
    # The folder's image processor decides: CLIP resizes the shortest side and centre-crops, SigLIP squashes.
    clip_pre, siglip_pre = open_backbone(str(tiny_clip))[0].pre, open_backbone(str(tiny_siglip))[0].pre
    assert (clip_pre.image_size, clip_pre.resize, clip_pre.crop_pct, clip_pre.interpolation) == (32, "shortest-side", 1.0, "bicubic")
    assert (siglip_pre.image_size, siglip_pre.resize, siglip_pre.mean, siglip_pre.interpolation) == (32, "squash", (0.5,) * 3, "bilinear")


def test_a_siglip2_folder_is_still_refused_in_one_line(tmp_path, tiny_siglip):
    import shutil

    folder = tmp_path / "s2"
    shutil.copytree(tiny_siglip, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["Siglip2Model"]}))
    with pytest.raises(BadInput, match=r"Siglip2Model \(one tower, a head or a variant of an image-text dual encoder\)") as err:
        resolve(str(folder))
    assert "\n" not in str(err.value) and "image-text dual encoders (CLIP, SigLIP)" in str(err.value)


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_features_are_the_normalised_projected_image_embeddings(which, tiny_clip, tiny_siglip, flat_images):
    folder = tiny_clip if which == "clip" else tiny_siglip
    bb, _ = open_backbone(str(folder))
    paths = sorted(str(p) for p in flat_images[0].iterdir())
    feats = bb.embed(paths)
    assert feats.shape == (len(paths), 16 if which == "clip" else 32) and bb.feature_dim == feats.shape[1]
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([load_image(p, bb.pre) for p in paths]))
        direct = torch.nn.functional.normalize(bb.module.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    np.testing.assert_allclose(feats, direct.numpy(), atol=1e-5)
    texts = bb.embed_texts(["a photo of a red .", "blue"])
    assert texts.shape == (2, feats.shape[1])
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert bb.logit_scale == pytest.approx(float(bb.module.logit_scale.detach().exp()))


def test_linear_probe_on_clip_image_features(tmp_path, image_folder, flat_images, tiny_clip):
    run = hs.adapt(image_folder, backbone=str(tiny_clip), out=tmp_path / "out")
    m = run.manifest
    assert (m["task"], m["method"]["name"], m["backbone"]["spec"]["family"]) == ("classification", "linear-probe", "clip")
    assert m["method"]["fit"]["trainable_params"] == 2 * (16 + 1)  # a head on the 16-d projected embedding
    preds = run.predict(flat_images[0])
    assert preds.probabilities.shape == (6, 2)


# -- zero-shot ---------------------------------------------------------------------------------


def test_zero_shot_run_is_a_classification_run_folder_with_no_training(zero_shot_run):
    m = zero_shot_run.manifest
    assert (m["task"], m["method"]["name"], m["modality"], m["classes"]) == ("zero-shot", "frozen", "image", ["blue", "red"])
    assert m["method"]["fit"]["trainable_params"] == 0 and m["method"]["fit"]["steps"] == 0
    body = zero_shot_run.open_model()[1].module
    assert m["method"]["fit"]["frozen_params"] == sum(p.numel() for p in body.parameters())  # counted before loading
    assert m["task_info"] == {"templates": list(DEFAULT_TEMPLATES)}
    summary = m["metrics"]["test"]["summary"]
    assert summary["n"] == m["data"]["split"]["test"] > 0
    for name in ("accuracy", "macro_f1"):
        assert 0 <= summary[f"{name}_ci"][0] <= summary[name] <= summary[f"{name}_ci"][1] <= 1
    inputs, proba = _probabilities(zero_shot_run)
    assert len(inputs) == summary["n"]
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)


def test_zero_shot_probabilities_equal_a_direct_computation(zero_shot_run, tiny_clip):
    inputs, proba = _probabilities(zero_shot_run)
    np.testing.assert_allclose(proba, _direct(tiny_clip, inputs, zero_shot_run.classes, DEFAULT_TEMPLATES), atol=1e-5)


def test_siglip_zero_shot_with_own_templates_equals_a_direct_computation(tmp_path, image_folder, tiny_siglip):
    templates = ["a photo of a {label}.", "my {label} cat"]
    run = hs.adapt(image_folder, task="zero-shot", backbone=str(tiny_siglip), out=tmp_path / "out",
                   task_options={"templates": templates})
    assert run.manifest["task_info"] == {"templates": templates}
    inputs, proba = _probabilities(run)
    np.testing.assert_allclose(proba, _direct(tiny_siglip, inputs, run.classes, templates), atol=1e-5)


def test_templates_are_averaged_then_renormalised(tiny_clip):
    bb, _ = open_backbone(str(tiny_clip))
    a, b = "a photo of a {label}.", "the {label} cat"
    one = class_embeddings(bb, ["red", "blue"], [a])
    np.testing.assert_allclose(one, bb.embed_texts(["a photo of a red.", "a photo of a blue."]), atol=1e-6)
    np.testing.assert_allclose(class_embeddings(bb, ["red", "blue"], [a, a]), one, atol=1e-6)
    both = class_embeddings(bb, ["red"], [a, b])[0]
    ea, eb = bb.embed_texts(["a photo of a red.", "the red cat"])
    np.testing.assert_allclose(both, (ea + eb) / np.linalg.norm(ea + eb), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(class_embeddings(bb, ["big_dog"], [a, b]), axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(class_embeddings(bb, ["big_dog"], [a]), bb.embed_texts(["a photo of a big dog."]), atol=1e-6)


def test_probabilities_after_reload_equal_the_run(zero_shot_run):
    """The class embeddings come from the recorded templates and classes; no tensors are saved."""
    inputs, proba = _probabilities(zero_shot_run)
    again = hs.load(zero_shot_run.path)
    method, bb = again.open_model()
    assert again._tensors == {}
    data = again.as_dataset(inputs, labels_required=False)
    np.testing.assert_allclose(again.task.frozen_proba(bb, data, again.fit_context()), proba, atol=1e-5)


def test_predict_after_reload_and_cli_predict(zero_shot_run, flat_images, cli):
    folder, _ = flat_images
    paths = sorted(str(p) for p in folder.iterdir())
    preds = hs.load(zero_shot_run.path).predict(paths)
    bb = zero_shot_run.open_model()[1]
    direct = zero_shot_run.task.frozen_proba(bb, zero_shot_run.as_dataset(paths, labels_required=False),
                                             zero_shot_run.fit_context())
    np.testing.assert_allclose(preds.probabilities, direct, atol=1e-6)
    result = cli("predict", zero_shot_run.path, folder)
    assert result.rc == 0, result
    assert "Frozen" not in result.err and result.out.startswith("input,label,p[blue],p[red]")


def test_cli_adapt_zero_shot_human_and_json(tmp_path, cli, image_folder, tiny_clip):
    store = tmp_path / "store.sqlite3"
    human = cli("adapt", image_folder, "--task", "zero-shot", "--backbone", tiny_clip, "--out", tmp_path / "out",
                "--store", store)
    assert human.rc == 0, human
    assert "method frozen" in human.out and "test accuracy" in human.out
    assert "6 test, 2 classes, 3 prompt templates (zero-shot: the 26 train/validation examples are not used)" in human.out
    made = cli("adapt", image_folder, "--task", "zero-shot", "--backbone", tiny_clip, "--out", tmp_path / "out",
               "--store", store, "--json", "--task-set", 'templates=["a picture of a {label}."]')
    assert made.rc == 0, made
    doc = made.json()
    assert doc["manifest"]["task"] == "zero-shot" and doc["manifest"]["method"]["name"] == "frozen"
    assert doc["manifest"]["task_info"] == {"templates": ["a picture of a {label}."]}
    assert doc["manifest"]["metrics"]["test"]["summary"]["n"] == 6
    evaluated = cli("eval", doc["path"], image_folder, "--store", store, "--json")
    assert evaluated.rc == 0, evaluated
    assert evaluated.json()["metrics"]["n"] == 32 and "accuracy_ci" in evaluated.json()["metrics"]


@pytest.mark.parametrize("args, needles", [
    (("--method", "finetune"), ("'zero-shot' trains nothing", "--method frozen")),
    (("--method", "linear-probe"), ("does not adapt for the task 'zero-shot'",)),
    (("--task-set", "templates=a photo"), ("needs a {label} field",)),
    (("--task-set", "templates=a {label} of {kind}"), ("a field other than {label}",)),
])
def test_zero_shot_refusals_are_one_line(tmp_path, cli, assert_bad_input, image_folder, tiny_clip, args, needles):
    out = tmp_path / "out"
    result = cli("adapt", image_folder, "--task", "zero-shot", "--backbone", tiny_clip, "--out", out, *args)
    assert_bad_input(result, *needles, out_dir=out)


def test_zero_shot_refuses_a_backbone_that_is_not_a_dual_encoder(tmp_path, cli, assert_bad_input, image_folder, tiny_vit,
                                                                 tiny_bert):
    out = tmp_path / "out"
    vit = cli("adapt", image_folder, "--task", "zero-shot", "--backbone", tiny_vit, "--out", out)
    assert_bad_input(vit, "needs an image-text dual encoder", "(hf-image) is not one", "CLIP or SigLIP", out_dir=out)
    bert = cli("adapt", image_folder, "--task", "zero-shot", "--backbone", tiny_bert, "--out", out)
    assert_bad_input(bert, "takes text", out_dir=out)
    none = cli("adapt", image_folder, "--task", "zero-shot", "--out", out)
    assert_bad_input(none, "no default backbone", out_dir=out)


@pytest.mark.parametrize("method", ["lora", "finetune"])
def test_trained_methods_on_a_clip_backbone_adapt_the_image_tower_only(method, tiny_clip, image_folder, tmp_path):
    """Image classification on a dual encoder trains its image side: the text tower is neither
    counted as trainable nor changed, and LoRA targets only vision blocks."""
    opts = {"epochs": 2, "batch_size": 8, "lr": 1e-3, "patience": 10}
    run = hs.adapt(image_folder, backbone=str(tiny_clip), method=method, method_options=opts, out=tmp_path / "runs")
    method_obj, bb = run.open_model()
    fit = run.manifest["method"]["fit"]
    tower = bb.feature_module
    vision = sum(p.numel() for p in tower.parameters())
    text = sum(p.numel() for p in bb.module.text_model.parameters())
    head = len(run.classes) * (bb.feature_dim + 1)
    if method == "finetune":
        assert fit["trainable_params"] == vision + head  # the whole image tower and the head, not the text tower
    assert text > 0 and all("text_model" not in k for k in method_obj.state_dict())
    assert all(k.startswith(("body.vision_model.", "body.visual_projection.", "head.")) for k in method_obj.state_dict())
    if method == "lora":
        assert all(name.startswith("vision_model.") for name, _ in method_obj.targets_)
