"""Contrastive few-shot fine-tuning (the SetFit recipe, Tunstall et al. 2022, arXiv:2209.11055).

Two stages:

1. **Body**: the sentence encoder is fine-tuned so that examples of the same class embed close
   together and examples of different classes apart. SetFit draws sentence *pairs* and runs both
   sentences of every pair through the body; here each step embeds a batch once and scores every
   pair inside it (``b (b - 1) / 2`` pairs for ``b`` forward passes): the loss is SetFit's
   cosine-similarity loss, ``(cos(u, v) - [same class])^2``, averaged with positives and
   negatives weighted equally (SetFit balances them by oversampling). The token-embedding matrix
   stays frozen (half of MiniLM's weights; it barely moves in a few steps and its update costs
   as much as the rest of the step on a CPU); every other body weight trains. Linear learning-rate
   decay to zero.
2. **Head**: the linear probe's logistic-regression head on the tuned body's features (fitted on
   train + validation), with ``C = 1`` as SetFit's scikit-learn head has by default. Choosing C
   on the validation split (``--set C=null``) is what the probe does, but few-shot validation
   splits (one example per class at 8 per class) tie on every C and the tie goes to the strongest
   penalty: on SST-2 at 8 per class that head lost 2 points (0.628 vs 0.649 mean over 5 draws).

Batches: with up to ``batch_size`` training examples all of them form every step's batch;
otherwise each step takes an equal share of examples from randomly ordered classes (at least two
per class, so every class present has a positive pair), cycling through each class's examples.

Stage 1 trains through the one :class:`~headstart.train.trainer.Trainer`, like every trained
method: the model it trains is :class:`PairEncoder` (a batch to its pooled features), the
objective is :func:`pair_loss` (a batch-level loss), one "epoch" is ``ceil(n / batch_size)``
batches from :func:`batch_plan`, and the schedule is exactly ``steps`` optimizer steps (no
warmup, ``grad_accum`` 1). The *last* state is kept (as SetFit does); the validation pair loss
(:data:`PAIR_LOSS`, lower is better) is measured once, at the end, and recorded. Checkpoints go
to the run's partial folder at that evaluation, every two minutes and on an interrupt between
steps, so ``headstart adapt --resume`` continues an interrupted fit to the same weights.
``--budget`` stops it cleanly between steps; the head is still fitted.
Trains every body parameter except the token embeddings, plus the head; saves exactly those.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from statistics import median
from typing import Any

import numpy as np
import torch
from torch import nn

from .._util import status
from ..backbones import Backbone
from ..data import Dataset
from ..errors import BadInput
from ..evaluate.metrics import MetricSpec
from ..tasks.base import Objective
from ..train.trainer import RunControl, Trainer, TrainSettings
from .base import FitContext, Method, copy_tensors
from .linear_probe import LinearProbeConfig, fit_probe_head
from .presets import preset, regime_for
from .trained import _decay_groups, _non_negative, _positive, _positive_int

MICRO = 8
"""Examples per forward pass inside a step (sorted by length, so padding stays small)."""

@dataclass
class ContrastiveConfig:
    steps: int | None = None
    """Optimizer steps of the contrastive stage (preset by data size: 5 / 40 / 80, methods/presets.py)."""
    batch_size: int | None = None
    """Examples per step; every pair inside a batch is a training pair (preset 32)."""
    lr: float | None = None
    """Peak learning rate of the body (AdamW, linear decay to zero; preset 2e-4 few-shot, else 5e-5)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (not on biases and norm weights)."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (0 disables)."""
    train_embeddings: bool = False
    """Also train the token-embedding matrix."""
    C: float | None = 1.0
    """The head's inverse L2 strength (on standardised features); None: chosen on the validation
    split from `Cs`."""
    Cs: tuple[float, ...] = LinearProbeConfig.Cs
    """Grid searched for the head's C."""

    def validate(self, method: str = "contrastive") -> None:
        checks = {"steps": _positive_int, "batch_size": _positive_int, "lr": _positive, "weight_decay": _non_negative,
                  "max_grad_norm": _non_negative}
        for name, check in checks.items():
            value = getattr(self, name)
            if value is not None and not check(value):
                raise BadInput(f"{method} option {name} must be {check.__doc__} (got {value!r})")
        if self.batch_size is not None and self.batch_size < 2:
            raise BadInput(f"{method} option batch_size must be at least 2: pairs need two examples (got {self.batch_size})")
        if not isinstance(self.train_embeddings, bool):
            raise BadInput(f"{method} option train_embeddings must be true or false (got {self.train_embeddings!r})")
        LinearProbeConfig(C=self.C, Cs=self.Cs).validate(method)

    def head_config(self) -> LinearProbeConfig:
        return LinearProbeConfig(C=self.C, Cs=tuple(self.Cs))


