"""Classification: one label per example (text, image; later audio), a linear head on the pooled
body, cross-entropy, accuracy to select on."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..evaluate.metrics import MetricSpec
from .base import Objective, Task


class Classification(Task):
    name: ClassVar[str] = "classification"
    primary: ClassVar[MetricSpec] = MetricSpec("accuracy")
    metrics: ClassVar[tuple[MetricSpec, ...]] = (MetricSpec("accuracy"), MetricSpec("macro_f1"))

    def objective(self, train_labels: torch.Tensor, val_batches: list[list[int]], val_labels: torch.Tensor,
                  collate_val, device: torch.device) -> Objective:
        """Cross-entropy on logits (labels by example index); validation accuracy, ties by the
        validation cross-entropy."""

        def loss(logits: torch.Tensor, idx: list[int]) -> torch.Tensor:
            return nn.functional.cross_entropy(logits.float(), train_labels[idx].to(logits.device), reduction="none")

        def evaluate(model: nn.Module) -> dict[str, float]:
            correct, loss_sum, n = 0, 0.0, 0
            for idx in val_batches:
                batch = {k: v.to(device) for k, v in collate_val(idx).items()}
                logits = model(batch).float()
                y = val_labels[idx].to(device)
                loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                n += len(idx)
            return {"accuracy": correct / max(1, n), "loss": loss_sum / max(1, n)}

        return Objective(loss=loss, evaluate=evaluate, metric=self.primary, val_examples=sum(len(b) for b in val_batches))


__all__ = ["Classification"]
