"""Backbones by modality, and the one function that builds one from a name."""

from __future__ import annotations

from ..catalog import BackboneSpec, identity, locate, resolve, with_local_family
from ..errors import BadInput
from .base import Backbone, check_modality
from .text import TextBackbone
from .vision import EfficientNetLiteBackbone, HFImageBackbone

FAMILIES: dict[str, type[Backbone]] = {
    "hf-text": TextBackbone,
    "hf-image": HFImageBackbone,
    "efficientnet-lite": EfficientNetLiteBackbone,
}


def open_backbone(name_or_spec: str | BackboneSpec) -> tuple[Backbone, str]:
    """Locate a backbone's weights and return it (not yet loaded) with its identity hash."""
    spec = resolve(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    path = locate(spec)
    spec = with_local_family(spec, path)
    try:
        cls = FAMILIES[spec.family]
    except KeyError:
        raise BadInput(f"backbone {spec.name!r} has an unknown family {spec.family!r}") from None
    return cls(spec, path), identity(path)


__all__ = ["Backbone", "BackboneSpec", "FAMILIES", "check_modality", "open_backbone"]
