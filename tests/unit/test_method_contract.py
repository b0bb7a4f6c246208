"""One contract, every registered method (scikit-learn's parametrize_with_checks idea).

For each method on a tiny random BERT: it learns a learnable toy task, save -> load predicts
identically, a backbone with other weights is refused, the trainable count is what the method
documents, and (for trained methods) an interrupted + resumed fit ends with the same weights as
an uninterrupted one.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import headstart as hs
from headstart.errors import RunIntegrityError
from headstart.methods import METHODS
from headstart.methods.trained import TrainedMethod

ALL = sorted(METHODS)
TRAINED = [m for m in ALL if issubclass(METHODS[m], TrainedMethod)]
RESUMABLE = sorted([*TRAINED, "contrastive"])  # contrastive trains through the same trainer
FAST = {"epochs": 4, "batch_size": 8, "head_init": "zero", "lr": 3e-3, "head_lr": 3e-2, "eval_every": 1.0}


CONTRASTIVE = {"steps": 8, "batch_size": 16, "lr": 1e-3}


def options(method: str, **extra) -> dict:
    if method == "linear-probe":
        return {}
    if method == "contrastive":  # no epochs: a number of contrastive steps
        return {**CONTRASTIVE, **({"steps": 2 * extra["epochs"]} if "epochs" in extra else {})}
    return {**FAST, **extra}


@pytest.fixture(scope="module")
def data(tmp_path_factory, data_helpers):
    sentiment_rows, write_table = data_helpers

    root = tmp_path_factory.mktemp("contract")
    return write_table(root / "train.csv", sentiment_rows(80, seed=3))


@pytest.fixture
def backbone(tiny_bert, tmp_path):
    """A private copy of the tiny BERT (some tests change its weights)."""
    dst = tmp_path / "bb"
    shutil.copytree(tiny_bert, dst)
    return dst


def adapt(data, backbone, method, **kw):
    return hs.adapt(data, backbone=str(backbone), method=method, method_options=options(method, **kw.pop("opts", {})), **kw)


@pytest.mark.parametrize("method", ALL)
def test_learns_the_toy_task(method, data, backbone):
    run = adapt(data, backbone, method, opts={"epochs": 8})
    fit = run.manifest["method"]["fit"]
    if method == "scratch":
        # No pretrained features to lean on: only ask that training lowered the loss.
        assert fit["history"][-1]["val_loss"] < fit["history"][0]["val_loss"] or fit["best_step"] > 0
        return
    assert run.metrics["test"]["summary"]["accuracy"] >= 0.75, fit
    if method in TRAINED:
        losses = [h["val_loss"] for h in fit["history"]]
        assert min(losses[1:]) < losses[0], losses  # the loss went down from the zero-initialised head


@pytest.mark.parametrize("method", ALL)
def test_save_load_predicts_identically(method, data, backbone):
    run = adapt(data, backbone, method)
    texts = ["good movie", "the food was awful", "i love this film", "bad delivery"]
    before = run.predict(texts).probabilities
    again = hs.load(run.path).predict(texts).probabilities
    np.testing.assert_array_equal(before, again)
    # The test predictions written at fit time agree with a fresh load too.
    assert run.manifest["files"]["weights.safetensors"]


@pytest.mark.parametrize("method", ALL)
def test_other_backbone_weights_are_refused(method, data, backbone):
    run = adapt(data, backbone, method)
    from safetensors.torch import load_file as load, save_file

    weights = backbone / "model.safetensors"
    tensors = load(str(weights))
    name = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(weights))
    with pytest.raises(RunIntegrityError, match="the base changed"):
        hs.load(run.path).predict(["good movie"])


def _expected_trainable(method: str, run, backbone) -> int:
    """The counts each method's docstring promises, recomputed from the architecture."""
    h, inter, layers = 32, 64, 2  # tiny_text_model(hidden=32, layers=2, intermediate=2*hidden)
    n_classes = len(run.classes)
    head = h * n_classes + n_classes
    conf = run.manifest["method"]["config"]
    if method == "linear-probe":
        return head
    if method in ("lora", "dora", "qlora"):
        r = conf["rank"]
        shapes = [(h, h)] * 4 + [(h, inter), (inter, h)]  # q, k, v, attn-out, intermediate, output
        per_layer = sum(r * (i + o) for i, o in shapes)
        if method == "dora":
            per_layer += sum(o for _, o in shapes)
        return layers * per_layer + head
    if method == "adapter":
        b = conf["bottleneck"]
        per_adapter = 2 * h * b + b + h
        norms = (1 + 2 * layers) * 2 * h  # embeddings LayerNorm + two per block, weight and bias
        return layers * 2 * per_adapter + norms + head
    if method in ("finetune", "scratch", "contrastive"):
        from transformers import AutoModel

        body = AutoModel.from_pretrained(backbone)
        frozen = body.get_input_embeddings().weight.numel() if method == "contrastive" else 0  # token embeddings stay
        return sum(p.numel() for p in body.parameters()) - frozen + head
    raise AssertionError(f"no documented count for {method}")


@pytest.mark.parametrize("method", ALL)
def test_trainable_count_is_documented(method, data, backbone):
    run = adapt(data, backbone, method, opts={"epochs": 1})
    fit = run.manifest["method"]["fit"]
    assert fit["trainable_params"] == _expected_trainable(method, run, backbone)
    saved = load_file(str(run.path / "weights.safetensors"))
    if method not in ("finetune", "scratch"):  # those also save the body's buffers
        assert sum(t.numel() for t in saved.values()) == fit["trainable_params"]


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("method", RESUMABLE)
def test_resume_reaches_the_same_weights(method, data, backbone, tmp_path):
    opts = {"epochs": 3, "batch_size": 8, "head_init": "zero", "patience": 100}
    if method == "contrastive":  # 12 steps of 16 (4 per "epoch"): the interrupt falls inside epoch 1
        opts = {**CONTRASTIVE, "steps": 12}
    full = hs.adapt(data, backbone=str(backbone), method=method, method_options=opts, out=tmp_path / "a")

    def crash(step: int) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hs.adapt(data, backbone=str(backbone), method=method, method_options=opts, out=tmp_path / "b", _on_step=crash)
    partial = list((tmp_path / "b" / ".partial").iterdir())
    assert len(partial) == 1 and (partial[0] / "checkpoint.safetensors").is_file()
    resumed = hs.adapt(None, resume=partial[0].name[:22], out=tmp_path / "b")
    assert resumed.id == partial[0].name
    assert resumed.manifest["method"]["fit"]["resumed_from_step"] == 7
    assert not (tmp_path / "b" / ".partial").exists()
    a = load_file(str(full.path / "weights.safetensors"))
    b = load_file(str(resumed.path / "weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
