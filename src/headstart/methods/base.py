"""What every adaptation method provides.

A method has one job: given a backbone and labelled splits, produce a classifier, say what it
trained, and save/load exactly what it added (here: the head; later: adapters, LoRA pairs or full
weights). Constructors only record their configuration; fitted state ends in ``_``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..backbones import Backbone
from ..data import Dataset
from ..errors import BadInput
from ..train.budget import Deadline


@dataclass
class FitContext:
    """What the pipeline hands a method besides the data."""

    backbone_hash: str
    precision: str
    seed: int
    classes: list[str] = field(default_factory=list)
    """Classification: the class names, in the head's order (empty for other tasks)."""
    language: str | None = None
    """Speech recognition: the language a multilingual model is prompted with (None: English)."""
    task_info: dict = field(default_factory=dict)
    """The task's own options as the run recorded them (``manifest["task_info"]``; generation:
    template, max_length...)."""
    task: str = "classification"
    """The registered task (:mod:`headstart.tasks`) whose loss and selection metric training uses."""
    budget_s: float | None = None
    """The adaptation's time budget in seconds (recorded; ``deadline`` enforces it)."""
    deadline: Deadline | None = None
    """When the whole adaptation must end (methods that train stop cleanly, keeping their best
    state, when the next step and the work after training would not fit)."""
    checkpoint_path: Path | None = None
    """Where a training method keeps its resumable checkpoint (None: no checkpoints)."""
    on_step: Callable[[int], None] | None = None
    """Called after each optimizer step (tests use it to interrupt a fit)."""
    feature_cache: bool = True
    """Whether frozen features are looked up in and added to the on-disk feature cache
    (:mod:`headstart.backbones.cache`). A server turns it off: its inputs rarely repeat, and every
    request would grow the cache on disk."""


def copy_tensors(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], *, who: str, mismatch: str) -> None:
    """Copy saved ``tensors`` into the live ``own`` ones (same names, same shapes; cast to each
    one's dtype), refusing any difference in one line; ``mismatch`` says what a difference means
    and what to do (e.g. "the run was made with another backbone")."""
    from ..errors import RunIntegrityError

    missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or extra:
        raise RunIntegrityError(f"{who}: saved tensors do not match the model ({len(missing)} missing, e.g. {missing[:2]}; "
                                f"{len(extra)} unexpected, e.g. {extra[:2]}); {mismatch}")
    with torch.no_grad():
        for name, t in own.items():
            src = tensors[name]
            if src.shape != t.shape:
                raise RunIntegrityError(f"{who}: tensor {name} has shape {tuple(src.shape)}, the model expects "
                                        f"{tuple(t.shape)}; {mismatch}")
            t.copy_(src.to(t.dtype))


class Method(ABC):
    name: ClassVar[str]
    config_cls: ClassVar[type]
    trains_backbone: ClassVar[bool] = True
    """Whether the method needs the body as a trainable torch module (all but linear probing)."""
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    """The registered tasks this method can adapt for, by name, when its head is itself
    task-specific (the probe's logistic regression, contrastive's class pairs). Methods that only
    say which weights change support every task through :meth:`supports` instead, so a new task
    needs no edit here."""

    @classmethod
    def supports(cls, task) -> bool:
        """Whether this method adapts for ``task`` (a registered :class:`~headstart.tasks.Task`)."""
        return task.name in cls.tasks

    @classmethod
    def supported_tasks(cls) -> list[str]:
        from ..tasks import TASKS

        return [name for name, task in TASKS.items() if cls.supports(task)]

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.config_cls()

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> Method:
        """Build from user options, rejecting unknown names (no silent typos)."""
        options = dict(options or {})
        known = {f.name for f in fields(cls.config_cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            from ..errors import did_you_mean

            hint = did_you_mean(unknown[0], known)
            raise BadInput(
                f"method {cls.name!r} has no option {unknown[0]!r}.{hint} Its options: {', '.join(sorted(known))}"
            )
        config = cls.config_cls(**options)
        if hasattr(config, "validate"):
            config.validate(cls.name)
        return cls(config)

    def check_task(self, task) -> None:
        """Refuse (BadInput) options that make no sense for ``task`` (e.g. head options where the
        task adds no head); called by :meth:`headstart.recipe.Recipe.validate` before any work."""

    @abstractmethod
    def fit(self, backbone: Backbone, train: Dataset, val: Dataset, ctx: FitContext) -> dict[str, Any]:
        """Train; return a summary (chosen hyperparameters, parameter counts, timings)."""

    @abstractmethod
    def predict_proba(self, backbone: Backbone, data: Dataset, ctx: FitContext) -> np.ndarray:
        """(N, n_classes) probabilities, columns in ``ctx.classes`` order."""

    def embed(self, backbone: Backbone, data: Dataset, ctx: FitContext) -> np.ndarray:
        """(N, D) features of the body as this method left it (the frozen body by default):
        what an index of the run's embeddings holds."""
        return backbone.embed(list(data.inputs), precision=ctx.precision, desc="embedding")

    def task_model(self, backbone: Backbone, ctx: FitContext) -> torch.nn.Module:
        """The task's model (:meth:`headstart.tasks.Task.build_model`) as this method left it, in
        eval mode: what tasks that decode with the whole model (speech recognition) run. By
        default the body as loaded, every weight frozen (the zero-shot model)."""
        from ..tasks import get_task

        model = get_task(ctx.task).build_model(backbone, None, ctx)
        for p in model.parameters():
            p.requires_grad_(False)
        return model.to(backbone.device).eval()

    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the tensors this method added or changed."""

    @abstractmethod
    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None: ...

    @abstractmethod
    def resolved_config(self) -> dict[str, Any]:
        """The configuration as used (chosen values filled in), for the run manifest."""
