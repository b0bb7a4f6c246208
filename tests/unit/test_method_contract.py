"""One contract, every registered (task, method) pair (scikit-learn's parametrize_with_checks idea).

For each method, on each task it declares, on a tiny random BERT: it learns a learnable toy task
(classification: sentiment words; retrieval: queries naming a topic whose document uses another
word), save -> load predicts / embeds identically, a backbone with other weights is refused, the
trainable count is what the method documents, and (for trained methods) an interrupted + resumed
fit ends with the same weights as an uninterrupted one.
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

TEXT_TASKS = ("classification", "retrieval", "similarity")
"""The tasks this contract's toy data and tiny BERT serve; speech recognition (tiny Whisper, tone
clips) has its own method checks in test_asr_task.py."""
ALL = [(task, m) for m in sorted(METHODS) for task in METHODS[m].supported_tasks() if task in TEXT_TASKS]
TRAINED = [(t, m) for t, m in ALL if issubclass(METHODS[m], TrainedMethod)]
RESUMABLE = sorted([*TRAINED, ("classification", "contrastive")])  # contrastive trains through the same trainer
FAST = {"epochs": 4, "batch_size": 8, "head_init": "zero", "lr": 3e-3, "head_lr": 3e-2, "eval_every": 1.0}
RETRIEVAL_FAST = {"epochs": 4, "batch_size": 10, "lr": 1e-2, "eval_every": 1.0}
RETRIEVAL_LR = {"finetune": 1e-3, "scratch": 1e-3, "dora": 5e-3, "qlora": 5e-3}
"""Rates that learn the toy retrieval task on the tiny body (full fine-tuning diverges at 1e-2).
DoRA and QLoRA at 1e-2 for 8 epochs were seed-fragile (test nDCG@10 over seeds 0-3: DoRA
0.81-0.97, QLoRA collapsing to 0.52 on one seed, with either no-duplicate sampler); at 5e-3 for 12
epochs DoRA gave 0.87-0.98 and QLoRA 0.95-1.0."""
RETRIEVAL_SLOW = {"adapter": {"epochs": 20, "patience": 100}, "dora": {"epochs": 12}, "qlora": {"epochs": 12}}
TEXTS = ["good movie", "the food was awful", "i love this film", "bad delivery"]


CONTRASTIVE = {"steps": 8, "batch_size": 16, "lr": 1e-3}


def options(method: str, task: str = "classification", **extra) -> dict:
    if method in ("linear-probe", "frozen"):
        return {}
    if task in ("retrieval", "similarity"):  # the same encoder model, no head options
        return {**RETRIEVAL_FAST, "lr": RETRIEVAL_LR.get(method, RETRIEVAL_FAST["lr"]), **extra}
    if method == "contrastive":  # no epochs: a number of contrastive steps
        return {**CONTRASTIVE, **({"steps": 2 * extra["epochs"]} if "epochs" in extra else {})}
    return {**FAST, **extra}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, data_helpers, retrieval_helpers):
    sentiment_rows, write_table = data_helpers
    root = tmp_path_factory.mktemp("contract")
    return {"classification": write_table(root / "train.csv", sentiment_rows(80, seed=3)),
            "retrieval": write_table(root / "pairs.csv", retrieval_helpers(seed=3), ("query", "positive")),
            "similarity": write_table(root / "sts.csv", retrieval_helpers.similarity(seed=3), ("sentence1", "sentence2", "score"))}


@pytest.fixture
def backbone(tiny_bert, tmp_path):
    """A private copy of the tiny BERT (some tests change its weights)."""
    dst = tmp_path / "bb"
    shutil.copytree(tiny_bert, dst)
    return dst


def adapt(datasets, task, backbone, method, **kw):
    return hs.adapt(datasets[task], task=task, backbone=str(backbone), method=method,
                    method_options=options(method, task, **kw.pop("opts", {})), **kw)


def outputs(run) -> np.ndarray:
    """What the run gives for TEXTS: class probabilities, or embeddings for a task without labels."""
    return run.predict(TEXTS).probabilities if run.task.predicts else run.embed(TEXTS)


@pytest.mark.parametrize("task, method", ALL)
def test_learns_the_toy_task(task, method, datasets, backbone):
    # Bottleneck adapters move a random 32-d body slowly: more epochs, no early stop.
    slow = {"epochs": 20, "patience": 100} if (task, method) == ("similarity", "finetune") else \
        RETRIEVAL_SLOW.get(method, {}) if task == "retrieval" else {}
    run = adapt(datasets, task, backbone, method, opts={"epochs": 8, **slow})
    fit = run.manifest["method"]["fit"]
    if task == "similarity":  # CoSENT on scored pairs: the tiny body learns the relation fully only when all of it trains
        rho = run.metrics["test"]["summary"]["spearman"]
        zero_shot = adapt(datasets, task, backbone, "frozen").metrics["test"]["summary"]["spearman"]
        if method == "frozen":
            assert -1 <= rho <= 1 and fit["steps"] == 0
        elif method == "finetune":
            assert rho >= 0.5 and rho > zero_shot + 0.3, (rho, zero_shot, fit["history"])
        else:
            losses = [h["val_loss"] for h in fit["history"]]
            assert min(losses[1:]) < losses[0], losses
        return
    if task == "retrieval":
        ndcg = run.metrics["test"]["summary"]["ndcg@10"]
        zero_shot = adapt(datasets, task, backbone, "frozen").metrics["test"]["summary"]["ndcg@10"]
        if method == "frozen":  # the zero-shot baseline: a random body ranks ten topics near chance
            assert 0 < ndcg < 0.8 and fit["steps"] == 0
        elif method == "scratch":  # a re-initialised body: only ask that training lowered the loss
            assert fit["history"][-1]["val_loss"] < fit["history"][0]["val_loss"] or fit["best_step"] > 0
        elif method == "adapter":
            assert ndcg > zero_shot + 0.1, (ndcg, zero_shot, fit["history"])
        else:
            floor = 0.85 if method == "dora" else 0.9  # DoRA: 0.87 on seed 0 (see RETRIEVAL_LR)
            assert ndcg >= floor and ndcg > zero_shot + 0.2, (ndcg, zero_shot, fit["history"])
        return
    if method == "scratch":
        # No pretrained features to lean on: only ask that training lowered the loss.
        assert fit["history"][-1]["val_loss"] < fit["history"][0]["val_loss"] or fit["best_step"] > 0
        return
    assert run.metrics["test"]["summary"]["accuracy"] >= 0.75, fit
    if (task, method) in TRAINED:
        losses = [h["val_loss"] for h in fit["history"]]
        assert min(losses[1:]) < losses[0], losses  # the loss went down from the zero-initialised head


@pytest.mark.parametrize("task, method", ALL)
def test_save_load_predicts_identically(task, method, datasets, backbone):
    run = adapt(datasets, task, backbone, method)
    np.testing.assert_array_equal(outputs(run), outputs(hs.load(run.path)))
    # The test predictions written at fit time agree with a fresh load too.
    assert run.manifest["files"]["weights.safetensors"]


@pytest.mark.parametrize("task, method", ALL)
def test_other_backbone_weights_are_refused(task, method, datasets, backbone):
    run = adapt(datasets, task, backbone, method)
    from safetensors.torch import load_file as load, save_file

    weights = backbone / "model.safetensors"
    tensors = load(str(weights))
    name = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(weights))
    with pytest.raises(RunIntegrityError, match="the base changed"):
        outputs(hs.load(run.path))


def _expected_trainable(method: str, run, backbone) -> int:
    """The counts each method's docstring promises, recomputed from the architecture."""
    h, inter, layers = 32, 64, 2  # tiny_text_model(hidden=32, layers=2, intermediate=2*hidden)
    n_classes = len(run.classes)
    head = h * n_classes + n_classes if run.task.has_head else 0
    conf = run.manifest["method"]["config"]
    if method == "frozen":
        return 0
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


