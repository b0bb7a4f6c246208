"""Image-text dual encoders as the image-text task trains them, and the locked-image pair.

A dual encoder (a backbone class with ``dual_encoder = True``) hands the image-text task
(:mod:`headstart.tasks.image_text`) its two towers as :class:`Side` objects
(:meth:`sides`): each tower's weights (what a method freezes, injects LoRA into or fine-tunes),
how a batch becomes its pooled features *before* the projection, how its inputs are prepared and
collated, and its projection into the shared space. CLIP and SigLIP bring pretrained projections
and temperature (:class:`~headstart.backbones.clip.ClipBackbone`); the pair below brings none, so
the task adds fresh ones and trains them.

The locked-image pair (LiT, Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text
Tuning") is assembled from two packaged backbones: an image tower (EfficientNet-Lite) and a text
tower (a sentence encoder such as MiniLM), each with its own pooling, joined by two linear
projections into a shared space and a learned temperature, all trained by the image-text task.
Its identity is both towers' identities (:func:`pair_identity`), so a change to either weight
file is a new base: runs refuse it and ``drift`` compares against it (the catalog's
``lit-lite0-minilm`` and ``lit-lite0-mpnet`` differ only in the text tower). Any two towers pair
as ``--backbone pair:IMAGE+TEXT`` (catalog names or model folders).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..catalog import BackboneSpec
from ..errors import BadInput
from .vision import ImageBackbone

LIT_DIM = 256
"""Width of the shared space a pair's fresh projections map both towers into."""
LIT_TEMPERATURE = 0.07
"""A pair's starting temperature (CLIP's: logit scale ``1 / 0.07``); it is learned."""


@dataclass
class Side:
    """One tower of a dual encoder: ``module`` holds its weights (the same module objects the
    backbone runs, so what a method changes in it is what ``features`` computes with)."""

    name: str
    """'image' or 'text'."""
    module: nn.Module
    features: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    """A collated batch -> (B, dim) pooled features before the projection (differentiable)."""
    prepare: Callable[[list], list]
    cost: Callable[[Any], int]
    collate: Callable[[list], dict[str, torch.Tensor]]
    dim: int
    projection: nn.Module | None
    """The pretrained projection into the shared space (``nn.Identity`` where the tower's output is
    the embedding already); None: the task adds a fresh linear one."""
    signature: dict
    """Everything besides the weights that changes the features (the feature cache's key)."""
    augment: Callable[[list, np.random.Generator], dict[str, torch.Tensor]] | None = None
    """``collate`` with training-time augmentation (images), None where the side has none."""
    batch_budget: tuple[int, int] = (16, 16)
    identity: str | None = None
    """The tower's own weights' identity where it has one apart from the model's (a pair's towers):
    its cached features are then shared by every pair holding the same tower."""
    encode: Callable[[list, str, str], np.ndarray] | None = None
    """``(items, precision, desc) -> (N, dim)`` no-grad features by the tower's own backbone path
    (:meth:`~headstart.backbones.base.Backbone._embed`: its inference module, such as folded batch
    norms, and its measured batch size) where the side is a whole backbone; None: the task runs
    ``features`` through :func:`~headstart.backbones.base.encode_batched` itself."""


def pair_identity(image_hash: str, text_hash: str) -> str:
    """A pair's identity: sha256 over both towers' identities (either changing changes it)."""
    return hashlib.sha256(f"image\0{image_hash}\ntext\0{text_hash}\n".encode()).hexdigest()


def pair_towers(spec: BackboneSpec) -> tuple[str, str]:
    """(image tower, text tower) names of a pair spec (its ``source`` is a JSON list of the two)."""
    try:
        image, text = json.loads(spec.source)
    except (ValueError, TypeError):
        raise BadInput(f"backbone {spec.name!r}: a pair's source must list its image and text towers") from None
    return str(image), str(text)


class PairModule(nn.Module):
    """Both towers of a pair as one module (what ``backbone.module`` is): ``image`` and ``text``."""

    def __init__(self, image: nn.Module, text: nn.Module):
        super().__init__()
        self.image = image
        self.text = text


