"""Backbones by modality, and the one function that builds one from a name."""

from __future__ import annotations

from ..catalog import BackboneSpec, identity, locate, resolve, with_local_family
from ..errors import BadInput
from .base import Backbone, check_modality
from .frozen import OnnxTextBackbone, UseNumpyBackbone
from .text import TextBackbone
from .vision import EfficientNetLiteBackbone, HFImageBackbone

FAMILIES: dict[str, type[Backbone]] = {
    "hf-text": TextBackbone,
    "hf-image": HFImageBackbone,
    "efficientnet-lite": EfficientNetLiteBackbone,
    "onnx-text": OnnxTextBackbone,
    "use-numpy": UseNumpyBackbone,
}


def family_trains(spec: BackboneSpec) -> bool:
    """Whether a backbone's weights can be trained (known from its family, without loading it)."""
    cls = FAMILIES.get(spec.family)
    return True if cls is None else cls.trains


def open_backbone(name_or_spec: str | BackboneSpec, *, rehash: bool = False) -> tuple[Backbone, str]:
    """Locate a backbone's weights and return it (not yet loaded) with its identity hash
    (``rehash``: computed from every byte, not from the identity cache)."""
    spec = resolve(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    path = locate(spec)
    spec = with_local_family(spec, path)
    try:
        cls = FAMILIES[spec.family]
    except KeyError:
        raise BadInput(f"backbone {spec.name!r} has an unknown family {spec.family!r}") from None
    return cls(spec, path), identity(path, rehash=rehash)


__all__ = ["Backbone", "BackboneSpec", "FAMILIES", "check_modality", "family_trains", "open_backbone"]
