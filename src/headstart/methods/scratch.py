"""From scratch: the backbone's architecture, randomly initialised, trained like full fine-tuning.

The baseline that shows what transfer saved: same tokenizer/preprocessing, same data, same
step budget as ``finetune`` (its own, larger learning rate), no pretrained weights. The run still
records the backbone it took the architecture from.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backbones import Backbone
from ..errors import BadInput
from .finetune import Finetune, FinetuneConfig


@dataclass
class ScratchConfig(FinetuneConfig):
    def validate(self, method: str) -> None:
        super().validate(method)
        if self.head_init == "probe":
            raise BadInput(f"{method}: head_init=probe would fit the head on pretrained features the random body does not have; use head_init=zero")


class Scratch(Finetune):
    name = "scratch"
    config_cls = ScratchConfig

    def before_build(self, backbone: Backbone) -> None:
        backbone.reinitialize()
