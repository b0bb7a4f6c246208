"""Saved plans: a plan's result as JSON in ``<cache>/plans/``, so that `adapt --backbone auto
--method auto` right after `headstart plan` of the same data and options does not plan again.

A plan is keyed by what decides it: the data's fingerprint, the candidates (names and weight
identities), the methods and every option (budget, memory, score, sample, seed, split); it is
reused for ``REUSE_S`` after it was made. JSON only (never pickle): a cache file is data, not code.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .._util import cache_dir, canonical_json

FORMAT = 1
"""Part of the key: raised when what a saved plan holds changes, so older files are not misread."""
REUSE_S = 24 * 3600.0
"""A saved plan older than this is made again (throughput, installed backbones and load drift)."""


def plan_key(options: dict) -> str:
    """The file name of the plan made with ``options`` (JSON-serialisable; see the module)."""
    return hashlib.sha256(canonical_json({"format": FORMAT, **options}).encode()).hexdigest()[:32]


def path_of(key: str) -> Path:
    return cache_dir() / "plans" / f"{key}.json"


def load(key: str, *, now: float | None = None) -> dict | None:
    """The saved record (``saved_at`` in epoch seconds, ``options``, ``plan``: Plan.to_dict()) of
    ``key`` when one younger than ``REUSE_S`` exists; None otherwise (missing, old or unreadable)."""
    try:
        record = json.loads(path_of(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("plan"), dict):
        return None
    age = (time.time() if now is None else now) - float(record.get("saved_at", 0.0))
    return record if 0 <= age <= REUSE_S else None


def save(key: str, options: dict, plan: dict) -> Path:
    """Write the plan (atomically: a reader sees the old file or the new one)."""
    path = path_of(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    record = {"format": FORMAT, "saved_at": time.time(), "options": options, "plan": plan}
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path
