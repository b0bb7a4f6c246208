"""Folders converted once from a packaged model file (a CTranslate2 Whisper, a GGUF LLM) into a
Hugging Face folder in the cache, keyed by the source's sha256: never half written (built in a
private sibling folder, then renamed into place with a ``.complete`` marker that records the
converter's version), rebuilt when the marker is missing or from another converter version, and
safe when two processes convert the same file at once (the first complete folder wins)."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

COMPLETE = ".complete"
STALE_S = 3600
"""Temp folders older than this (left by killed conversions) are removed."""


def tmp_sibling(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def is_complete(folder: Path, version: int) -> bool:
    """Whether ``folder`` holds a finished conversion by converter ``version``."""
    try:
        marker = json.loads((folder / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("converter_version") == version


def publish(tmp: Path, out_dir: Path, version: int, *, keep_complete: bool) -> None:
    """Move ``tmp`` to ``out_dir``; an existing ``out_dir`` is replaced, unless ``keep_complete``
    and it is complete (another process finished the same conversion first)."""
    try:
        os.replace(tmp, out_dir)  # succeeds when out_dir is absent (or an empty folder)
        return
    except OSError:
        if keep_complete and is_complete(out_dir, version):
            return
    aside = tmp_sibling(out_dir)
    os.replace(out_dir, aside)
    try:
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def write_converted(out: Path, fill: Callable[[Path], None], marker: dict, *, keep_complete: bool) -> Path:
    """``fill(tmp)`` into a private sibling of ``out``, the ``.complete`` marker (``marker`` must
    hold ``converter_version``) added, then moved into place; nothing is left on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(out)
    tmp.mkdir()
    try:
        fill(tmp)
        (tmp / COMPLETE).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        publish(tmp, out, marker["converter_version"], keep_complete=keep_complete)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def converted_once(out: Path, fill: Callable[[Path], None], marker: dict, message: str) -> Path:
    """The cached conversion ``out``, built by ``fill`` on first use (``message`` says so on
    stderr) and reused while its marker's converter version is current; stale temp folders of
    killed conversions beside it are removed first."""
    from .._util import status

    if is_complete(out, marker["converter_version"]):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            if time.time() - stale.stat().st_mtime > STALE_S:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    status(message)
    return write_converted(out, fill, marker, keep_complete=True)


__all__ = ["COMPLETE", "converted_once", "is_complete", "publish", "tmp_sibling", "write_converted"]