class LitPairBackbone(ImageBackbone):
    """A locked-image pair: an image backbone and a text backbone, each opened by its own family.

    As an image backbone (image classification, the linear probe) its features are the image
    tower's own. For the image-text task it is a dual encoder whose projections and temperature the
    task adds fresh and trains (``projections_pretrained = False``): the frozen pair has no
    zero-shot ability until an image-text run trains them."""

    dual_encoder: ClassVar[bool] = True
    projections_pretrained: ClassVar[bool] = False
    contrastive: ClassVar[str] = "infonce"
    default_towers: ClassVar[str] = "text"
    """Which towers an image-text method adapts by default: the text side (the image side stays
    locked, LiT's finding that a locked image tower transfers best)."""

    def __init__(self, spec: BackboneSpec, path: Path, device: torch.device | None = None, *, image=None, text=None,
                 hashes: tuple[str | None, str | None] = (None, None)):
        super().__init__(spec, path, device)
        self.image_bb = image
        self.text_bb = text
        self.tower_hashes = hashes

    @classmethod
    def open(cls, spec: BackboneSpec, *, device: str = "auto", rehash: bool = False):
        """Both towers opened (by name: catalog entries or folders) with the pair's identity."""
        from . import open_backbone

        image_name, text_name = pair_towers(spec)
        image, image_hash = open_backbone(image_name, rehash=rehash, device=device)
        text, text_hash = open_backbone(text_name, rehash=rehash, device=device)
        if image.spec.modality != "image" or getattr(image, "dual_encoder", False):
            raise BadInput(f"backbone {spec.name!r}: its image tower {image_name!r} is not an image encoder "
                           f"({image.spec.modality}); pair an image backbone (efficientnet-lite0, a ViT folder) with a text one")
        if text.spec.modality != "text" or not text.trains or getattr(type(text), "causal_lm", False):
            raise BadInput(f"backbone {spec.name!r}: its text tower {text_name!r} is not a trainable text encoder; pair "
                           "a sentence encoder (minilm-l6, mpnet-base, a BERT-style folder)")
        if image.device != text.device:
            raise BadInput(f"backbone {spec.name!r}: its towers chose different devices ({image.device}, {text.device}); "
                           "set HEADSTART_DEVICE")
        pair = cls(spec, image.path, image.device, image=image, text=text, hashes=(image_hash, text_hash))
        return pair, pair_identity(image_hash, text_hash)

    # -- the module ------------------------------------------------------------------------------
    def load(self) -> LitPairBackbone:
        self.module_ = PairModule(self.image_bb.module, self.text_bb.module)
        self.module_.eval()
        return self

    def reinitialize(self) -> None:
        """Both towers re-initialised by their own families."""
        self.image_bb.reinitialize()
        self.text_bb.reinitialize()
        self.module_ = PairModule(self.image_bb.module, self.text_bb.module).eval()

    @property
    def feature_module(self) -> nn.Module:
        return self.image_bb.module

    @property
    def feature_dim(self) -> int:
        return self.image_bb.feature_dim

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.image_bb.forward_features(batch)

    def prepare(self, inputs):
        return self.image_bb.prepare(inputs)

    def collate(self, prepared):
        return self.image_bb.collate(prepared)

    def collate_augmented(self, prepared, rng):
        return self.image_bb.collate_augmented(prepared, rng)

    def preprocessing_signature(self) -> dict:
        return {"family": self.spec.family, "image": self.image_bb.preprocessing_signature()}

    def param_count(self) -> int | None:
        counts = [self.image_bb.param_count(), self.text_bb.param_count()]
        return None if None in counts else int(sum(counts))

    # -- the dual encoder ------------------------------------------------------------------------
    def sides(self) -> tuple[Side, Side]:
        return (backbone_side("image", self.image_bb, self.tower_hashes[0]),
                backbone_side("text", self.text_bb, self.tower_hashes[1]))

    def temperature(self) -> tuple[float, float | None]:
        """(log of the starting logit scale, starting logit bias or None)."""
        return float(np.log(1 / LIT_TEMPERATURE)), None

    def embed_texts(self, texts):
        raise BadInput(f"backbone {self.spec.name!r} is an untrained pair: its projections come from an image-text run "
                       "(`headstart adapt PAIRS --task image-text`); embed with that run (run.embed_texts)")


def backbone_side(name: str, bb, identity: str | None = None) -> Side:
    """A whole single-modality backbone as one side of a pair (its own pooling; a fresh projection)."""
    return Side(name=name, module=bb.module, features=bb.forward_features, prepare=bb.prepare, cost=bb.cost,
                collate=bb.collate, dim=int(bb.feature_dim), projection=None,
                signature={"side": name, **bb.preprocessing_signature()},
                augment=getattr(bb, "collate_augmented", None), batch_budget=tuple(bb.batch_budget), identity=identity,
                encode=lambda items, precision, desc: bb._embed(bb.module, items, precision, desc))


__all__ = ["LIT_DIM", "LitPairBackbone", "PairModule", "Side", "backbone_side", "pair_identity", "pair_towers"]
