"""Run folders (manifest + weights + metrics) and the SQLite store."""

from .run import Predictions
from .store import Store

__all__ = ["Predictions", "Store"]
