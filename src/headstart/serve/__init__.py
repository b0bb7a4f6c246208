"""``headstart serve``: adapted runs over HTTP (FastAPI + uvicorn, the ``serve`` extra).

:mod:`.models` wraps runs and ONNX exports as served models, :mod:`.batching` gathers concurrent
requests into micro-batches, :mod:`.app` is the FastAPI application (routes from the tasks'
verbs, validation, limits), :mod:`.metrics` the Prometheus text, :mod:`.server` runs uvicorn.
"""

from .app import ServeSettings, build_app
from .server import open_models, serve

__all__ = ["ServeSettings", "build_app", "open_models", "serve"]
