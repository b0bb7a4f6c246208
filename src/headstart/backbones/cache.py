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


def table_features(backbone, backbone_hash: str, table, precision: str, desc: str = "encoding") -> tuple[Path, int]:
    """The frozen features of every row of a :class:`~headstart.data.large.LargeTable`, as one
    ``(n_rows, D)`` float32 ``.npy`` file in ``<cache>/features/tables``; returns its path and how
    many rows were encoded now.

    Keyed by (backbone hash, preprocessing signature, precision, the table's fingerprint, text
    column). Filled a chunk of :data:`~headstart.data.large.CHUNK` texts at a time through
    ``backbone.embed`` with plain file writes (the file is allocated in full first, so a full disk
    fails at the start with one line rather than half-way); after each chunk a progress record is
    replaced atomically, so an interrupted encode resumes after the last finished chunk. The file
    counts as complete only once its ``.done`` marker exists.
    """
    import errno
    import json
    import os

    from .._util import progress
    from ..data.large import CHUNK, npy_header
    from ..errors import BadInput

    ident = canonical_json({"backbone": backbone_hash, "signature": backbone.preprocessing_signature(), "precision": precision,
                            "table": table.fingerprint, "text": table.columns["text"]})
    key = hashlib.sha256(ident.encode()).hexdigest()[:24]
    folder = cache_dir() / "features" / "tables"
    path, done, state = folder / f"{key}.npy", folder / f"{key}.done", folder / f"{key}.progress"
    if done.is_file() and path.is_file():
        return path, 0
    n, dim = table.n_rows, int(backbone.feature_dim)
    finished = 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if path.is_file() and state.is_file():
            try:
                record = json.loads(state.read_text())
            except ValueError:
                record = {}  # unreadable: start over
            if record.get("shape") == [n, dim] and record.get("chunk") == CHUNK:
                finished = int(record["rows"])
        if finished == 0:
            for stale in (path, state):
                stale.unlink(missing_ok=True)
            with open(path, "wb") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
                offset = f.tell()
                try:
                    os.posix_fallocate(f.fileno(), 0, offset + n * dim * 4)
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    f.truncate(offset + n * dim * 4)  # a file system without fallocate: a sparse file
        _, _, offset = npy_header(path)
        encoded = 0
        rows = None if finished == 0 else np.arange(finished, n)
        with open(path, "r+b") as f, progress(n, desc, unit="ex") as bar:
            bar.initial = bar.n = finished  # resumed: the rate (and ETA) counts only rows encoded now
            bar.refresh()
            for idx, texts in table.iter_texts(rows, CHUNK):
                x = np.ascontiguousarray(backbone.embed(texts, precision=precision, desc="chunk"), dtype=np.float32)
                f.seek(offset + int(idx[0]) * dim * 4)
                f.write(x.tobytes())
                f.flush()
                encoded += len(texts)
                tmp = state.with_suffix(".progress.tmp")
                tmp.write_text(json.dumps({"rows": int(idx[-1]) + 1, "shape": [n, dim], "chunk": CHUNK}))
                os.replace(tmp, state)
                bar.update(len(texts))
            os.fsync(f.fileno())
        done.write_text(json.dumps({"rows": n, "dim": dim, "table": table.source}))
        state.unlink(missing_ok=True)
    except OSError as e:
        raise BadInput(f"cannot write the feature file {path} ({n:,} x {dim} float32, {n * dim * 4 / 1e9:.2f} GB): "
                       f"{e.strerror or e}; free space or set HEADSTART_CACHE to a folder with room, then run again "
                       "(finished chunks are kept)") from None
    return path, encoded
