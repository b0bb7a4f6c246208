"""Head only: the body stays frozen as loaded; only what the task adds on it trains.

For image-text this is the projections-only rung (LiT's locked towers): the two projections into
the shared space and the temperature train on the towers' cached features, so an epoch costs a
few matrix products once the features are in the cache. Tasks say whether the rung exists for
them (``Task.head_only``); classification's lightest rung is ``linear-probe`` instead.
"""

from __future__ import annotations

from .base import FitContext
from .trained import TaskModel, TrainedConfig, TrainedMethod


class HeadOnly(TrainedMethod):
    name = "head-only"
    config_cls = TrainedConfig

    @classmethod
    def supports(cls, task) -> bool:
        return bool(getattr(task, "head_only", False))

    def prepare(self, model: TaskModel, ctx: FitContext) -> None:
        for p in model.body.parameters():
            p.requires_grad_(False)
