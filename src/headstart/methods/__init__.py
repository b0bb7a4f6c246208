"""Adaptation methods, lightest to heaviest. One file per method, one registry line each."""

from .base import FitContext, Method
from .linear_probe import LinearProbe
from .registry import METHODS, get_method, register_method

register_method(LinearProbe)

__all__ = ["FitContext", "LinearProbe", "METHODS", "Method", "get_method", "register_method"]
