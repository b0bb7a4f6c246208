"""Trained methods on a convolutional image backbone (EfficientNet-Lite0, randomly initialised by
the package's ``from_name``, at 32 px) and training-time image augmentation.

LoRA/DoRA adapt the MBConv blocks' pointwise convs, adapters follow their projection convs,
batch norms stay frozen for those; finetune and scratch train everything, statistics included.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import headstart as hs
from headstart.backbones.vision import load_image
from headstart.catalog import CATALOG, ImagePreprocessing
from headstart.errors import BadInput
from headstart.methods._layers import ADAPTABLE, LoRAConv2d, adapter_targets, linear_targets, lora_layer, replace_module

efficientnet_lite = pytest.importorskip("efficientnet_lite_pytorch")

FAST = {"epochs": 4, "batch_size": 8, "head_init": "zero", "lr": 3e-3, "head_lr": 3e-2, "eval_every": 1.0}
CONV = {**FAST, "lr": 1e-3, "head_lr": 3e-3}
"""The random EfficientNet's 1280 features need a smaller head rate than the tiny ViT's 32 (3e-2
overshot: validation loss 0.35 -> 1.1 within 4 epochs)."""
PRE = ImagePreprocessing(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def lite0() -> nn.Module:
    """A random EfficientNet-Lite0 whose batch norms hold statistics of random 32 px images (with
    the initial running statistics, activations vanish through the 16 blocks), like a trained net's."""
    torch.manual_seed(1234)  # not a run's seed: scratch's re-initialisation must differ from these weights
    m = efficientnet_lite.EfficientNet.from_name("efficientnet-lite0")
    norms = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    momenta = [b.momentum for b in norms]
    for b in norms:
        b.momentum = None  # a cumulative average over the calibration batches
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m.extract_features(torch.randn(16, 3, 32, 32))
    for b, mom in zip(norms, momenta, strict=True):
        b.momentum = mom
    return m.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random EfficientNet-Lite0 state dict in the package's weight-file format."""
    path = tmp_path_factory.mktemp("effnet") / "lite0-random.pth"
    torch.save(lite0().state_dict(), path)
    return path


@pytest.fixture
def effnet(weights, monkeypatch):
    """The catalog's efficientnet-lite0 entry pointed at the random weights, at 32 px."""
    spec = replace(CATALOG["efficientnet-lite0"], source_kind="local", source=str(weights), preprocessing=PRE,
                   pinned_sha256=None)
    monkeypatch.setitem(CATALOG, "efficientnet-lite0", spec)
    return "efficientnet-lite0"


def adapt(tmp_path, data, backbone, method, **opts):
    return hs.adapt(data, backbone=backbone, method=method, out=tmp_path / "out", method_options={**CONV, **opts})


def mean_true_class_loss(run, folder) -> float:
    """Cross-entropy of the run's predictions on the labelled folder (a zero head gives log 2)."""
    paths = sorted(folder.glob("*/*.png"))
    preds = run.predict([str(p) for p in paths])
    idx = [run.classes.index(p.parent.name) for p in paths]
    return float(-np.mean(np.log(preds.probabilities[np.arange(len(idx)), idx] + 1e-12)))


def bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers() if "running_" in n}


# -- targets and layers ----------------------------------------------------------------------------


def test_lora_and_adapter_targets_in_mbconv_blocks():
    m = lite0()
    targets = linear_targets(m, None, what="lora", kinds=ADAPTABLE)
    assert sorted({rel for _, rel in targets}) == ["_expand_conv", "_project_conv"]
    assert len(targets) == 16 + 15  # every block projects; the first has no expansion
    assert all(full.startswith("_blocks.") for full, _ in targets)  # not the stem or head conv
    assert [rel for _, rel in adapter_targets(m, None)] == ["_project_conv"] * 16
    with pytest.raises(BadInput, match="no nn.Linear layers to adapt .*lora, dora and adapter adapt pointwise convs"):
        linear_targets(m, None, what="qlora")  # 4-bit quantisation is of linear layers only
    with pytest.raises(BadInput, match="none of targets=query.*_expand_conv, _project_conv"):
        linear_targets(m, ["query"], what="lora", kinds=ADAPTABLE)