@pytest.mark.parametrize("task, method", ALL)
def test_trainable_count_is_documented(task, method, datasets, backbone):
    run = adapt(datasets, task, backbone, method, opts={"epochs": 1})
    fit = run.manifest["method"]["fit"]
    assert fit["trainable_params"] == _expected_trainable(method, run, backbone)
    saved = load_file(str(run.path / "weights.safetensors"))
    if method not in ("finetune", "scratch"):  # those also save the body's buffers
        assert sum(t.numel() for t in saved.values()) == fit["trainable_params"]


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("task, method", RESUMABLE)
def test_resume_reaches_the_same_weights(task, method, datasets, backbone, tmp_path):
    opts = {"epochs": 3, "batch_size": 8, "head_init": "zero", "patience": 100}
    if method == "contrastive":  # 12 steps of 16 (4 per "epoch"): the interrupt falls inside epoch 1
        opts = {**CONTRASTIVE, "steps": 12}
    if task == "retrieval":  # ~10 batches of <= 8 distinct documents per epoch: step 7 is inside epoch 1
        opts = {"epochs": 3, "batch_size": 8, "patience": 100}
    if task == "similarity":  # 140 pairs in batches of 32: 5 steps an epoch
        opts = {"epochs": 3, "batch_size": 32, "patience": 100}
    data = datasets[task]
    full = hs.adapt(data, task=task, backbone=str(backbone), method=method, method_options=opts, out=tmp_path / "a")

    def crash(step: int) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hs.adapt(data, task=task, backbone=str(backbone), method=method, method_options=opts, out=tmp_path / "b",
                 _on_step=crash)
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
