"""Cost model: predicted wall time and peak memory of adapting a backbone with a method, here.

Throughput is *measured* on this machine, once per (backbone weights, device, threads, precision)
and cached in ``<cache>/throughput.json``: tokens per second of the frozen forward pass
(encoding), and of a forward + backward pass through the whole body (training). Predictions
multiply those by what a method does with them:

* ``linear-probe``: encode train + validation + test once, then fit the head
  (``HEAD_S_PER_NDK`` seconds per example x feature x class, derived from banking77: the probe's
  24 s less ~18 s of encoding for 10k x 384 x 77; the plan study's predicted vs measured probe
  times, 5-10 s each, are in benchmarks/README.md);
* trained methods: a linear probe for the head's start, then ``epochs`` (from the size preset) x
  training examples through a training step at ``METHOD_SPEED[method]`` x the measured
  forward+backward rate, plus the validation passes and the test pass;
* ``contrastive``: its steps x examples per step through forward+backward (passed as the
  equivalent ``epochs``), then train + validation + test encoded once with the tuned body; no
  validation passes while it trains.

``METHOD_SPEED`` is each method's training throughput relative to full fine-tuning, from
benchmarks/README.md (banking77, MiniLM-L6, bf16, same machine): LoRA 159 vs 128 examples/s
(1.25), adapter 180 vs 119 (1.5), QLoRA 110 vs 119 (0.92). Memory: the process baseline
(``BASE_MB``), weights, and per method the
gradients and AdamW moments of what it trains. The predicted memory is not checked against a
measurement yet.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .._util import cache_dir

HEAD_S_PER_NDK = 2e-8
BASE_MB = 700.0
"""Process baseline: the linear probe's 799 MB peak RSS on banking77 less MiniLM's 91 MB of weights."""
METHOD_SPEED = {"finetune": 1.0, "scratch": 1.0, "lora": 1.25, "dora": 1.0, "qlora": 0.92, "adapter": 1.5, "contrastive": 1.0}
EVALS_PER_EPOCH = {"few": 0.5, "medium": 1.0, "large": 2.0}
"""Validation passes per epoch, as the presets' ``eval_every`` schedules them."""


@dataclass
class Throughput:
    infer_tokens_s: float
    train_tokens_s: float | None
    """None for backbones that give frozen features only."""
    device: str
    precision: str
    measured_at: str


def measure_throughput(backbone, backbone_hash: str, texts: list, precision: str) -> Throughput:
    """Tokens/s of encoding and (trainable backbones) of forward + backward; cached per weights."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    key = f"{backbone_hash}|{device}|{torch.get_num_threads()}|{precision}"
    path = cache_dir() / "throughput.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return Throughput(**cache[key])
    sample = list(texts[:96])
    costs = [backbone.cost(p) for p in backbone.prepare(sample)]
    # The same inputs three times: the first pass builds the kernels for each batch shape (oneDNN
    # compiles one per shape in bf16), the best of the other two is the steady rate.
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        backbone.embed(sample, precision=precision, desc="measuring encoding")
        times.append(time.perf_counter() - t0)
    infer = sum(costs) / max(min(times[1:]), 1e-6)
    train = _train_rate(backbone, sample, precision) if backbone.trains else None
    result = Throughput(infer, train, device, precision, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    cache[key] = asdict(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    return result


def _train_rate(backbone, texts: list, precision: str) -> float:
    """Tokens/s of forward + backward through every body weight (batches of 16, 3 timed steps)."""
    from contextlib import nullcontext

    module = backbone.module.to(backbone.device)
    was_training = module.training
    grads = [p.requires_grad for p in module.parameters()]
    module.train()
    for p in module.parameters():
        p.requires_grad_(True)
    prepared = backbone.prepare(texts[:64])
    batches = [prepared[i : i + 16] for i in range(0, min(len(prepared), 64), 16)] or [prepared]
    autocast = torch.autocast(backbone.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    tokens = sum(backbone.cost(p) for b in batches for p in b)
    passes = []
    try:
        for _ in range(3):  # first pass: kernels for each shape; then the best of two
            t0 = time.perf_counter()
            for batch in batches:
                inputs = {k: v.to(backbone.device) for k, v in backbone.collate(batch).items()}
                with autocast:
                    out = backbone.forward_features(inputs)
                out.float().pow(2).sum().backward()
                module.zero_grad(set_to_none=True)
            passes.append(time.perf_counter() - t0)
    finally:
        for p, g in zip(module.parameters(), grads, strict=True):
            p.requires_grad_(g)
        module.train(was_training)
    return tokens / max(min(passes[1:]), 1e-6)


@dataclass
class Workload:
    n_train: int
    n_val: int
    n_test: int
    n_classes: int
    tokens_per_example: float
    examples_per_class: float
    regime: str


def predict_seconds(method: str, tp: Throughput, w: Workload, feature_dim: int, epochs: float | None) -> float:
    """Predicted wall time of `adapt` with ``method`` (data reading and model loading excluded)."""
    encode = (w.n_train + w.n_val + w.n_test) * w.tokens_per_example / tp.infer_tokens_s
    head = HEAD_S_PER_NDK * (w.n_train + w.n_val) * feature_dim * w.n_classes
    if method == "linear-probe":
        return encode + head
    if tp.train_tokens_s is None or epochs is None:
        return float("inf")
    train = epochs * w.n_train * w.tokens_per_example / (tp.train_tokens_s * METHOD_SPEED[method])
    evals = 0.0 if method == "contrastive" else EVALS_PER_EPOCH[w.regime]
    validation = epochs * evals * w.n_val * w.tokens_per_example / tp.infer_tokens_s
    return encode + head + train + validation


def predict_memory_mb(method: str, params: int, tokens_per_example: float, hidden: int, layers: int, batch: int = 32) -> float:
    """Predicted peak resident memory: process baseline, weights, and per method the gradients +
    AdamW moments (3 x 4 bytes) of what it trains, and the activations kept for backward."""
    weights = params * 4 / 2**20
    if method == "linear-probe":
        return BASE_MB + weights
    trained = {"finetune": 1.0, "scratch": 1.0, "contrastive": 1.0}.get(method, 0.02)
    # ~34 bytes per hidden unit per token per layer are kept for backward (BERT-style block, fp32).
    activations = batch * tokens_per_example * hidden * layers * 34 / 2**20
    return BASE_MB + weights + 3 * weights * trained + activations


def tokens_estimate(backbone, texts: list) -> float:
    return float(np.mean([backbone.cost(p) for p in backbone.prepare(list(texts[:256]))])) if texts else 1.0
