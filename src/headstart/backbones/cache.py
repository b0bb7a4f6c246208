"""On-disk cache of frozen features, keyed by (backbone hash, preprocessing, precision, input hash).

One SQLite file per (backbone identity, preprocessing, precision); one row per example keyed by
the sha256 of its content, so a second run on the same data, a new split of it, or a test file
that overlaps the training file only encodes what it has not seen. WAL mode lets several
processes share a cache.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._util import cache_dir, canonical_json


class FeatureCache:
    def __init__(self, backbone_hash: str, signature: dict, precision: str, root: Path | None = None):
        self.backbone_hash = backbone_hash
        self.signature = signature
        self.precision = precision
        self.root = root

    @property
    def path(self) -> Path:
        sig = hashlib.sha256(canonical_json(self.signature).encode()).hexdigest()[:12]
        root = self.root or cache_dir() / "features"
        return root / f"{self.backbone_hash[:16]}-{sig}-{self.precision}.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE IF NOT EXISTS features (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        return con

    def get_or_compute(self, keys: list[str], inputs: list, compute: Callable[[list], np.ndarray]) -> tuple[np.ndarray, int]:
        """Features for every input (cached or computed now) and how many were computed."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        con = self._connect()
        try:
            for start in range(0, len(unique), 900):
                chunk = unique[start : start + 900]
                marks = ",".join("?" * len(chunk))
                for key, blob in con.execute(f"SELECT key, vec FROM features WHERE key IN ({marks})", chunk):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
            missing = [k for k in unique if k not in found]
            if missing:
                first = {}
                for k, x in zip(keys, inputs, strict=True):
                    first.setdefault(k, x)
                new = compute([first[k] for k in missing])
                with con:
                    con.executemany(
                        "INSERT OR REPLACE INTO features (key, vec) VALUES (?, ?)",
                        ((k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in zip(missing, new, strict=True)),
                    )
                for k, v in zip(missing, new, strict=True):
                    found[k] = v
        finally:
            con.close()
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False), len(missing)


def frozen_features(backbone, backbone_hash: str, data, precision: str, desc: str = "encoding") -> tuple[np.ndarray, int]:
    """Cached frozen features of ``data`` (a :class:`~headstart.data.Dataset`) and the count encoded now."""
    cache = FeatureCache(backbone_hash, backbone.preprocessing_signature(), precision)
    return cache.get_or_compute(
        data.item_keys, data.inputs, lambda missing: backbone.embed(missing, precision=precision, desc=desc)
    )
