"""Small helpers shared across the package: hashing, progress bars, home folder, time."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def home() -> Path:
    """headstart's data folder: ``$HEADSTART_HOME`` or the platform's user data directory."""
    env = os.environ.get("HEADSTART_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("headstart", appauthor=False))


def cache_dir() -> Path:
    """Embedding and identity caches: ``$HEADSTART_CACHE`` or ``<home>/cache``."""
    env = os.environ.get("HEADSTART_CACHE")
    return Path(env).expanduser() if env else home() / "cache"


def progress_enabled() -> bool:
    return os.environ.get("HEADSTART_PROGRESS", "1") not in ("0", "false", "no")


def status(message: str) -> None:
    """One line on stderr for a step without a natural progress count (e.g. loading weights)."""
    if progress_enabled():
        print(message, file=sys.stderr, flush=True)


def progress(total: int, desc: str, unit: str = "it"):
    """A tqdm bar on stderr (silenced with HEADSTART_PROGRESS=0 or ``--quiet``)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not progress_enabled(),
        dynamic_ncols=True,
        leave=False,
        mininterval=0.5,
    )
