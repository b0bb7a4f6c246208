"""One backbone interface across modalities.

A backbone turns raw inputs (texts, image paths) into batches (:meth:`collate`) and batches into
one feature vector per example (:meth:`forward_features`, differentiable, for methods that train
the body). :meth:`embed` is the frozen, batched, no-grad path that linear probing uses: inputs are
ordered by length so padding is minimal, and bf16 autocast is applied when asked for.

A backbone does not choose its device: :func:`headstart.device.select_device` does, once, when
the backbone is opened (:func:`headstart.backbones.open_backbone`), and the backbone carries it
as :attr:`Backbone.device` for every method, the trainer and the plan to read.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .._util import progress, status
from ..catalog import BackboneSpec
from ..device import DEVICE_TYPES, select_device
from ..errors import BadInput
from .batch_size import plan_batches


def cost_batches(costs: list[int], budget: int, max_batch: int) -> list[list[int]]:
    """Index batches in decreasing cost order, each within a compute budget (cost x size): how
    every backbone batches what it encodes (the plan's cost model reuses it to count padding)."""
    order = sorted(range(len(costs)), key=lambda i: -costs[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        # Costs only decrease, so the first example of a batch is its largest.
        width = costs[cur[0]] if cur else costs[i]
        if cur and (len(cur) + 1 > max_batch or (len(cur) + 1) * width > budget):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def collated_ahead(batches: list[list[int]], collate, prepared: list):
    """Yield ``(idx, collate([prepared[i] for i in idx]))`` for each batch in order, the next
    batch collated by a background thread while the caller runs the current one (decode-ahead:
    image decoding and resizing overlap the model's forward pass instead of alternating with it).
    At most one batch waits ready; an error in collating is raised where that batch is taken."""
    from concurrent.futures import ThreadPoolExecutor

    if len(batches) <= 1:
        for idx in batches:
            yield idx, collate([prepared[i] for i in idx])
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="headstart-collate")
    try:
        pending = pool.submit(collate, [prepared[i] for i in batches[0]])
        for k, idx in enumerate(batches):
            batch = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(collate, [prepared[i] for i in batches[k + 1]])
            yield idx, batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def encode_batched(inputs: list, *, prepare, cost, collate, forward, dim: int, module: torch.nn.Module,
                   device: torch.device, precision: str, budget: int, max_batch: int, measure: dict | None,
                   desc: str) -> np.ndarray:
    """(N, dim) float32 outputs of ``forward`` over ``inputs``, in input order, with no grad: the one
    batched inference loop every encoder runs (a backbone's frozen features, a dual encoder's towers).

    ``prepare`` / ``cost`` / ``collate`` turn inputs into batches; batches are cut by ``cost`` within
    ``(budget, max_batch)``, or, where ``measure`` is given (inputs of one cost: images, keyed by that
    preprocessing signature), at the batch size measured fastest on this machine
    (:mod:`headstart.backbones.batch_size`); the next batch is collated while the current one runs
    (:func:`collated_ahead`); ``precision="bf16"`` runs ``module`` under :func:`bf16_inference`."""
    prepared = prepare(list(inputs))
    out = np.empty((len(prepared), dim), dtype=np.float32)
    numerics = bf16_inference(module, device) if precision == "bf16" else nullcontext()
    plan = plan_batches(len(prepared), measure, device, precision, max_batch) if measure is not None else None

    def run(idx: list[int], collated: dict) -> float:
        batch = {k: v.to(device) for k, v in collated.items()}
        t0 = time.perf_counter()
        out[idx] = forward(batch).float().cpu().numpy()
        return time.perf_counter() - t0

    with torch.inference_mode(), progress(len(prepared), desc, unit="ex") as bar, numerics:
        if plan is None:
            batches = cost_batches([cost(p) for p in prepared], budget, max_batch)
        else:
            for idx, collated in collated_ahead(plan.trials, collate, prepared):
                try:
                    plan.record(idx, run(idx, collated))
                except torch.OutOfMemoryError:
                    break  # this size and larger do not fit: choose among the smaller ones
                bar.update(len(idx))
            batches = plan.rest()
        for idx, collated in collated_ahead(batches, collate, prepared):
            run(idx, collated)
            bar.update(len(idx))
    return out


class Backbone(ABC):
    modality: ClassVar[str]
    trains: ClassVar[bool] = True
    """False for backbones that give frozen features only (ONNX, numpy): linear probing only."""
    causal_lm: ClassVar[bool] = False
    """True for a causal language model: it generates (task ``generation``) and is never pooled
    into features for the encoder tasks (:meth:`headstart.tasks.Task.check_backbone`)."""
    kind: ClassVar[str] = "torch module"
    devices: ClassVar[tuple[str, ...]] = DEVICE_TYPES
    """Device types the family runs on, passed to :func:`~headstart.device.select_device`."""

    def __init__(self, spec: BackboneSpec, path: Path, device: torch.device | None = None):
        self.spec = spec
        self.path = path
        self.device: torch.device = device if device is not None else select_device(supported=self.devices)
        """Where the module and its batches go (decided by :func:`~headstart.device.select_device`)."""
        self.module_: torch.nn.Module | None = None

    # -- to implement per modality -------------------------------------------------------------
    @abstractmethod
    def load(self) -> Backbone:
        """Build the torch module from the weights (the heavy step). Returns self."""

    @property
    @abstractmethod
    def feature_dim(self) -> int: ...

    @abstractmethod
    def prepare(self, inputs: list) -> list:
        """Cheap per-example preparation (tokenise a text; keep an image path)."""

    @abstractmethod
    def cost(self, prepared: Any) -> int:
        """Relative compute of one prepared example (tokens for text; 1 for images)."""

    @abstractmethod
    def collate(self, prepared: list) -> dict[str, torch.Tensor]:
        """Stack prepared examples into model inputs (padding as needed)."""

    @abstractmethod
    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, feature_dim) features, differentiable when the module trains."""

    def preprocessing_signature(self) -> dict:
        """Everything besides the weights that changes the features (goes into cache keys)."""
        return {"family": self.spec.family, **self.spec.to_dict()["preprocessing"]}

    # -- shared --------------------------------------------------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        if self.module_ is None:
            status(f"loading backbone {self.spec.name} ...")
            self.load()
        assert self.module_ is not None
        return self.module_

    @property
    def feature_module(self) -> torch.nn.Module:
        """The part of the module :meth:`forward_features` runs: what a classification head sits on
        and a method adapts (the whole module, except for encoder-decoders: their encoder)."""
        return self.module

    def batches(self, prepared: list, budget: int, max_batch: int) -> list[list[int]]:
        """Index batches in decreasing cost order, each within a compute budget (cost x size)."""
        return cost_batches([self.cost(p) for p in prepared], budget, max_batch)

    def embed(self, inputs: list, *, precision: str = "fp32", desc: str = "encoding") -> np.ndarray:
        """Frozen features for ``inputs`` as float32, in input order."""
        # Load outside inference mode: buffers created under it (BERT's position_ids) could never
        # be used by a method that trains the same module afterwards.
        module = self.module.to(self.device)
        with torch.inference_mode():
            return self._embed(module, inputs, precision, desc)

    def _embed(self, module: torch.nn.Module, inputs: list, precision: str, desc: str) -> np.ndarray:
        """Features of ``inputs`` through ``module`` in eval mode (its training mode restored after):
        the frozen path :meth:`embed` and the image-text task's towers (:mod:`headstart.backbones.dual`)
        both take."""
        was_training = module.training
        module.eval()
        try:
            run = self.inference_module(module)
            budget, max_batch = self.batch_budget
            return encode_batched(
                inputs, prepare=self.prepare, cost=self.cost, collate=self.collate,
                forward=lambda batch: self.embed_forward(run, batch), dim=self.feature_dim, module=run,
                device=self.device, precision=precision, budget=budget, max_batch=max_batch,
                measure=self.preprocessing_signature() if self.uniform_cost else None, desc=desc)
        finally:
            module.train(was_training)

    uniform_cost: ClassVar[bool] = False
    """Every input costs the same (images): :meth:`embed` batches at the size measured fastest on
    this machine (:mod:`headstart.backbones.batch_size`) instead of by :attr:`batch_budget`."""

    def inference_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module :meth:`embed` runs in eval mode for frozen features: ``module`` itself, or an
        equivalent faster for inference (EfficientNet folds its batch norms into the convs)."""
        return module

    def embed_forward(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`forward_features` through ``module`` (what :meth:`inference_module` gave)."""
        return self.forward_features(batch)

    def reinitialize(self) -> None:
        """Replace the pretrained weights with a fresh random initialisation (seeded by torch's RNG).

        Generic version: every submodule's own ``reset_parameters``; families with a native
        initialiser (Hugging Face ``from_config``) override it.
        """
        for m in self.module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def param_count(self) -> int | None:
        """Parameters of the body (from the catalog when the module was never loaded)."""
        if self.module_ is None:
            return self.spec.params
        return int(sum(p.numel() for p in self.module_.parameters()))

    batch_budget: ClassVar[tuple[int, int]] = (8192, 128)
    """(compute budget per batch, max examples per batch) for :meth:`embed`."""


def quiet_transformers() -> None:
    """transformers' own progress bars and info logs would interleave with ours."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@contextmanager
def bf16_inference(module: torch.nn.Module, device: torch.device):
    """bf16 autocast with every linear layer's weight cast once, up front (restored afterwards).

    The inference numerics of ``precision="bf16"``: backbones use it for features, trained methods
    (``methods.trained``) around their own forward passes."""
    from ..train.precision import linears_in_bf16

    with linears_in_bf16(module), torch.autocast(device.type, dtype=torch.bfloat16):
        yield


def check_modality(backbone_spec: BackboneSpec, data_modality: str, source: str) -> None:
    if backbone_spec.modality != data_modality:
        raise BadInput(
            f"backbone {backbone_spec.name!r} takes {backbone_spec.modality} but {source} holds {data_modality}; "
            f"choose a {data_modality} backbone (see `headstart models`)"
        )
