"""Full fine-tuning: every weight of the body trains, at a small rate, with optional layer decay.

Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA; Howard & Ruder 2018 "discriminative
fine-tuning"): block ``i`` of ``L`` trains at ``lr * layer_decay ** (L - i)``, embeddings (before
the first block) at ``lr * layer_decay ** (L + 1)``, so lower, more general layers move less.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import BadInput
from ._layers import find_blocks
from .base import FitContext
from .trained import TaskModel, TrainedConfig, TrainedMethod, _decay_groups, _fraction


@dataclass
class FinetuneConfig(TrainedConfig):
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay factor in (0, 1]; 1 trains every layer at ``lr``."""

    def validate(self, method: str) -> None:
        super().validate(method)
        if not (_fraction(self.layer_decay) and self.layer_decay > 0) and self.layer_decay != 1.0:
            raise BadInput(f"{method} option layer_decay must be a number in (0, 1] (got {self.layer_decay!r})")


class Finetune(TrainedMethod):
    """All body weights and the head train; the body's buffers (BatchNorm statistics) are saved."""

    name = "finetune"
    config_cls = FinetuneConfig
    saves_buffers = True

    def prepare(self, model: TaskModel, ctx: FitContext) -> None:
        for p in model.body.parameters():
            p.requires_grad_(True)

    def body_param_groups(self, model: TaskModel, lr: float) -> list[dict]:
        decay = self.resolved_.layer_decay
        params = [p for p in model.body.parameters() if p.requires_grad]
        if decay == 1.0:
            return _decay_groups(params, lr)
        blocks = find_blocks(model.body)
        depth_of = {}
        for i, (_, block) in enumerate(blocks):
            for p in block.parameters():
                depth_of[id(p)] = i + 1
        n = len(blocks)
        seen_block = False
        groups: dict[int, list[nn.Parameter]] = {}
        for p in params:
            if id(p) in depth_of:
                seen_block = True
                depth = depth_of[id(p)]
            else:
                depth = n + 1 if seen_block else 0  # after the blocks (final norm, pooler) or embeddings
            groups.setdefault(depth, []).append(p)
        out = []
        for depth, ps in sorted(groups.items()):
            out += _decay_groups(ps, lr * decay ** max(0, n + 1 - depth) if depth <= n else lr)
        return out
