"""What every method that trains with the trainer shares: the task model, options, save/load.

A trained method subclasses :class:`TrainedMethod` and implements :meth:`prepare` (freeze,
inject, quantise, re-initialise) plus, where it differs, :meth:`saved_names` (what it added).
Everything else -- batching, the head, the optimizer groups, checkpoints, prediction -- is here
and in :mod:`headstart.train.trainer`, so the methods stay a screen long each.

Options left at ``None`` come from the method's preset for the data size
(:mod:`headstart.methods.presets`); the resolved values are written into the run manifest.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .._util import status
from ..backbones import Backbone
from ..data import Dataset
from ..errors import BadInput
from ..tasks import get_task
from ..train.trainer import RunControl, Trainer, TrainSettings, frozen_linears_in_bf16
from ._layers import param_counts
from .base import FitContext, Method, copy_tensors

HEAD_INITS = ("probe", "zero")


@dataclass
class TrainedConfig:
    lr: float | None = None
    """Peak learning rate of the trained body parameters (AdamW, linear warmup and decay)."""
    head_lr: float | None = None
    """Peak learning rate of the classification head."""
    epochs: float | None = None
    """Passes over the training split (fractions allowed)."""
    batch_size: int | None = None
    """Examples per optimizer step."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (same result, less memory per forward pass)."""
    warmup_ratio: float = 0.06
    """Share of the steps spent warming the learning rate up from zero."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (not applied to biases and norm weights)."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (0 disables)."""
    patience: int | None = None
    """Validation evaluations without improvement before stopping early."""
    eval_every: float | None = None
    """Evaluate on the validation split every this many epochs."""
    head_init: str | None = None
    """'probe': start the head from a linear probe on frozen features (LP-FT, Kumar et al. 2022);
    'zero': start it at zero."""
    dropout: float = 0.1
    """Dropout on the pooled features before the head."""
    checkpointing: bool | None = None
    """Recompute each block's activations in the backward pass instead of keeping them
    (transformers' gradient checkpointing): less memory for about a third more compute. None:
    the task's preset (generation's QLoRA: on), else off."""

    def validate(self, method: str) -> None:
        checks = {
            "lr": _positive, "head_lr": _positive, "epochs": _positive, "batch_size": _positive_int,
            "grad_accum": _positive_int, "warmup_ratio": _fraction, "weight_decay": _non_negative,
            "max_grad_norm": _non_negative, "patience": _non_negative_int, "eval_every": _positive,
            "dropout": _fraction,
        }
        for name, check in checks.items():
            value = getattr(self, name)
            if value is not None and not check(value):
                raise BadInput(f"{method} option {name} must be {check.__doc__} (got {value!r})")
        if self.checkpointing is not None and not isinstance(self.checkpointing, bool):
            raise BadInput(f"{method} option checkpointing must be true or false (got {self.checkpointing!r})")
        if self.head_init is not None and self.head_init not in HEAD_INITS:
            raise BadInput(f"{method} option head_init must be one of {', '.join(HEAD_INITS)} (got {self.head_init!r})")
        if self.batch_size is not None and self.grad_accum > self.batch_size:
            raise BadInput(f"{method} option grad_accum={self.grad_accum} is larger than batch_size={self.batch_size}")


def _positive(v) -> bool:
    """a number > 0"""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)


def _non_negative(v) -> bool:
    """a number >= 0"""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and math.isfinite(v)


def _fraction(v) -> bool:
    """a number in [0, 1)"""
    return _non_negative(v) and v < 1


