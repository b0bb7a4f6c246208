"""The task interface and the objective a task hands the one trainer."""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..evaluate.metrics import MetricSpec


@dataclass
class Objective:
    """What the trainer optimises and selects on; everything task-specific (labels, pairs,
    corpora) stays inside these callables, so the loop itself mentions none of it.

    ``loss(outputs, idx)`` maps the model's outputs for the training examples ``idx`` to their
    per-example losses, shape (B,): the trainer sums them and divides by the optimizer step's
    size, so micro-batches of unequal size weigh correctly under gradient accumulation.

    ``evaluate(model)`` scores the model (already in eval mode, under no-grad and the run's
    autocast) on the validation split and returns ``{metric: value, "loss": value}``. Selection
    is by ``metric`` in its direction, ties broken by the lower loss.
    """

    loss: Callable[[Any, list[int]], torch.Tensor]
    evaluate: Callable[[nn.Module], dict[str, float]]
    metric: MetricSpec
    val_examples: int
    """Examples one validation pass reads (the budget predicts its time from this)."""
    per_example: bool = True
    """True: ``loss`` returns (B,) per-example losses (summed, then divided by the step size);
    False: a batch scalar (a pairwise loss such as CoSENT), weighted by the micro-batch's size
    (:func:`headstart.train.losses.step_share`)."""

    def key(self, scores: dict[str, float]) -> tuple[float, float]:
        """Larger is better: the selection metric in its direction, then the lower loss."""
        value = scores[self.metric.name]
        return (value if self.metric.higher_is_better else -value, -scores["loss"])


class Task(ABC):
    """A kind of problem: what a model adds on the body, its loss, its metrics.

    Subclasses set ``name``, ``primary`` (the metric selection and reports lead with) and
    ``metrics`` (every metric a run records, with direction and bounds)."""

    name: ClassVar[str]
    primary: ClassVar[MetricSpec]
    metrics: ClassVar[tuple[MetricSpec, ...]]

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        from ..errors import BadInput, did_you_mean

        raise BadInput(f"task {self.name!r} has no metric {name!r}.{did_you_mean(name, [m.name for m in self.metrics])} "
                       f"Its metrics: {', '.join(m.name for m in self.metrics)}")


__all__ = ["Objective", "Task"]
