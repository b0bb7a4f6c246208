"""Cost model: predicted wall time and peak memory of adapting a backbone with a method, here.

Throughput is *measured* on this machine, once per (backbone weights, device, threads, precision)
and cached in ``<cache>/throughput.json``: *padded* tokens per second (what the hardware
processes, batch x longest example) of the frozen forward pass (encoding, batched as ``embed``
batches) and of a forward + backward pass through the whole body (training, batches of 32 in
length order, as the trainer's bucketing makes them). Counting padded rather than real tokens
makes the rate nearly independent of how the calibration's few texts happen to batch (measured
on banking77, MiniLM-L6: 830-2,030 real tokens/s across batchings of the same texts, 2,600-3,100
padded). Predictions multiply the data's tokens by the padding its batches will have (simulated
on the sample's lengths with the same batching code) and by what a method does with them:

* ``linear-probe``: encode train + validation + test once, then fit the head
  (``HEAD_S_PER_NDK`` seconds per example x feature x class, derived from banking77: the probe's
  24 s less ~18 s of encoding for 10k x 384 x 77);
* trained methods: a linear probe for the head's start, then ``epochs`` (from the size preset) x
  training examples through a training step at ``METHOD_SPEED[method]`` x the measured
  forward+backward rate, plus the validation passes and the test pass. This is the whole
  schedule: early stopping can only end a run sooner (benchmarks/cost_model.py measures how much);
* ``contrastive``: its steps x examples per step (class-balanced, so not length-bucketed) through
  forward+backward (passed as the equivalent ``epochs``), then train + validation + test encoded
  once with the tuned body; no validation passes while it trains.

Throughput measured when the machine was quieter (or busier) than now would mislead every
prediction, so each measurement records the time of :func:`speed_check`, a fixed ~0.1 s matrix
workload run beside it; a plan runs it again and multiplies its predictions by the ratio (now /
then: 2.0 when the machine runs at half the speed it had at calibration). Measurements from
before the check existed have no reference; the plan says they may be stale.

``METHOD_SPEED`` is each method's training throughput relative to full fine-tuning, from
benchmarks/README.md (banking77, MiniLM-L6, bf16, same machine): LoRA 159 vs 128 examples/s
(1.25), adapter 180 vs 119 (1.5), QLoRA 110 vs 119 (0.92). Memory: the process baseline
(``BASE_MB``), weights, per method the gradients and AdamW moments of what it trains, and the
activations of the largest training step from the bytes per token autograd saved in calibration
(``predict_memory_mb``). benchmarks/cost_model.py compares both predictions with measurements.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
import torch

from .._util import cache_dir
from ..backbones.base import cost_batches
from ..methods.contrastive import MICRO as CONTRASTIVE_MICRO
from ..train.trainer import bucketed_batches

CALIBRATION_VERSION = 3
"""Part of the throughput cache key: raised when what is measured changes (2: padded tokens; 3:
activation bytes per token), so figures measured the older way are measured again, not misread."""
SIMULATED_MAX = 20_000
"""Padding is simulated on at most this many resampled lengths (the ratio settles long before)."""

HEAD_S_PER_NDK = 2e-8
BASE_MB = 700.0
"""Process baseline: the linear probe's 799 MB peak RSS on banking77 less MiniLM's 91 MB of weights."""
METHOD_SPEED = {"finetune": 1.0, "scratch": 1.0, "lora": 1.25, "dora": 1.0, "qlora": 0.92, "adapter": 1.5, "contrastive": 1.0}
EVALS_PER_EPOCH = {"few": 0.5, "medium": 1.0, "large": 2.0}
"""Validation passes per epoch, as the presets' ``eval_every`` schedules them."""


@dataclass
class Throughput:
    infer_tokens_s: float
    """Padded tokens per second of encoding."""
    train_tokens_s: float | None
    """Padded tokens per second of forward + backward; None for frozen-features-only backbones."""
    device: str
    precision: str
    measured_at: str
    train_bytes_per_token: float | None = None
    """Bytes autograd saves for backward per padded token (the calibration's longest batch)."""
    reference_s: float | None = None
    """:func:`speed_check`'s seconds when the rates were measured (mean of one run before and one
    after); None for measurements older than the check."""


SPEED_CHECK_SIZE = 192
SPEED_CHECK_STEPS = 16
SPEED_CHECK_REPEATS = 5