def test_lora_conv_refuses_a_spatial_conv():
    with pytest.raises(BadInput, match="pointwise"):
        LoRAConv2d(nn.Conv2d(4, 4, 3), rank=2, alpha=4, dropout=0.0)
    with pytest.raises(BadInput, match="pointwise"):
        LoRAConv2d(nn.Conv2d(4, 4, 1, groups=2), rank=2, alpha=4, dropout=0.0)


@pytest.mark.parametrize("dora", [False, True])
def test_lora_conv_starts_at_base_and_merges_exactly(dora):
    torch.manual_seed(0)
    base = nn.Conv2d(6, 5, 1, bias=True)
    x = torch.randn(2, 6, 4, 3)
    layer = LoRAConv2d(base, rank=3, alpha=6, dropout=0.0, dora=dora)
    torch.testing.assert_close(layer(x), base(x))
    with torch.no_grad():
        layer.lora_B.normal_(std=0.5)
        if dora:
            layer.magnitude.mul_(1.3)
    y = layer(x)
    assert not torch.allclose(y, base(x))
    merged = layer.merged()
    assert type(merged) is nn.Conv2d and merged.weight.shape == (5, 6, 1, 1)
    torch.testing.assert_close(merged(x), y, rtol=1e-5, atol=1e-5)
    # LoRALinear's math: the conv update is the linear update at every pixel
    lin = nn.Linear(6, 5)
    with torch.no_grad():
        lin.weight.copy_(base.weight.flatten(1))
        lin.bias.copy_(base.bias)
    twin = lora_layer(lin, rank=3, alpha=6, dropout=0.0, dora=dora)
    twin.load_state_dict({k: v.flatten(1) if k == "base.weight" else v for k, v in layer.state_dict().items()})
    torch.testing.assert_close(twin(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dora", [False, True])
def test_merged_efficientnet_equals_unmerged(dora):
    """In float64: through 16 blocks float32 rounding alone reaches ~1e-5 of the features' scale."""
    m = lite0().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for name, _ in linear_targets(m, None, what="lora", kinds=ADAPTABLE):
        layer = lora_layer(m.get_submodule(name), rank=4, alpha=8, dropout=0.0, dora=dora).double()
        with torch.no_grad():
            layer.lora_B.normal_(std=0.05)
        replace_module(m, name, layer)
    with torch.no_grad():
        y = m.extract_features(x)
        for name, mod in list(m.named_modules()):
            if isinstance(mod, LoRAConv2d):
                replace_module(m, name, mod.merged().double())
        merged = m.extract_features(x)
    assert not any(isinstance(mod, LoRAConv2d) for mod in m.modules())
    scale = y.abs().max()
    assert scale > 0
    assert float((merged - y).abs().max() / scale) < 1e-5


# -- methods end to end ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_lora_on_efficientnet_trains_the_convs_and_head_only(tmp_path, effnet, image_folder, method):
    run = adapt(tmp_path, image_folder, effnet, method, rank=4, alpha=8.0)
    fit = run.manifest["method"]["fit"]
    assert fit["target_layers"] == ["_expand_conv", "_project_conv"] and fit["target_count"] == 31
    model = run.open_model()[0].model_
    layers = [m for m in model.body.modules() if isinstance(m, LoRAConv2d)]
    expected = sum(4 * (m.in_features + m.out_features) + (m.out_features if method == "dora" else 0) for m in layers)
    assert fit["trainable_params"] == expected + 2 * (1280 + 1)  # + the head
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(("lora_" in n or "magnitude" in n) or n.startswith("head.") for n in trained)
    # frozen batch norms keep their (pretrained) statistics: the run saves no buffers
    for (n, b), (_, b0) in zip(bn_stats(model.body).items(), bn_stats(lite0()).items(), strict=True):
        torch.testing.assert_close(b, b0, msg=n)
    assert mean_true_class_loss(run, image_folder) < 0.9 * np.log(2)  # learnt from the zero head
    again = hs.load(run.path).predict(image_folder)
    np.testing.assert_allclose(again.probabilities, run.predict(image_folder).probabilities, atol=1e-6)


def test_adapter_on_efficientnet(tmp_path, effnet, image_folder):
    run = adapt(tmp_path, image_folder, effnet, "adapter", bottleneck=8)
    fit = run.manifest["method"]["fit"]
    assert fit["target_layers"] == ["_project_conv"] and fit["adapter_count"] == 16
    model = run.open_model()[0].model_
    outs = [b._project_conv.out_channels for b in lite0()._blocks]
    assert fit["trainable_params"] == sum(2 * c * 8 + 8 + c for c in outs) + 2 * (1280 + 1)
    for (n, b), (_, b0) in zip(bn_stats(model.body).items(), bn_stats(lite0()).items(), strict=True):
        torch.testing.assert_close(b, b0, msg=n)
    assert mean_true_class_loss(run, image_folder) < 0.9 * np.log(2)
    again = hs.load(run.path).predict(image_folder)
    np.testing.assert_allclose(again.probabilities, run.predict(image_folder).probabilities, atol=1e-6)


@pytest.mark.parametrize("method", ["finetune", "scratch"])
def test_finetune_and_scratch_on_efficientnet_train_the_batch_norms(tmp_path, effnet, image_folder, method):
    # layer_decay: the 16 MBConv blocks are the layers (stem below them, head conv above)
    run = adapt(tmp_path, image_folder, effnet, method, epochs=2, lr=1e-4, patience=100, layer_decay=0.8)
    model = run.open_model()[0].model_
    start = lite0()
    moved = [n for (n, b), (_, b0) in zip(bn_stats(model.body).items(), bn_stats(start).items(), strict=True)
             if not torch.allclose(b, b0)]
    assert moved  # train-mode batch norms updated their statistics, and the run saved them
    assert run.manifest["method"]["fit"]["steps"] == 6  # it runs (learning a random body in 6 steps is not checked)
    if method == "scratch":  # re-initialised by the package's from_name, not the saved weights
        w, w0 = model.body._conv_stem.weight, start._conv_stem.weight
        assert not torch.allclose(w, w0)
    again = hs.load(run.path).predict(image_folder)
    np.testing.assert_allclose(again.probabilities, run.predict(image_folder).probabilities, atol=1e-6)


def test_unknown_efficientnet_variant_is_one_line(weights):
    from headstart.backbones.vision import EfficientNetLiteBackbone

    spec = replace(CATALOG["efficientnet-lite0"], name="my-effnet", source_kind="local", source=str(weights))
    with pytest.raises(BadInput, match="my-effnet.*efficientnet-lite0, efficientnet-lite1"):
        EfficientNetLiteBackbone(spec, weights, torch.device("cpu")).load()


# -- augmentation -----------------------------------------------------------------------------------


def test_load_image_augmentation_is_seeded_and_changes_only_training_inputs(image_folder):
    path = str(sorted((image_folder / "red").iterdir())[0])
    plain = load_image(path, PRE)
    np.testing.assert_array_equal(load_image(path, PRE), plain)  # evaluation inputs: deterministic
    a = load_image(path, PRE, np.random.default_rng(1))
    b = load_image(path, PRE, np.random.default_rng(1))
    c = load_image(path, PRE, np.random.default_rng(2))
    assert a.shape == plain.shape == (3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, plain) and not np.array_equal(a, c)


def test_classification_augment_option_on_training_batches_only(tmp_path, image_folder, tiny_vit):
    from headstart.backbones import open_backbone
    from headstart.data import load_dataset
    from headstart.methods import FitContext
    from headstart.methods.lora import LoRAConfig
    from headstart.tasks import get_task

    task = get_task("classification")
    bb, _ = open_backbone(str(tiny_vit))
    data = load_dataset(image_folder)

    def batches(augment: str, seed: int):
        ctx = FitContext(backbone_hash="x", precision="fp32", seed=seed, classes=data.classes,
                         task_info={"augment": augment})
        model = task.build_model(bb, LoRAConfig(dropout=0.0), ctx)
        plan = task.training(model, data, data, LoRAConfig(dropout=0.0), ctx)
        train = [plan.collate([0, 1, 2])["pixel_values"] for _ in range(2)]
        seen = []
        original = bb.collate
        bb.collate = lambda prepared: seen.append(prepared) or original(prepared)
        try:
            with torch.no_grad():
                plan.objective.evaluate(model)
        finally:
            bb.collate = original
        return train, plan.record, seen

    plain, record, _ = batches("none", 0)
    first, record_aug, val_seen = batches("crop-flip", 0)
    again, _, _ = batches("crop-flip", 0)
    other, _, _ = batches("crop-flip", 1)
    assert record == {} and record_aug == {"augment": "crop-flip"}
    torch.testing.assert_close(plain[0], plain[1])  # no augmentation: every pass the same pixels
    assert not torch.equal(first[0], plain[0]) and not torch.equal(first[0], first[1])
    for x, y in zip(first, again, strict=True):
        torch.testing.assert_close(x, y)  # reproducible from the seed
    assert not torch.equal(first[0], other[0])
    assert val_seen  # validation went through the plain (unaugmented) collate


def test_augment_option_end_to_end_and_refusals(tmp_path, image_folder, tiny_vit, train_csv):
    run = hs.adapt(image_folder, backbone=str(tiny_vit), method="lora", out=tmp_path / "out",
                   task_options={"augment": "crop-flip"}, method_options={**FAST, "epochs": 2})
    assert run.manifest["method"]["fit"]["augment"] == "crop-flip"
    assert run.manifest["task_info"] == {"augment": "crop-flip"}
    again = hs.load(run.path).predict(image_folder)  # prediction is never augmented
    np.testing.assert_allclose(again.probabilities, run.predict(image_folder).probabilities, atol=1e-6)
    with pytest.raises(BadInput, match="augment=crop-flip changes training batches.*linear-probe"):
        hs.adapt(image_folder, backbone=str(tiny_vit), out=tmp_path / "o2", task_options={"augment": "crop-flip"})
    with pytest.raises(BadInput, match="augment=crop-flip augments images, and this data holds text"):
        hs.adapt(train_csv, backbone=str(tiny_vit), method="lora", out=tmp_path / "o4", task_options={"augment": "crop-flip"})
    with pytest.raises(BadInput, match="augment must be one of none, crop-flip"):
        hs.adapt(image_folder, backbone=str(tiny_vit), method="lora", out=tmp_path / "o3", task_options={"augment": "mixup"})


def test_qlora_refuses_a_convolutional_net_in_one_line(tmp_path, effnet, image_folder):
    pytest.importorskip("bitsandbytes")
    with pytest.raises(BadInput, match="qlora: the blocks of EfficientNet have no nn.Linear layers.*lora, dora and adapter"):
        adapt(tmp_path, image_folder, effnet, "qlora")


def test_parallel_image_decoding_keeps_order_and_draws(image_folder, monkeypatch):
    from headstart.backbones.vision import WORKERS_ENV, image_workers, load_images

    paths = [str(p) for p in sorted(image_folder.glob("*/*.png"))[:10]]
    monkeypatch.setenv(WORKERS_ENV, "1")
    one = load_images(paths, PRE)
    one_aug = load_images(paths, PRE, np.random.default_rng(5))
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert image_workers() == 3
    np.testing.assert_array_equal(load_images(paths, PRE), one)
    np.testing.assert_array_equal(load_images(paths, PRE, np.random.default_rng(5)), one_aug)
    np.testing.assert_array_equal(one[4], load_image(paths[4], PRE))
    monkeypatch.setenv(WORKERS_ENV, "0")
    with pytest.raises(BadInput, match="HEADSTART_IMAGE_WORKERS='0'.*>= 1"):
        image_workers()


@pytest.mark.parametrize("name", [n for n in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2") if n in CATALOG])
def test_efficientnet_entries_match_their_variant(name):
    """Each entry's name is the architecture the loader builds: its parameter count and input size
    are the package's for that variant (lite1/lite2 weights are optional packages)."""
    spec = CATALOG[name]
    model = efficientnet_lite.EfficientNet.from_name(name)
    assert spec.family == "efficientnet-lite" and spec.modality == "image"
    assert sum(p.numel() for p in model.parameters()) == spec.params
    assert spec.preprocessing.image_size == efficientnet_lite.EfficientNet.get_image_size(name)


def test_cli_task_set_augment(tmp_path, cli, image_folder, tiny_vit):
    made = cli("adapt", image_folder, "--backbone", tiny_vit, "--method", "finetune", "--out", tmp_path / "out",
               "--task-set", "augment=crop-flip", "--set", "epochs=1", "--set", "head_init=zero", "--json")
    assert made.rc == 0, made
    run = hs.load(made.json()["path"])
    assert run.manifest["method"]["fit"]["augment"] == "crop-flip"


@pytest.fixture(scope="module")
def tiny_convnext(tmp_path_factory):
    """A random 2-stage ConvNeXt (its blocks' pointwise layers are nn.Linear over channels), as an HF folder."""
    import json

    from transformers import ConvNextConfig, ConvNextModel

    folder = tmp_path_factory.mktemp("convnext") / "convnext"
    torch.manual_seed(0)
    ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[2, 1], num_stages=2, image_size=32, patch_size=4)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 32}, "crop_pct": 1.0,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    return folder


@pytest.mark.parametrize("method", ["lora", "adapter", "finetune", "scratch"])
def test_convnext_folders_take_the_whole_menu(tmp_path, tiny_convnext, image_folder, method):
    """ConvNeXt stages hold layers whose pointwise convs are linear layers: LoRA adapts them, an
    adapter follows each layer's second one (``layers.N.pwconv2``), and the body trains whole."""
    opts = {"rank": 4, "alpha": 8.0} if method == "lora" else {"bottleneck": 4} if method == "adapter" else {}
    run = hs.adapt(image_folder, backbone=str(tiny_convnext), method=method, out=tmp_path / "out",
                   method_options={**FAST, **opts})
    fit = run.manifest["method"]["fit"]
    if method == "lora":
        assert fit["target_layers"] == ["layers.0.pwconv1", "layers.0.pwconv2", "layers.1.pwconv1", "layers.1.pwconv2"]
    if method == "adapter":
        assert fit["target_layers"] == ["layers.0.pwconv2", "layers.1.pwconv2"] and fit["adapter_count"] == 3
    assert mean_true_class_loss(run, image_folder) < np.log(2)
    again = hs.load(run.path).predict(image_folder)
    np.testing.assert_allclose(again.probabilities, run.predict(image_folder).probabilities, atol=1e-6)


def test_folded_batch_norms_give_the_same_features_and_follow_the_weights():
    from headstart.backbones.vision import fold_batch_norms

    m = lite0()
    folded = fold_batch_norms(m)
    assert not any(isinstance(b, nn.BatchNorm2d) for b in folded.modules())
    assert sum(isinstance(b, nn.BatchNorm2d) for b in m.modules()) == 49  # the original is untouched
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref, got = m.extract_features(x), folded.extract_features(x)
    assert torch.allclose(ref, got, atol=1e-4 * float(ref.abs().max()))
    # A wrapped conv (LoRA) keeps its batch norm: folding it would skip the update's output.
    replace_module(m, "_blocks.1._expand_conv", lora_layer(m._blocks[1]._expand_conv, rank=2, alpha=2, dropout=0.0))
    partly = fold_batch_norms(m)
    assert isinstance(partly._blocks[1]._bn0, nn.BatchNorm2d) and isinstance(partly._blocks[1]._bn1, nn.Identity)


def test_embed_folds_once_per_state_of_the_weights(effnet, image_folder, monkeypatch):
    from headstart.backbones import open_backbone

    monkeypatch.setenv("HEADSTART_IMAGE_BATCH", "3")
    bb, _ = open_backbone(effnet)
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))[:7]
    first = bb.embed(paths)
    folded = bb._folded[2]
    assert np.allclose(bb.embed(paths), first) and bb._folded[2] is folded  # reused
    with torch.no_grad():
        bb.module._conv_head.weight.mul_(2.0)  # a training step changes the weights in place
    changed = bb.embed(paths)
    assert bb._folded[2] is not folded and not np.allclose(changed, first)
    bb.inference_module = lambda module: module  # unfolded, the same numbers
    assert np.allclose(bb.embed(paths), changed, atol=1e-4 * float(np.abs(changed).max()))


