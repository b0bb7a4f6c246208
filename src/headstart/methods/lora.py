"""LoRA and DoRA: low-rank updates on the blocks' linear layers; the body stays frozen.

Targets default to every ``nn.Linear`` inside the backbone's repeated blocks (attention and
feed-forward, as QLoRA recommends); ``--set targets=query,value`` narrows them to layers named
relative to a block. The run records the layers it adapted. Trainable parameters:
``sum over targets of rank * (in + out)`` (+ ``out`` per target for DoRA's magnitudes) + the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import BadInput
from ._layers import LoRALinear, linear_targets, replace_module
from .base import FitContext
from .trained import TaskModel, TrainedConfig, TrainedMethod, _fraction, _positive, _positive_int, parse_targets


@dataclass
class LoRAConfig(TrainedConfig):
    rank: int | None = None
    """Rank r of the update B A."""
    alpha: float | None = None
    """Scale: the update is multiplied by alpha / r."""
    lora_dropout: float | None = None
    """Dropout on the LoRA branch's input."""
    targets: Any = None
    """Linear layers to adapt, named relative to a block (default: all in the blocks)."""

    def validate(self, method: str) -> None:
        super().validate(method)
        for name, check in (("rank", _positive_int), ("alpha", _positive), ("lora_dropout", _fraction)):
            value = getattr(self, name)
            if value is not None and not check(value):
                raise BadInput(f"{method} option {name} must be {check.__doc__} (got {value!r})")
        parse_targets(self.targets, method)


class LoRA(TrainedMethod):
    name = "lora"
    config_cls = LoRAConfig
    dora: ClassVar[bool] = False

    def freeze_and_target(self, model: TaskModel) -> list[tuple[str, str]]:
        for p in model.body.parameters():
            p.requires_grad_(False)
        return linear_targets(model.body, parse_targets(self.resolved_.targets, self.name), what=self.name)

    def wrap(self, model: TaskModel, targets: list[tuple[str, str]]) -> None:
        cfg = self.resolved_
        for name, _ in targets:
            base = model.body.get_submodule(name)
            replace_module(model.body, name, LoRALinear(base, cfg.rank, cfg.alpha, cfg.lora_dropout, dora=self.dora))
        self.targets_ = targets

    def prepare(self, model: TaskModel, ctx: FitContext) -> None:
        self.wrap(model, self.freeze_and_target(model))

    def fit_details(self, model: TaskModel) -> dict[str, Any]:
        return {"target_layers": sorted({rel for _, rel in self.targets_}), "target_count": len(self.targets_)}


class DoRA(LoRA):
    """LoRA with a weight-decomposed update (magnitude x direction), Liu et al. 2024."""

    name = "dora"
    dora = True