def speed_check() -> float:
    """Seconds of a fixed fp32 workload on this process's threads: ``SPEED_CHECK_STEPS`` products
    of (192, 192) matrices with a tanh between (the matmuls that dominate encoding and training),
    median of ``SPEED_CHECK_REPEATS`` after one warm-up; ~0.1 s on 2 busy CPU cores. Only the ratio
    of two checks on the same machine means anything."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(SPEED_CHECK_SIZE, SPEED_CHECK_SIZE, generator=g) / SPEED_CHECK_SIZE**0.5
    times = []
    with torch.no_grad():
        for repeat in range(SPEED_CHECK_REPEATS + 1):
            x = a
            t0 = time.perf_counter()
            for _ in range(SPEED_CHECK_STEPS):
                x = torch.tanh(x @ a)
            if repeat:  # the first builds the kernels
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _throughput_key(backbone_hash: str, precision: str) -> str:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return f"v{CALIBRATION_VERSION}|{backbone_hash}|{device}|{torch.get_num_threads()}|{precision}"


def _read_throughput_cache() -> dict:
    try:
        return json.loads((cache_dir() / "throughput.json").read_text())
    except (OSError, ValueError):
        return {}


def cached_throughput(backbone_hash: str, precision: str) -> Throughput | None:
    """The measurement :func:`measure_throughput` cached for these weights here, or None."""
    found = _read_throughput_cache().get(_throughput_key(backbone_hash, precision))
    return Throughput(**found) if found is not None else None


def measure_throughput(backbone, backbone_hash: str, texts: list, precision: str) -> Throughput:
    """Padded tokens/s of encoding and (trainable backbones) of forward + backward; cached per weights
    (a cached measurement is returned as it is, never measured again), with :func:`speed_check`'s
    time beside it."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    key = _throughput_key(backbone_hash, precision)
    cache = _read_throughput_cache()
    if key in cache:
        return Throughput(**cache[key])
    before = speed_check()
    sample = list(texts[:256])
    costs = [backbone.cost(p) for p in backbone.prepare(sample)]
    padded = padded_tokens(costs, cost_batches(costs, *backbone.batch_budget))
    # The same inputs three times: the first pass builds the kernels for each batch shape (oneDNN
    # compiles one per shape in bf16), the best of the other two is the steady rate.
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        backbone.embed(sample, precision=precision, desc="measuring encoding")
        times.append(time.perf_counter() - t0)
    infer = padded / max(min(times[1:]), 1e-6)
    train, saved = _train_rate(backbone, sample[:96], precision) if backbone.trains else (None, None)
    reference = (before + speed_check()) / 2
    result = Throughput(infer, train, device, precision, time.strftime("%Y-%m-%dT%H:%M:%S%z"), saved, reference)
    cache = {**_read_throughput_cache(), key: asdict(result)}  # another process may have added some meanwhile
    path = cache_dir() / "throughput.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    return result


