"""Bottleneck adapters (Houlsby et al. 2019) after each block's attention and feed-forward output.

The body stays frozen except its layer norms (``train_norms``, as in the paper). Trainable
parameters: per adapter ``2 * hidden * bottleneck + bottleneck + hidden``, plus the norms and
the head. Sites are found per architecture family (``_layers.ADAPTER_SITES``) or named with
``--set targets=ATTN_OUT,FFN_OUT``. In a convolutional net (EfficientNet's MBConv blocks) one
adapter of 1x1 convs follows each block's projection conv (``_project_conv``, before its batch
norm and the residual); ``hidden`` is then that conv's output channels. Batch norms are not
trained (``train_norms`` is about layer norms) and stay in eval mode with their pretrained
statistics (``TrainedMethod._set_train_mode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import BadInput
from ._layers import Adapter, adapter_targets, replace_module
from .base import FitContext
from .trained import TaskModel, TrainedConfig, TrainedMethod, _positive_int, parse_targets


@dataclass
class AdapterConfig(TrainedConfig):
    bottleneck: int | None = None
    """Width of the adapter's bottleneck."""
    train_norms: bool = True
    """Also train the body's layer norms (Houlsby et al. do)."""
    targets: Any = None
    """Layers to put adapters after, named relative to a block (default: attention and FFN outputs)."""

    def validate(self, method: str) -> None:
        super().validate(method)
        if self.bottleneck is not None and not _positive_int(self.bottleneck):
            raise BadInput(f"{method} option bottleneck must be an integer >= 1 (got {self.bottleneck!r})")
        if not isinstance(self.train_norms, bool):
            raise BadInput(f"{method} option train_norms must be true or false (got {self.train_norms!r})")
        parse_targets(self.targets, method)


class AdapterMethod(TrainedMethod):
    name = "adapter"
    config_cls = AdapterConfig

    def prepare(self, model: TaskModel, ctx: FitContext) -> None:
        cfg = self.resolved_
        for p in model.body.parameters():
            p.requires_grad_(False)
        targets = adapter_targets(model.body, parse_targets(cfg.targets, self.name))
        for name, _ in targets:
            replace_module(model.body, name, Adapter(model.body.get_submodule(name), cfg.bottleneck))
        if cfg.train_norms:
            for m in model.body.modules():
                if isinstance(m, nn.LayerNorm):
                    for p in m.parameters():
                        p.requires_grad_(True)
        self.targets_ = targets

    def fit_details(self, model: TaskModel) -> dict[str, Any]:
        return {"target_layers": sorted({rel for _, rel in self.targets_}), "adapter_count": len(self.targets_)}
