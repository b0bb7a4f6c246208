"""Frozen: the pretrained body as it is, no weight changed -- the zero-shot baseline.

For tasks whose model is the body itself (retrieval's pooled embeddings) this is the lightest
rung of the menu and the baseline every report shows beside the adapted model: what the base
already does on the user's queries before any compute is spent. (Classification needs a head,
so its lightest rung is ``linear-probe``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..backbones import Backbone
from ..data import Dataset
from ..errors import BadInput, RunIntegrityError
from .base import FitContext, Method


@dataclass
class FrozenConfig:
    """No options: nothing is trained."""


class Frozen(Method):
    name = "frozen"
    config_cls = FrozenConfig
    trains_backbone: ClassVar[bool] = False
    tasks: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def supports(cls, task) -> bool:
        """Tasks whose model is the body itself (no head to train: retrieval, similarity), and
        tasks whose pretrained model scores as it is (image-text with CLIP: ``Task.zero_shot``)."""
        return not task.has_head or task.zero_shot

    def fit(self, backbone: Backbone, train, val, ctx: FitContext) -> dict[str, Any]:
        params = backbone.param_count()
        return {"trainable_params": 0, "total_params": params, "frozen_params": params, "trainable_percent": 0.0,
                "steps": 0, "zero_shot": True}

    def predict_proba(self, backbone: Backbone, data: Dataset, ctx: FitContext) -> np.ndarray:
        """Labels from the body itself where the task says how (zero-shot: class prompts)."""
        from ..tasks import get_task

        proba = get_task(ctx.task).frozen_proba(backbone, data, ctx)
        if proba is not None:
            return proba
        raise BadInput("method 'frozen' adds no head, so it gives embeddings, not labels; for classification use "
                       "--method linear-probe")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            raise RunIntegrityError(f"frozen: the run holds {len(tensors)} tensors, but the method trains none; the run "
                                    "was made by another method")

    def resolved_config(self) -> dict[str, Any]:
        return {}
