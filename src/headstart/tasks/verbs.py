"""What a task offers to callers over HTTP (``headstart serve``), declared on the task itself.

A :class:`Verb` is one endpoint, ``POST /v1/<name>``: the request carries a list of *items* under
one field (texts, prompts, audio) plus a few typed parameters; the verb maps a batch of items to
one JSON-ready result per item. The server knows no task: it builds the request schema from
:attr:`Verb.item` and :attr:`Verb.params`, gathers items of concurrent requests with equal
parameters into one batch (micro-batching), and calls :attr:`Verb.call`. A task that adds a verb
adds it here, on its own class (``Task.verbs``), and the server, its OpenAPI schema, metrics and
limits come with it.

``call(served, items, params)`` receives a *served model* — a :class:`~headstart.api.Run` or an
ONNX export opened by :class:`~headstart.export_onnx.OnnxRun` — and may use only the capabilities
named in :attr:`Verb.needs` (attributes of the served model: ``predict_proba``, ``embed``,
``transcribe``, ``generate``; ``index``: an index the server holds for that model). A verb
whose needs a model lacks is simply not offered for it. ``call`` raises
:class:`~headstart.errors.BadInput` for an item it cannot use (answered 422 with the message).
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ITEM_KINDS = ("text", "prompt", "audio", "image")
"""``text``: a non-empty string; ``prompt``: a string or a list of ``{"role", "content"}``
messages; ``audio``: a base64-encoded audio file (WAV, FLAC, OGG: what the audio reader takes);
``image``: a base64-encoded image file (JPEG, PNG, ...)."""

MAGIC = {"audio": ((b"RIFF", 0, ".wav"), (b"fLaC", 0, ".flac"), (b"OggS", 0, ".ogg"), (b"ID3", 0, ".mp3"),
                   (b"\xff\xfb", 0, ".mp3"), (b"\xff\xf3", 0, ".mp3"), (b"\xff\xf2", 0, ".mp3")),
         "image": ((b"\xff\xd8\xff", 0, ".jpg"), (b"\x89PNG", 0, ".png"), (b"GIF8", 0, ".gif"), (b"BM", 0, ".bmp"),
                   (b"WEBP", 8, ".webp"))}
"""(magic bytes, offset, file suffix) of the formats a base64 item may hold (readers go by suffix)."""


def _suffix(data: bytes, kind: str, i: int) -> str:
    from ..errors import BadInput

    for magic, at, suffix in MAGIC[kind]:
        if data[at:at + len(magic)] == magic:
            return suffix
    names = ", ".join(s.lstrip(".").upper() for _, _, s in MAGIC[kind])
    raise BadInput(f"item {i}: not a {kind} file this server reads (its first bytes match none of {names})")


@dataclass(frozen=True)
class Param:
    """One optional request parameter besides the items (same for every item of a request)."""

    name: str
    type: type
    """``int``, ``float``, ``str``, ``bool`` or ``list`` (of strings)."""
    default: Any
    help: str
    choices: tuple | None = None
    ge: float | None = None
    le: float | None = None


@dataclass(frozen=True)
class Verb:
    name: str
    """The path: ``POST /v1/<name>``."""
    summary: str
    item: str
    """One of :data:`ITEM_KINDS`."""
    field: str
    """The request field holding one item or a list of them (``inputs``, ``queries``, ``prompts``)."""
    call: Callable[[Any, list, dict], list[dict]]
    """``call(served, items, params) -> [result per item]`` (JSON-ready dicts, input order)."""
    needs: tuple[str, ...]
    """Capabilities of the served model the call uses (see the module docstring)."""
    params: tuple[Param, ...] = ()
    result: str = "results"
    """The response field holding the per-item results."""
    example: Any = None
    """An example item for the OpenAPI schema."""
    max_batch: int | None = None
    """Items per model call at most for this verb (None: the server's --max-batch); generation
    and transcription run slower per item and batch smaller."""


@contextmanager
def decoded_files(items: list[str], kind: str) -> Iterator[list[str]]:
    """Base64 ``items`` written to private temporary files (removed afterwards), for verbs whose
    model reads files; an item that is not base64 is a BadInput naming its position."""
    from ..errors import BadInput

    with tempfile.TemporaryDirectory(prefix="headstart-serve-") as tmp:
        paths = []
        for i, item in enumerate(items):
            try:
                data = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise BadInput(f"item {i}: not base64; send the {kind} file's bytes base64-encoded") from None
            if not data:
                raise BadInput(f"item {i}: the {kind} file is empty")
            path = Path(tmp) / f"{i:05d}{_suffix(data, kind, i)}"
            path.write_bytes(data)
            paths.append(str(path))
        yield paths


__all__ = ["ITEM_KINDS", "Param", "Verb", "decoded_files"]