def pair_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SetFit's cosine-similarity loss over every pair of the batch, positives and negatives
    weighted equally: mean over pairs of ``(cos(u, v) - [y_u == y_v])^2``."""
    z = torch.nn.functional.normalize(features.float(), dim=-1)
    i, j = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    cos = (z[i] * z[j]).sum(-1)
    target = (labels[i] == labels[j]).float()
    err = (cos - target) ** 2
    pos, neg = target.sum(), (1 - target).sum()
    if pos == 0 or neg == 0:  # one kind of pair only: a plain mean
        return err.mean()
    return 0.5 * (err * target).sum() / pos + 0.5 * (err * (1 - target)).sum() / neg


def batch_plan(labels: np.ndarray, batch_size: int, steps: int, seed: int | np.random.Generator) -> list[np.ndarray]:
    """Index batches for ``steps`` steps: everything when it fits, else class-balanced draws
    (``seed``: a seed or the generator to draw from)."""
    n = len(labels)
    if n <= batch_size:
        return [np.arange(n)] * steps
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    cursor = dict.fromkeys(classes, 0)
    per_class = max(2, batch_size // len(classes))
    out = []
    for _ in range(steps):
        chosen: list[int] = []
        for c in rng.permutation(classes):
            if len(chosen) >= batch_size:
                break
            take = min(per_class, len(pools[c]), batch_size - len(chosen))
            for _ in range(take):
                if cursor[c] == len(pools[c]):
                    pools[c], cursor[c] = rng.permutation(pools[c]), 0
                chosen.append(int(pools[c][cursor[c]]))
                cursor[c] += 1
        out.append(np.array(chosen))
    return out


PAIR_LOSS = MetricSpec("pair_loss", higher_is_better=False, bounds=(0.0, 2.5))
"""The validation score: :func:`pair_loss` over every validation pair. Per pair the error is at
most 4 for a positive (cosine -1) and 1 for a negative (cosine 1); weighted half each: 0 to 2.5."""


def pair_loss_blocked(features: torch.Tensor, labels: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """:func:`pair_loss` over every pair of a large set (a validation split), ``block`` rows of
    the cosine matrix at a time instead of one row per pair."""
    z = torch.nn.functional.normalize(features.float(), dim=-1)
    n = len(z)
    sums = torch.zeros(2, dtype=torch.float64, device=z.device)  # error over positives, negatives
    counts = torch.zeros(2, dtype=torch.float64, device=z.device)
    cols = torch.arange(n, device=z.device)
    for start in range(0, n, block):
        rows = cols[start : start + block]
        cos = z[rows] @ z.T  # (block, n)
        upper = cols[None, :] > rows[:, None]  # (block, n): each pair once, i < j
        target = (labels[rows][:, None] == labels[None, :]).float()
        err = (cos - target) ** 2
        for k, kind in enumerate((target, 1 - target)):
            w = kind * upper
            sums[k] += (err * w).sum().double()
            counts[k] += w.sum().double()
    if counts[0] == 0 or counts[1] == 0:  # one kind of pair only: a plain mean
        return (sums.sum() / counts.sum()).float()
    return (0.5 * sums[0] / counts[0] + 0.5 * sums[1] / counts[1]).float()


class PairEncoder(nn.Module):
    """The body as the trainer sees it: a batch ``{"index": (B,)}`` of training positions maps to
    their pooled features ``(B, D)``, computed in micro-chunks of :data:`MICRO` examples (the
    batches come sorted by length, so each chunk pads little) and concatenated, so the loss sees
    every pair of the batch and one backward covers them all."""

    def __init__(self, backbone: Backbone, prepared: list):
        super().__init__()
        self.body = backbone.module
        self._backbone = [backbone]  # a list: not registered as a submodule (the body already is)
        self._prepared = prepared

    def features(self, examples: list) -> torch.Tensor:
        bb = self._backbone[0]
        parts = []
        for start in range(0, len(examples), MICRO):
            batch = {k: v.to(bb.device) for k, v in bb.collate(examples[start : start + MICRO]).items()}
            parts.append(bb.forward_features(batch))  # (<= MICRO, D)
        return torch.cat(parts)  # (B, D)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.features([self._prepared[i] for i in batch["index"].tolist()])


class Contrastive(Method):
    """SetFit-style: contrastive body fine-tuning, then a logistic-regression head."""

    name = "contrastive"
    config_cls = ContrastiveConfig

    def _resolve(self, train: Dataset) -> ContrastiveConfig:
        per_class = median(Counter(train.labels).values())
        self.regime_ = regime_for(per_class)
        values = preset(self.name, per_class)
        cfg = self.config
        return type(cfg)(**{f.name: (getattr(cfg, f.name) if getattr(cfg, f.name) is not None or f.name not in values
                                     else values[f.name]) for f in fields(cfg)})

    def _trained(self, module: torch.nn.Module, train_embeddings: bool) -> dict[str, torch.nn.Parameter]:
        """Every body parameter but the input (token or patch) embeddings, unless those train too."""
        embeddings = getattr(module, "get_input_embeddings", lambda: None)()
        frozen = set() if train_embeddings or embeddings is None else {id(p) for p in embeddings.parameters()}
        return {name: p for name, p in module.named_parameters() if id(p) not in frozen}

    def fit(self, backbone: Backbone, train: Dataset, val: Dataset, ctx: FitContext) -> dict[str, Any]:
        self.config.validate(self.name)
        cfg = self._resolve(train)
        self.resolved_ = cfg
        module = backbone.module.to(backbone.device)
        trained = self._trained(module, cfg.train_embeddings)
        for p in module.parameters():
            p.requires_grad_(False)
        for p in trained.values():
            p.requires_grad_(True)
        index = {c: i for i, c in enumerate(ctx.classes)}
        y_train = np.array([index[c] for c in train.labels])
        prepared = backbone.prepare(list(train.inputs))
        prepared_val = backbone.prepare(list(val.inputs))
        y_train_t = torch.as_tensor(y_train, device=backbone.device)
        y_val_t = torch.tensor([index[c] for c in val.labels], device=backbone.device)
        costs = [backbone.cost(x) for x in prepared]

        # The schedule in the trainer's terms: "epochs" of ceil(n / batch_size) class-balanced
        # batches, exactly cfg.steps optimizer steps, linear decay to zero from the first step.
        steps_per_epoch = math.ceil(len(prepared) / cfg.batch_size)

        def batches(rng: np.random.Generator) -> list[list[int]]:
            # Each batch sorted by length: the forward's micro-chunks of MICRO then pad little.
            return [sorted(b.tolist(), key=lambda i: costs[i]) for b in batch_plan(y_train, cfg.batch_size, steps_per_epoch, rng)]

        epochs = cfg.steps / steps_per_epoch
        settings = TrainSettings(epochs=epochs, batch_size=cfg.batch_size, grad_accum=1, warmup_ratio=0.0,
                                 weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
                                 patience=cfg.steps, eval_every=epochs, keep="last", max_steps=cfg.steps)
        encoder = PairEncoder(backbone, prepared)
        trainer = Trainer(
            encoder, settings,
            RunControl(precision=ctx.precision, seed=ctx.seed, deadline=ctx.deadline, checkpoint_path=ctx.checkpoint_path,
                       on_step=ctx.on_step),
            param_groups=[g for g in _decay_groups(list(trained.values()), cfg.lr) if g["params"]],
            trainable_state=lambda: dict(trained),
            load_trainable_state=lambda tensors: copy_tensors(trained, tensors, who=self.name, mismatch="start a new run"),
            set_train_mode=module.train,
            device=backbone.device,
        )
        budget, max_batch = backbone.batch_budget

        def evaluate(model: PairEncoder) -> dict[str, float]:
            """The pair loss over every pair of the validation split (NaN with fewer than 2 examples)."""
            if len(prepared_val) < 2:
                return {"pair_loss": math.nan, "loss": math.nan}
            feats = torch.empty(len(prepared_val), backbone.feature_dim, device=backbone.device)
            for idx in backbone.batches(prepared_val, budget, max_batch):
                feats[idx] = model.features([prepared_val[i] for i in idx]).float()
            value = float(pair_loss_blocked(feats, y_val_t))
            return {"pair_loss": value, "loss": value}

        objective = Objective(loss=lambda features, idx: pair_loss(features, y_train_t[idx]), evaluate=evaluate,
                              metric=PAIR_LOSS, val_examples=len(prepared_val), per_example=False)
        torch.manual_seed(ctx.seed)  # dropout masks (a resumed fit restores the checkpoint's generator)
        n_trained = sum(p.numel() for p in trained.values())
        per_step = len(batches(np.random.default_rng([ctx.seed, 0]))[0])
        status(f"{self.name}: training {n_trained:,} body parameters on pairs of {per_step} examples per step")
        try:
            result = trainer.fit(train_lengths=costs, collate_train=lambda idx: {"index": torch.tensor(idx)},
                                 objective=objective, batches=batches)
        finally:
            module.eval()
            for p in trained.values():
                p.requires_grad_(False)
        losses = result.train_losses
        if not math.isfinite(losses[-1] if losses else 0.0):
            raise BadInput(f"{self.name}: the loss became {losses[-1]}; lower --set lr (was {cfg.lr:g})")
        val_loss = result.history[-1].get("val_pair_loss", math.nan) if result.history else math.nan

        t1 = time.perf_counter()
        both = Dataset.concat(train, val)
        x = torch.from_numpy(backbone.embed(list(both.inputs), precision=ctx.precision, desc="encoding train (tuned)"))
        y = torch.tensor([index[c] for c in both.labels])
        self.weight_, self.bias_, chosen, val_scores = fit_probe_head(x, y, len(train), len(ctx.classes), cfg.head_config())
        self.C_ = chosen
        self.body_ = {name: p.detach() for name, p in trained.items()}
        head = self.weight_.numel() + self.bias_.numel()
        total = sum(p.numel() for p in module.parameters())
        summary = {
            "regime": self.regime_,
            "steps": result.steps,
            "stopped_by": "steps" if result.stopped_by == "epochs" else result.stopped_by,
            "examples_per_step": per_step,
            "pair_loss": [round(v, 5) for v in losses],
            "train_s": round(result.train_s, 3),
            "examples_per_s": round(result.examples_per_s, 2),
            "head_s": round(time.perf_counter() - t1, 3),
            "C": chosen,
            "val_accuracy_by_C": val_scores,
            "trainable_params": int(n_trained + head),
            "total_params": int(total + head),
            "frozen_params": int(total - n_trained),
        }
        if math.isfinite(val_loss):
            summary["val_pair_loss"] = round(val_loss, 6)
        if result.resumed_from_step is not None:
            summary["resumed_from_step"] = result.resumed_from_step
        return summary

    def predict_proba(self, backbone: Backbone, data: Dataset, ctx: FitContext) -> np.ndarray:
        if getattr(self, "saved_", None) is not None:
            self._load_body(backbone)
        feats = backbone.embed(list(data.inputs), precision=ctx.precision, desc="encoding")
        logits = torch.from_numpy(feats) @ self.weight_.T + self.bias_
        return torch.softmax(logits, dim=1).numpy()

    def embed(self, backbone: Backbone, data: Dataset, ctx: FitContext) -> np.ndarray:
        """Features of the contrastively tuned body."""
        if getattr(self, "saved_", None) is not None:
            self._load_body(backbone)
        return backbone.embed(list(data.inputs), precision=ctx.precision, desc="embedding")

    def _load_body(self, backbone: Backbone) -> None:
        module = backbone.module
        own = self._trained(module, bool(self.config.train_embeddings))
        saved = {k[len("body."):]: v for k, v in self.saved_.items() if k.startswith("body.")}
        copy_tensors(own, saved, who=self.name, mismatch="the run was made with another backbone")
        self.body_ = {name: p.detach() for name, p in own.items()}
        self.saved_ = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"body.{k}": v.to("cpu").contiguous() for k, v in self.body_.items()}
        return {**out, "head.weight": self.weight_, "head.bias": self.bias_}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weight_ = tensors["head.weight"]
        self.bias_ = tensors["head.bias"]
        self.saved_ = tensors

    def resolved_config(self) -> dict[str, Any]:
        cfg = asdict(getattr(self, "resolved_", self.config))
        cfg["Cs"] = list(cfg["Cs"])
        if hasattr(self, "C_"):
            cfg["C"] = self.C_
        return cfg