def test_batch_size_is_measured_once_stored_and_reused(tmp_path, monkeypatch):
    from headstart.backbones import batch_size as bsz

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(bsz.BATCH_ENV, raising=False)
    cpu = torch.device("cpu")
    n = bsz.TUNE_FACTOR * bsz.TRIALS * sum(bsz.CPU_CANDIDATES)
    assert bsz.plan_batches(n - 1, {"x": 1}, cpu, "fp32", 16).rest() == [list(range(i, min(i + 16, n - 1))) for i in range(0, n - 1, 16)]
    plan = bsz.plan_batches(n, {"x": 1}, cpu, "fp32", 16)
    assert [len(b) for b in plan.trials] == [s for s in bsz.CPU_CANDIDATES for _ in range(bsz.TRIALS)]
    for batch in plan.trials:  # size 4 fastest per image; every first batch of a size slow (kernels)
        plan.record(batch, (10.0 if len(plan.timings.get(len(batch), [])) == 0 else 1.0) * len(batch) / (4.0 if len(batch) == 4 else 1.0))
    rest = plan.rest()
    assert plan.size == 4 and rest[0][0] == sum(len(b) for b in plan.trials) and rest[-1][-1] == n - 1
    assert all(len(b) == 4 for b in rest[:-1])
    again = bsz.plan_batches(n, {"x": 1}, cpu, "fp32", 16)
    assert again.trials == [] and again.size == 4  # stored: no trials the second time
    assert bsz.plan_batches(n, {"x": 2}, cpu, "fp32", 16).trials  # another backbone measures its own
    monkeypatch.setenv(bsz.BATCH_ENV, "5")
    assert bsz.plan_batches(n, {"x": 1}, cpu, "fp32", 16).size == 5
    monkeypatch.setenv(bsz.BATCH_ENV, "zero")
    with pytest.raises(BadInput, match="HEADSTART_IMAGE_BATCH='zero'"):
        bsz.plan_batches(n, {"x": 1}, cpu, "fp32", 16)


def test_an_unwritable_cache_only_costs_the_measurement_next_time(tmp_path, monkeypatch, capsys):
    from headstart.backbones import batch_size as bsz

    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")  # mkdir fails, as root too
    monkeypatch.setenv("HEADSTART_CACHE", str(blocked))
    bsz.store_size("k", 4, {4: 10.0})
    assert "could not store the measured batch size" in capsys.readouterr().err
    assert bsz.cached_size("k") is None
