"""LoRA and DoRA: low-rank updates on the blocks' linear layers; the body stays frozen.

Targets default to every ``nn.Linear`` inside the backbone's repeated blocks (attention and
feed-forward, as QLoRA recommends); in a convolutional net whose blocks have none (EfficientNet's
MBConv blocks) to every pointwise 1x1 conv (``_expand_conv``, ``_project_conv``), the update
applied as two 1x1 convs (:class:`~headstart.methods._layers.LoRAConv2d`). ``--set
targets=query,value`` narrows them to layers named relative to a block. The run records the
layers it adapted. Trainable parameters: ``sum over targets of rank * (in + out)`` (+ ``out`` per
target for DoRA's magnitudes) + the head. Batch norms stay frozen and in eval mode while training
(their running statistics are the pretrained ones; see ``TrainedMethod._set_train_mode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import BadInput
from ._layers import ADAPTABLE, linear_targets, lora_layer, replace_module
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
    """Layers to adapt, named relative to a block (default: all linear layers in the blocks, or all
    pointwise convs where the blocks have no linear layer)."""

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
    target_kinds: ClassVar[tuple[str, ...]] = ADAPTABLE
    """Layer kinds the method adapts, in order of preference (``_layers.ADAPTABLE``: linear layers,
    else pointwise convs)."""

    def freeze_and_target(self, model: TaskModel) -> list[tuple[str, str]]:
        for p in model.body.parameters():
            p.requires_grad_(False)
        return linear_targets(model.body, parse_targets(self.resolved_.targets, self.name), what=self.name,
                              kinds=self.target_kinds)

    def wrap(self, model: TaskModel, targets: list[tuple[str, str]]) -> None:
        cfg = self.resolved_
        for name, _ in targets:
            base = model.body.get_submodule(name)
            replace_module(model.body, name, lora_layer(base, cfg.rank, cfg.alpha, cfg.lora_dropout, dora=self.dora))
        self.targets_ = targets

    def prepare(self, model: TaskModel, ctx: FitContext) -> None:
        self.wrap(model, self.freeze_and_target(model))

    def fit_details(self, model: TaskModel) -> dict[str, Any]:
        return {"target_layers": sorted({rel for _, rel in self.targets_}), "target_count": len(self.targets_)}


class DoRA(LoRA):
    """LoRA with a weight-decomposed update (magnitude x direction), Liu et al. 2024."""

    name = "dora"
    dora = True