def _positive_int(v) -> bool:
    """an integer >= 1"""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _non_negative_int(v) -> bool:
    """an integer >= 0"""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def parse_targets(value, method: str) -> list[str] | None:
    """``targets`` option: None, a comma-separated string, or a list of block-relative names."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{method} option targets must be layer names relative to a block, e.g. --set targets=query,value (got {value!r})")
    return list(value)


TaskModel = nn.Module
"""What a task builds for a trained method (:meth:`headstart.tasks.Task.build_model`): ``.body``
is the backbone's module, which the method freezes, injects into or re-initialises; the task adds
the rest (a classification head, the pooled embedding of a retrieval encoder)."""

HEAD_OPTIONS = ("head_lr", "head_init")


class TrainedMethod(Method):
    """A method trained by :class:`~headstart.train.trainer.Trainer` on the backbone's body."""

    config_cls: ClassVar[type] = TrainedConfig
    tasks: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def supports(cls, task) -> bool:
        """Every task: the task builds the model around the body and owns loss and metrics; the
        method only freezes, injects into or re-initialises the body."""
        return True
    saves_buffers: ClassVar[bool] = False
    """Whether the body's buffers (e.g. BatchNorm statistics) change and must be saved."""

    # -- per method ------------------------------------------------------------------------------
    def prepare(self, model: TaskModel, ctx: FitContext) -> None:
        """Freeze / inject / quantise ``model.body`` in place (when fitting and when loading)."""
        raise NotImplementedError

    def body_param_groups(self, model: TaskModel, lr: float) -> list[dict]:
        """Optimizer groups for the body's trainable parameters (finetune overrides: layer decay)."""
        return _decay_groups([p for p in model.body.parameters() if p.requires_grad], lr)

    def fit_details(self, model: TaskModel) -> dict[str, Any]:
        """Extra facts for the run manifest (e.g. target layers, bytes of 4-bit weights)."""
        return {}

    def before_build(self, backbone: Backbone) -> None:
        """Hook run before the model is built for fitting (scratch re-initialises the body)."""

    # -- shared ----------------------------------------------------------------------------------
    def resolved_config(self) -> dict[str, Any]:
        return asdict(getattr(self, "resolved_", self.config))

    def check_task(self, task) -> None:
        if not task.has_head:
            given = [name for name in HEAD_OPTIONS if getattr(self.config, name, None) is not None]
            if given:
                raise BadInput(f"{self.name} option {given[0]} sets the head, but the task {task.name!r} adds no head on "
                               "the body; leave it out")

    def _resolve(self, train, task) -> Any:
        self.regime_, values = task.preset(self.name, train)
        cfg = self.config
        resolved = type(cfg)(**{f.name: (getattr(cfg, f.name) if getattr(cfg, f.name) is not None else values.get(f.name))
                                 for f in fields(cfg)})
        missing = [f.name for f in fields(resolved) if getattr(resolved, f.name) is None and f.name in values]
        assert not missing, missing
        return resolved

    def _build(self, backbone: Backbone, cfg, ctx: FitContext, *, fitting: bool) -> TaskModel:
        if fitting:
            self.before_build(backbone)
        model = get_task(ctx.task).build_model(backbone, cfg, ctx)
        self.prepare(model, ctx)
        model.to(backbone.device)
        if getattr(cfg, "checkpointing", None):
            body = model.body
            if hasattr(body, "activation_checkpointing_enable"):  # transformers >= 5.2x
                body.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            elif hasattr(body, "gradient_checkpointing_enable"):
                body.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                raise BadInput(f"{self.name} option checkpointing: {type(body).__name__} has no activation checkpointing; "
                               "leave the option off")
        return model

    def trainable_state(self) -> dict[str, torch.Tensor]:
        model = self.model_
        out = {name: p for name, p in model.named_parameters() if p.requires_grad}
        if self.saves_buffers:
            out.update({name: b for name, b in model.named_buffers() if name.startswith("body.")})
        return out

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        copy_tensors(self.trainable_state(), tensors, who=self.name,
                     mismatch="the run was made with another method version or backbone")

    def _set_train_mode(self) -> None:
        self.model_.train()
        for m in self.model_.modules():
            # Frozen batch norms keep their statistics (train mode would overwrite them).
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                m.eval()

    def fit(self, backbone: Backbone, train, val, ctx: FitContext) -> dict[str, Any]:
        task = get_task(ctx.task)
        cfg = self._resolve(train, task)
        self.resolved_ = cfg
        t0 = time.perf_counter()
        start = task.model_start(backbone, train, val, cfg, ctx)  # on the body as loaded, before the method changes it
        t_probe = time.perf_counter() - t0
        model = self._build(backbone, cfg, ctx, fitting=True)
        self.model_ = model
        if start is not None:
            start(model)
        trainable, total = param_counts(model)
        status(f"{self.name}: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%); "
               f"{total - trainable:,} frozen")

        bb = self._backbone_of(model)
        settings = TrainSettings(
            epochs=cfg.epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
            warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
            patience=cfg.patience, eval_every=cfg.eval_every,
        )
        groups = self.body_param_groups(model, cfg.lr)
        head_params = task.head_parameters(model)
        if head_params:
            groups += _decay_groups(head_params, cfg.head_lr)
        trainer = Trainer(
            model, settings,
            RunControl(precision=ctx.precision, seed=ctx.seed, deadline=ctx.deadline, checkpoint_path=ctx.checkpoint_path,
                       on_step=ctx.on_step),
            param_groups=[g for g in groups if g["params"]],
            trainable_state=self.trainable_state,
            load_trainable_state=self.load_trainable_state,
            set_train_mode=self._set_train_mode,
            device=bb.device,
        )
        plan = task.training(model, train, val, cfg, ctx)
        with frozen_linears_in_bf16(model, ctx.precision == "bf16"):
            result = trainer.fit(train_lengths=plan.lengths, collate_train=plan.collate, objective=plan.objective,
                                 batches=plan.batches)
        model.eval()
        summary = {
            "regime": self.regime_,
            "trainable_params": trainable,
            "total_params": total,
            "frozen_params": total - trainable,
            "trainable_percent": round(100 * trainable / total, 4),
            "steps": result.steps,
            "epochs_done": result.epochs_done,
            "stopped_by": result.stopped_by,
            "best_step": result.best_step,
            f"best_val_{result.metric}": round(result.best_val, 6),
            "history": result.history,
            "train_s": round(result.train_s, 3),
            "probe_init_s": round(t_probe, 3),
            "examples_per_s": round(result.examples_per_s, 2),
            "examples_seen": result.examples_seen,
        }
        if result.padded_tokens_seen:
            summary["tokens_seen"] = result.tokens_seen
            summary["padded_token_ratio"] = round(result.padded_tokens_seen / max(1, result.tokens_seen), 4)
        if result.resumed_from_step is not None:
            summary["resumed_from_step"] = result.resumed_from_step
        if result.processes > 1:  # a distributed launch: batch_size was the global batch
            summary["processes"] = result.processes
        summary.update(plan.record)
        summary.update(self.fit_details(model))
        return summary

    @staticmethod
    def _backbone_of(model: TaskModel) -> Backbone:
        return model._backbone[0]

    def predict_proba(self, backbone: Backbone, data: Dataset, ctx: FitContext) -> np.ndarray:
        if getattr(self, "model_", None) is None:
            self._load_into(backbone, ctx)
        return get_task(ctx.task).predict_proba(self.model_, data, ctx)

    def embed(self, backbone: Backbone, data: Dataset, ctx: FitContext) -> np.ndarray:
        """Features of the body as this method adapted it (LoRA, adapters, fine-tuned weights; no head)."""
        if getattr(self, "model_", None) is None:
            self._load_into(backbone, ctx)
        self.model_.eval()
        return self._backbone_of(self.model_).embed(list(data.inputs), precision=ctx.precision, desc="embedding")

    def task_model(self, backbone: Backbone, ctx: FitContext) -> nn.Module:
        """The trained model (loaded from the run's tensors when needed), in eval mode."""
        if getattr(self, "model_", None) is None:
            self._load_into(backbone, ctx)
        return self.model_.eval()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").contiguous() for k, v in self.trainable_state().items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.saved_ = tensors
        self.model_ = None

    def _load_into(self, backbone: Backbone, ctx: FitContext) -> None:
        cfg = self.config
        self.resolved_ = cfg
        self.model_ = self._build(backbone, cfg, ctx, fitting=False)
        self.load_trainable_state(self.saved_)
        self.model_.eval()


def _decay_groups(params: list[nn.Parameter], lr: float) -> list[dict]:
    """AdamW groups: weight decay on matrices, none on biases and norm weights (1-D tensors)."""
    return [
        {"params": [p for p in params if p.ndim >= 2], "lr": lr},
        {"params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0},
    ]
