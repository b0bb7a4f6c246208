"""The method registry: one explicit line per method, duplicates rejected, close names suggested."""

from __future__ import annotations

from ..errors import BadInput, did_you_mean
from .base import Method

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice ({METHODS[cls.name].__qualname__} and {cls.__qualname__})")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise BadInput(
            f"unknown method {name!r}.{did_you_mean(name, METHODS)} Available: {', '.join(METHODS)}"
        ) from None
