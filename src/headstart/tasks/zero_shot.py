"""Zero-shot image classification with an image-text dual encoder (CLIP, SigLIP): no training.

Each class gets a text embedding from prompts built from its label (Radford et al. 2021, "Learning
Transferable Visual Models From Natural Language Supervision", section 3.1.4, prompt ensembling):

    t_c = normalize( mean_k normalize(text(template_k.format(label=c))) )       # (C, D)
    p(c | image) = softmax_c( logit_scale * normalize(image) . t_c )            # (N, C)

``logit_scale`` is the model's own learned inverse temperature (``exp`` of its ``logit_scale``).
SigLIP's ``logit_bias`` shifts every class alike, so it does not change the softmax. A label's
underscores become spaces in its prompts (folder names such as ``golden_retriever``).

The data, split, metrics (accuracy, macro-F1, with 95% bootstrap intervals) and run folder are
those of :class:`~headstart.tasks.classification.Classification`; only the method differs: the
run's method is ``frozen`` (nothing trained, no tensors saved), and the templates are recorded in
the run (``manifest["task_info"]["templates"]``), so the class embeddings are recomputed from the
recorded templates and the run's classes whenever the run scores or predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .classification import Classification

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {label}.", "a picture of a {label}.", "an image of a {label}.")
"""CLIP-style prompts, averaged per class (:func:`class_embeddings`)."""


@dataclass
class ZeroShotOptions:
    templates: tuple[str, ...] | str = DEFAULT_TEMPLATES
    """Prompts with a ``{label}`` field, e.g. ``--task-set 'templates=["a photo of a {label}."]'``
    (a single string: one template); several are averaged per class, then renormalised."""

    def validate(self) -> None:
        from ..errors import BadInput

        if isinstance(self.templates, str):
            self.templates = (self.templates,)
        if not isinstance(self.templates, (tuple, list)) or not self.templates:
            raise BadInput(f"zero-shot option templates must be a non-empty list of prompts with {{label}} (got {self.templates!r})")
        for t in self.templates:
            if not isinstance(t, str) or "{label}" not in t:
                raise BadInput(f"zero-shot option templates: every template needs a {{label}} field, as in 'a photo of a "
                               f"{{label}}.' (got {t!r})")
            try:
                t.format(label="x")
            except (KeyError, IndexError, ValueError):
                raise BadInput(f"zero-shot option templates: {t!r} has a field other than {{label}}; write a literal brace "
                               "as {{ or }}") from None
        self.templates = tuple(self.templates)


def prompt_label(label: str) -> str:
    """How a class name reads inside a prompt: underscores as spaces."""
    return label.replace("_", " ")


def class_embeddings(backbone, classes: list[str], templates: list[str] | tuple[str, ...]) -> np.ndarray:
    """(C, D) float32: per class, the mean of its normalised prompt embeddings, renormalised."""
    prompts = [t.format(label=prompt_label(c)) for c in classes for t in templates]
    emb = backbone.embed_texts(prompts).reshape(len(classes), len(templates), -1)  # (C, T, D)
    mean = emb.mean(axis=1)  # (C, D)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


class _Prompted:
    """What :meth:`Classification.score` asks of a method (``predict_proba``), answered by the
    zero-shot task itself: the run's frozen method has no head to predict with."""

    def __init__(self, task: ZeroShot):
        self.task = task

    def predict_proba(self, backbone, data, ctx) -> np.ndarray:
        return self.task.frozen_proba(backbone, data, ctx)


class ZeroShot(Classification):
    name: ClassVar[str] = "zero-shot"
    options_cls: ClassVar[type] = ZeroShotOptions
    has_head: ClassVar[bool] = False

    def check_backbone(self, spec, cls) -> None:
        """Only a dual encoder (a backbone class with ``dual_encoder``: CLIP, SigLIP) embeds the prompts."""
        from ..errors import BadInput

        super().check_backbone(spec, cls)
        if cls is not None and not getattr(cls, "dual_encoder", False):
            raise BadInput(f"the task 'zero-shot' needs an image-text dual encoder and backbone {spec.name!r} "
                           f"({spec.family}) is not one; choose a CLIP or SigLIP model folder or hf: id (CLIPModel, "
                           "SiglipModel), or train a head on it with --task classification")
        if cls is not None and not getattr(cls, "projections_pretrained", True):
            raise BadInput(f"the task 'zero-shot' needs trained projections and backbone {spec.name!r} is an untrained "
                           "image-text pair; train it first (`headstart adapt PAIRS --task image-text`), then score "
                           "class folders with `headstart eval RUN FOLDER` (zero-shot accuracy)")

    def default_backbone(self, data) -> str:
        from ..errors import BadInput

        raise BadInput("the task 'zero-shot' has no default backbone: name a CLIP or SigLIP model folder or hf: id with "
                       "--backbone")

    def default_method(self, backbone: str) -> str:
        return "frozen"

    def read(self, recipe):
        from ..data import load_dataset
        from ..errors import BadInput

        if recipe.method != "frozen":
            raise BadInput(f"the task 'zero-shot' trains nothing (it scores images against prompts built from the label "
                           f"names), so --method {recipe.method} does not apply; use --method frozen (the default), or "
                           f"--task classification to train")
        opts = self.options(recipe.task_options)
        full = load_dataset(recipe.data, text_col=recipe.text_col, label_col=recipe.label_col, fmt=recipe.fmt,
                            header=recipe.header)
        data = self._read_dataset(recipe, full)
        data.info["task_info"] = {"templates": list(opts.templates)}
        return data

    def frozen_proba(self, backbone, data, ctx) -> np.ndarray:
        """(N, C) zero-shot probabilities of ``data``'s images over ``ctx.classes``, from the
        templates the run recorded (``ctx.task_info``)."""
        templates = (ctx.task_info or {}).get("templates") or list(DEFAULT_TEMPLATES)
        images = backbone.embed(list(data.inputs), precision=ctx.precision, desc="encoding images")  # (N, D), normalised
        text = class_embeddings(backbone, list(ctx.classes), templates)  # (C, D)
        logits = backbone.logit_scale * torch.from_numpy(images) @ torch.from_numpy(text).T  # (N, C)
        return torch.softmax(logits.double(), dim=-1).float().numpy()

    def score(self, method, backbone, test, ctx, *, n_resamples: int = 1000, intervals: bool = True):
        """Classification's scoring of the zero-shot probabilities; intervals by default (nothing
        is trained, so scoring is the whole run)."""
        return super().score(_Prompted(self), backbone, test, ctx, n_resamples=n_resamples, intervals=intervals)

    def describe_data(self, manifest: dict) -> str:
        split, templates = manifest["data"]["split"], (manifest.get("task_info") or {}).get("templates") or []
        return (f"{split['test']} test, {len(manifest['classes'])} classes, {len(templates)} prompt templates (zero-shot: the "
                f"{split['train'] + split['val']} train/validation examples are not used)")

    def export(self, run, out, *, merge: bool = False) -> dict:
        from ..errors import BadInput

        raise BadInput("export: zero-shot runs cannot be exported yet; use the run folder itself")

    def onnx_graph(self, method, backbone, ctx, texts):
        from ..errors import BadInput

        raise BadInput("export: zero-shot runs cannot be exported to ONNX; use the run folder itself")


__all__ = ["DEFAULT_TEMPLATES", "ZeroShot", "ZeroShotOptions", "class_embeddings", "prompt_label"]
