"""Backbones by modality, and the one function that builds one from a name.

:func:`open_backbone` is also where a backbone's device is decided, once
(:func:`headstart.device.select_device`, honouring ``HEADSTART_DEVICE``): the backbone carries it
as ``backbone.device`` and nothing downstream asks torch where to run.
"""

from __future__ import annotations

from ..catalog import BackboneSpec, identity, locate, resolve, with_local_family
from ..device import select_device
from ..errors import BadInput
from .base import Backbone, check_modality
from .causal_lm import CausalLMBackbone
from .clip import ClipBackbone
from .dual import LitPairBackbone
from .frozen import OnnxTextBackbone, UseNumpyBackbone
from .speech import WhisperBackbone
from .text import TextBackbone
from .vision import EfficientNetLiteBackbone, HFImageBackbone

FAMILIES: dict[str, type[Backbone]] = {
    "hf-text": TextBackbone,
    "hf-image": HFImageBackbone,
    "clip": ClipBackbone,
    "lit-pair": LitPairBackbone,
    "efficientnet-lite": EfficientNetLiteBackbone,
    "onnx-text": OnnxTextBackbone,
    "use-numpy": UseNumpyBackbone,
    "whisper": WhisperBackbone,
    "causal-lm": CausalLMBackbone,
}


def family_class(spec: BackboneSpec) -> type[Backbone] | None:
    """The backbone class of a spec's family (None while an ``hf:`` id is not on disk yet)."""
    return FAMILIES.get(spec.family)


def family_trains(spec: BackboneSpec) -> bool:
    """Whether a backbone's weights can be trained (known from its family, without loading it)."""
    cls = FAMILIES.get(spec.family)
    return True if cls is None else cls.trains


def open_backbone(name_or_spec: str | BackboneSpec, *, rehash: bool = False, device: str = "auto") -> tuple[Backbone, str]:
    """Locate a backbone's weights and return it (not yet loaded, placed on its device) with its
    identity hash (``rehash``: computed from every byte, not from the identity cache).
    ``device``: 'auto' (``HEADSTART_DEVICE``, else CUDA, MPS, CPU) or a device name."""
    spec = resolve(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    if spec.source_kind == "pair":  # two backbones, each located and hashed by its own family
        return LitPairBackbone.open(spec, device=device, rehash=rehash)
    path = locate(spec)
    spec = with_local_family(spec, path)
    try:
        cls = FAMILIES[spec.family]
    except KeyError:
        raise BadInput(f"backbone {spec.name!r} has an unknown family {spec.family!r}") from None
    return cls(spec, path, select_device(device, supported=cls.devices)), identity(path, rehash=rehash)


__all__ = ["Backbone", "BackboneSpec", "FAMILIES", "check_modality", "family_class", "family_trains", "open_backbone"]