def _train_rate(backbone, texts: list, precision: str, batch_size: int = 32) -> tuple[float, float]:
    """Padded tokens/s of forward + backward through every body weight (length-ordered batches of
    ``batch_size``, as bucketing makes them; best of two passes after a first that builds kernels),
    and the bytes autograd saves for backward per padded token, counted on the longest batch in
    the first pass (each saved storage once)."""
    from contextlib import nullcontext

    module = backbone.module.to(backbone.device)
    was_training = module.training
    grads = [p.requires_grad for p in module.parameters()]
    module.train()
    for p in module.parameters():
        p.requires_grad_(True)
    prepared = backbone.prepare(texts)
    costs = [backbone.cost(p) for p in prepared]
    order = sorted(range(len(prepared)), key=lambda i: -costs[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    autocast = torch.autocast(backbone.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    saved: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            saved[(storage.data_ptr(), t.dtype)] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # a tensor without a plain storage: its own size
            saved[(id(t), t.dtype)] = t.numel() * t.element_size()
        return t

    passes = []
    try:
        for n_pass in range(3):
            t0 = time.perf_counter()
            for b, batch in enumerate(batches):
                inputs = {k: v.to(backbone.device) for k, v in backbone.collate([prepared[i] for i in batch]).items()}
                counting = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if n_pass == b == 0 else nullcontext()
                with counting, autocast:
                    out = backbone.forward_features(inputs)
                out.float().pow(2).sum().backward()
                module.zero_grad(set_to_none=True)
            passes.append(time.perf_counter() - t0)
    finally:
        for p, g in zip(module.parameters(), grads, strict=True):
            p.requires_grad_(g)
        module.train(was_training)
    longest = padded_tokens(costs, batches[:1])
    return padded_tokens(costs, batches) / max(min(passes[1:]), 1e-6), sum(saved.values()) / max(longest, 1)


def padded_tokens(costs: list[int], batches: list[list[int]]) -> int:
    """Tokens processed when each batch is padded to its longest example."""
    return sum(len(b) * max(costs[i] for i in b) for b in batches if b)


def padding_ratio(lengths: list[int], n: int, *, batch_size: int | None = None, budget: tuple[int, int] | None = None,
                  bucketed: bool = True, micro: int | None = None) -> float:
    """Padded / real tokens when ``n`` examples with lengths like ``lengths`` are batched: by the
    encoder's ``budget`` (cost_batches), or in training batches of ``batch_size``, length-bucketed
    (the trainer) or not (contrastive's class-balanced batches, each run as length-sorted forward
    passes of ``micro`` examples). 1.0 without lengths."""
    if not lengths or n <= 0:
        return 1.0
    return _simulated_padding(tuple(lengths), min(n, SIMULATED_MAX), batch_size or 32, budget, bucketed, micro)


@lru_cache(maxsize=256)
def _simulated_padding(lengths: tuple[int, ...], n: int, batch_size: int, budget: tuple[int, int] | None, bucketed: bool,
                       micro: int | None) -> float:
    """padding_ratio's simulation, memoised: a plan asks the same questions for every method."""
    rng = np.random.default_rng(0)
    sim = [int(x) for x in rng.choice(np.asarray(lengths), size=n)]
    if budget is not None:
        batches = cost_batches(sim, *budget)
    elif bucketed:
        batches = bucketed_batches(sim, batch_size, rng)
    else:
        perm = rng.permutation(len(sim)).tolist()
        batches = []
        for i in range(0, len(perm), batch_size):
            group = sorted(perm[i : i + batch_size], key=lambda j: -sim[j])
            step = micro or batch_size
            batches.extend(group[k : k + step] for k in range(0, len(group), step))
    return padded_tokens(sim, batches) / max(sum(sim), 1)


@dataclass
class Workload:
    n_train: int
    n_val: int
    n_test: int
    n_classes: int
    tokens_per_example: float
    examples_per_class: float
    regime: str
    lengths: list[int] = field(default_factory=list)
    """Token counts of a sample of the data, for simulating padding (empty: no padding)."""
    encode_budget: tuple[int, int] = (2048, 128)
    """The backbone's ``batch_budget`` (how it batches what it encodes)."""


def predict_seconds(method: str, tp: Throughput, w: Workload, feature_dim: int, epochs: float | None,
                    batch_size: int = 32) -> float:
    """Predicted wall time of `adapt` with ``method`` (data reading and model loading excluded),
    for the whole schedule of ``epochs`` in batches of ``batch_size``."""
    n_encoded = w.n_train + w.n_val + w.n_test
    real = w.tokens_per_example
    encode = n_encoded * real * padding_ratio(w.lengths, n_encoded, budget=w.encode_budget) / tp.infer_tokens_s
    head = HEAD_S_PER_NDK * (w.n_train + w.n_val) * feature_dim * w.n_classes
    if method == "linear-probe":
        return encode + head
    if tp.train_tokens_s is None or epochs is None:
        return float("inf")
    contrastive = method == "contrastive"
    pad = padding_ratio(w.lengths, w.n_train, batch_size=batch_size, bucketed=not contrastive,
                        micro=CONTRASTIVE_MICRO if contrastive else None)
    train = epochs * w.n_train * real * pad / (tp.train_tokens_s * METHOD_SPEED[method])
    evals = 0.0 if contrastive else EVALS_PER_EPOCH[w.regime]
    validation = epochs * evals * w.n_val * real * padding_ratio(w.lengths, w.n_val, budget=w.encode_budget) / tp.infer_tokens_s
    return encode + head + train + validation


def predict_memory_mb(method: str, params: int, tp: Throughput, w: Workload, batch: int = 32) -> float:
    """Predicted peak resident memory: the process baseline and the weights; for trained methods
    the gradients + AdamW moments (3 x 4 bytes) of what they train, and twice what autograd saves
    for the largest step (the saved tensors, then their gradients during backward; the measured
    bytes per padded token x the step's padded tokens: a batch of the longest sampled examples, as
    length bucketing makes one; contrastive's class-balanced steps hold ``batch`` examples of
    average length)."""
    weights = params * 4 / 2**20
    if method == "linear-probe":
        return BASE_MB + weights
    if tp.train_bytes_per_token is None:
        return float("inf")
    trained = {"finetune": 1.0, "scratch": 1.0, "contrastive": 1.0}.get(method, 0.02)
    batch = min(batch, max(w.n_train, 1))
    if method == "contrastive":
        tokens = batch * w.tokens_per_example * padding_ratio(w.lengths, max(w.n_train, batch), batch_size=batch,
                                                              bucketed=False, micro=CONTRASTIVE_MICRO)
    else:
        tokens = batch * (max(w.lengths) if w.lengths else w.tokens_per_example)
    activations = 2 * tp.train_bytes_per_token * tokens / 2**20
    return BASE_MB + weights + 3 * weights * trained + activations


def speed_factor(tp: Throughput, now_s: float) -> float | None:
    """How much slower this machine runs now than when ``tp`` was measured: :func:`speed_check`'s
    seconds now over those recorded with ``tp`` (predictions are multiplied by it); None when ``tp``
    has no reference (its figures may be stale)."""
    if tp.reference_s is None or not tp.reference_s > 0 or not now_s > 0:
        return None
    return now_s / tp.reference_s
