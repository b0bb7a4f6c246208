"""A vector index on disk: documents, their embeddings, and who embedded them.

An index is a folder::

    INDEX/
      index.json            manifest: format, kind, dim, metric, count, generation, producer,
                            library versions, HNSW parameters, sha256 of the faiss file
      vectors-000003.npy    (count, dim) float32, L2-normalised, in document order (np.save)
      docs-000003.jsonl     {"id": ..., "text": ...} per line, in the same order
      hnsw-000003.faiss     kind "hnsw" only: faiss IndexHNSWFlat over the same vectors

Why numbered files: an add writes a complete new generation beside the current one and then
replaces ``index.json`` (one ``os.replace``, the commit point); the previous generation is
deleted afterwards. A crash at any moment before that replace leaves the previous manifest naming
the previous, untouched files, so the index opens as it was (replacing fixed-name files one by one
could not promise that: a crash between two replaces would pair new vectors with an old manifest).
Readers that opened the previous generation keep reading it. Adds are serialised by a lock file.

Nothing in the folder is ever unpickled: ``np.load(..., allow_pickle=False)`` (a pickle or an
object array in the vectors file is refused), ``json`` for the manifest and documents, and
``faiss.read_index`` for the HNSW file, which is faiss's own binary format read by its C++ reader
(not pickle); its sha256 is checked against the manifest first, since that reader trusts the
sizes written in the file.

The **producer** is whatever identifies the embedding function, given by the caller, e.g.
``{"run": run_id, "backbone_sha256": ..., "embedding": {...preprocessing signature...}}``.
Queries (and later documents) embedded by another producer are refused: scores between vectors
of two different encoders mean nothing, and nothing in the numbers would show it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._util import canonical_json, progress as progress_bar, sha256_file
from ..errors import BadInput
from .backends import (
    HNSWParams,
    exact_top_k,
    faiss_version,
    hnsw_add,
    hnsw_search,
    import_faiss,
    new_hnsw,
    read_hnsw,
    write_hnsw,
)

FORMAT = "headstart-vector-index"
FORMAT_VERSION = 1
MANIFEST = "index.json"
KINDS = ("auto", "exact", "hnsw")

# kind="auto": exact search below this many documents, HNSW from it on. Measured with
# benchmarks/index.py (README "Vector index") on the project's shared 2-core machine, one thread,
# real MiniLM-L6 embeddings (dim 384), 1000 queries, k=10, HNSW M=32 efConstruction=100
# efSearch=32, through VectorIndex.search (median ms per single query, exact / HNSW):
#     docs  1000: 0.31 / 0.23 (1.4x)   5000: 0.60 / 0.27 (2.2x)   7500: 1.11 / 0.21 (5.3x)
#     docs 10000: 2.46 / 0.31 (7.9x)  20000: 4.76 / 0.31 (15x)   27529: 6.81 / 0.27 (25x)
# HNSW recall@10 0.983-0.992 at every size; build 0.2 s (exact) vs 2.2 s (HNSW) at 10k docs.
# Below 10k exact answers in ~2 ms or less and is exact, so HNSW's recall loss and 10x build time
# buy little; from 10k on it is >= 5x faster per query (batched queries: 1.9x at 10k).
AUTO_HNSW_FROM = 10_000

_ID_MAX = 1000
_LOCK = ".lock"
_FILE_RE = re.compile(r"^(vectors|docs|hnsw)-(\d{6})\.(npy|jsonl|faiss)$")


class SearchResult(NamedTuple):
    """The documents found for one query, best first: ``ids, scores = result``."""

    ids: list[str]
    scores: list[float]


def _files(generation: int) -> dict[str, str]:
    g = f"{generation:06d}"
    return {"vectors": f"vectors-{g}.npy", "docs": f"docs-{g}.jsonl", "hnsw": f"hnsw-{g}.faiss"}


def _normalise_producer(producer: Any, what: str) -> dict:
    """The producer as it will read back from JSON (tuples become lists ...), or BadInput."""
    if not isinstance(producer, dict) or not producer:
        raise BadInput(f"{what}: producer must be a non-empty dict naming the run/backbone that embedded the vectors, got {producer!r:.80}")
    try:
        return json.loads(canonical_json(producer))
    except (TypeError, ValueError) as e:
        raise BadInput(f"{what}: producer must hold JSON values only ({e})") from None


def _describe(producer: dict) -> str:
    """Which run/base a producer names, short enough for one line."""
    parts = []
    for key in ("run", "backbone", "backbone_sha256"):
        if key in producer:
            value = str(producer[key])
            parts.append(f"{key} {value[:12] if key.endswith('sha256') else value}")
    return ", ".join(parts) if parts else canonical_json(producer)[:120]


def _differences(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _bar(enabled: bool, total: int, desc: str):
    return progress_bar(total, desc, unit="doc") if enabled else _NoBar()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder for one writer at a time (POSIX flock; none elsewhere)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; single writer assumed
        yield
        return
    with open(folder / _LOCK, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json_atomic(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".index.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _versions() -> dict:
    from .. import __version__

    return {"headstart": __version__, "numpy": np.__version__, "faiss": faiss_version()}


class VectorIndex:
    """Documents and their embeddings in a folder, searched exactly or with faiss HNSW.

    ``VectorIndex.create(path, dim, producer)`` makes an empty index, ``VectorIndex.open(path)``
    opens one, :meth:`add` appends documents, :meth:`search` answers queries. Vectors are
    L2-normalised on the way in, so scores are cosine similarities.
    """

    def __init__(self, path: Path, manifest: dict, vectors: np.ndarray, ids: list[str], texts: list[str]):
        self.path = path
        self._manifest = manifest
        self._vectors = vectors  # (count, dim) float32, memory-mapped read-only
        self._ids = ids
        self._texts = texts
        self._row = {doc_id: i for i, doc_id in enumerate(ids)}
        self._ann = None  # faiss index, read on first HNSW search

    # -- properties --------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``"exact"`` or ``"hnsw"``: how the index searches now."""
        return self._manifest["kind"]

    @property
    def requested_kind(self) -> str:
        """What :meth:`create` was asked for: ``"auto"``, ``"exact"`` or ``"hnsw"``."""
        return self._manifest["requested_kind"]

    @property
    def dim(self) -> int:
        return self._manifest["dim"]

    @property
    def producer(self) -> dict:
        return json.loads(canonical_json(self._manifest["producer"]))

    @property
    def hnsw_params(self) -> HNSWParams:
        return HNSWParams(**self._manifest["hnsw"])

    @property
    def manifest(self) -> dict:
        return json.loads(json.dumps(self._manifest))

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def text(self, doc_id: str) -> str:
        """The text stored for ``doc_id``."""
        try:
            return self._texts[self._row[doc_id]]
        except KeyError:
            raise BadInput(f"index {self.path}: no document with id {doc_id!r}") from None

    def __repr__(self) -> str:
        return f"VectorIndex({str(self.path)!r}, kind={self.kind!r}, count={len(self)}, dim={self.dim})"

    # -- create / open -----------------------------------------------------------------------
    @classmethod
    def create(
        cls, path: str | os.PathLike, dim: int, producer: dict, kind: str = "auto", hnsw: HNSWParams | None = None
    ) -> VectorIndex:
        """An empty index in ``path`` (a new or empty folder).

        ``kind``: ``"exact"`` (numpy, any size), ``"hnsw"`` (faiss, any size) or ``"auto"`` (exact
        below :data:`AUTO_HNSW_FROM` documents, HNSW from there on, switched by the add that
        crosses it). ``hnsw``: the HNSW parameters (defaults: :class:`HNSWParams`).
        """
        folder = Path(path)
        if kind not in KINDS:
            raise BadInput(f"index kind {kind!r}: use one of {', '.join(KINDS)}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise BadInput(f"index dim {dim!r}: use a positive whole number (the embedding size)")
        producer = _normalise_producer(producer, f"index {folder}")
        params = hnsw if hnsw is not None else HNSWParams()
        if not isinstance(params, HNSWParams):
            raise BadInput(f"index {folder}: hnsw must be an HNSWParams, got {type(params).__name__}")
        if kind == "hnsw":
            import_faiss(f"index {folder} (kind hnsw)")
        if folder.exists() and not folder.is_dir():
            raise BadInput(f"index {folder} is a file; give a new or empty folder")
        if (folder / MANIFEST).exists():
            raise BadInput(f"index {folder} already exists; open it with VectorIndex.open, or choose another folder")
        if folder.is_dir() and any(p.name != _LOCK for p in folder.iterdir()):
            raise BadInput(f"index {folder}: the folder is not empty; give a new or empty folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"index {folder}: cannot create the folder ({e.strerror or e})") from None
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": "hnsw" if kind == "hnsw" else "exact",
            "requested_kind": kind,
            "auto_hnsw_from": AUTO_HNSW_FROM,
            "dim": dim,
            "metric": "cosine",
            "count": 0,
            "generation": 0,
            "producer": producer,
            "hnsw": params.to_dict(),
            "faiss_sha256": None,
            "versions": _versions(),
        }
        with _locked(folder):
            index = cls(folder, manifest, np.empty((0, dim), dtype=np.float32), [], [])
            index._write_generation(manifest, np.empty((0, dim), dtype=np.float32), [], [], show=False)
        return cls.open(folder)

    @classmethod
    def open(cls, path: str | os.PathLike) -> VectorIndex:
        """Open an index folder, checking that its files agree with each other and the manifest."""
        folder = Path(path)
        for _ in range(3):  # a writer may commit a new generation and delete this one meanwhile
            manifest = _read_manifest(folder)
            try:
                return cls._open_generation(folder, manifest)
            except FileNotFoundError as e:
                if _read_manifest(folder)["generation"] == manifest["generation"]:
                    raise BadInput(f"index {folder}: {Path(e.filename).name} is missing; rebuild the index") from None
        raise BadInput(f"index {folder} keeps changing while being opened; try again")

    @classmethod
    def _open_generation(cls, folder: Path, manifest: dict) -> VectorIndex:
        files = _files(manifest["generation"])
        where = f"index {folder}"
        vectors_path = folder / files["vectors"]
        if not vectors_path.exists():
            raise FileNotFoundError(2, "missing", str(vectors_path))
        try:
            vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise BadInput(f"{where}: {files['vectors']} is not a plain .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__}); rebuild the index") from None
        count, dim = manifest["count"], manifest["dim"]
        if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32 or vectors.shape != (count, dim):
            raise BadInput(
                f"{where}: {files['vectors']} holds {getattr(vectors, 'dtype', '?')} {getattr(vectors, 'shape', '?')}, "
                f"the manifest says float32 ({count}, {dim}); rebuild the index"
            )
        ids, texts = _read_docs(folder / files["docs"], count, where)
        index = cls(folder, manifest, vectors, ids, texts)
        if manifest["kind"] == "hnsw":
            index._ann = index._read_ann()
        return index

    def _read_ann(self):
        files = _files(self._manifest["generation"])
        path = self.path / files["hnsw"]
        where = f"index {self.path}"
        import_faiss(f"{where} is an HNSW index and searching it")
        if not path.exists():
            raise FileNotFoundError(2, "missing", str(path))
        if sha256_file(path) != self._manifest["faiss_sha256"]:
            raise BadInput(f"{where}: {files['hnsw']} was changed after it was written (sha256 differs); rebuild the index")
        return read_hnsw(str(path), self.dim, len(self), where)

    # -- add ---------------------------------------------------------------------------------
    def add(
        self, ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray, *, producer: dict, progress: bool = True
    ) -> None:
        """Append documents (``ids[i]``, ``texts[i]``, ``vectors[i]``) to the index.

        ``producer`` must equal the index's (documents embedded by another run are refused like
        queries are). Ids are unique strings: one repeated in the batch or already in the index
        is refused. Nothing is written unless everything is valid; the new state is committed in
        one step, so a crash or an error leaves the index as it was. With ``kind="auto"`` the add
        that reaches :data:`AUTO_HNSW_FROM` documents builds the HNSW index from all vectors.
        """
        where = f"index {self.path}"
        self._check_producer(producer, "the documents to add")
        ids, texts = list(ids), list(texts)
        new = _check_vectors(vectors, self.dim, where, "vectors", ids)
        if not (len(ids) == len(texts) == new.shape[0]):
            raise BadInput(f"{where}: add got {len(ids)} ids, {len(texts)} texts and {new.shape[0]} vectors; give one of each per document")
        seen: set[str] = set()
        for doc_id, text in zip(ids, texts):
            if not isinstance(doc_id, str) or not doc_id or len(doc_id) > _ID_MAX or "\n" in doc_id:
                raise BadInput(f"{where}: document id {doc_id!r:.80} must be a non-empty one-line string (at most {_ID_MAX} characters)")
            if not isinstance(text, str):
                raise BadInput(f"{where}: the text of document {doc_id!r} is {type(text).__name__}, not a string")
            if doc_id in seen:
                raise BadInput(f"{where}: document id {doc_id!r} appears twice in this batch; ids must be unique")
            seen.add(doc_id)
        if not ids:
            return
        with _locked(self.path):
            current = VectorIndex.open(self.path)  # another process may have added since we opened
            current._check_producer(producer, "the documents to add")
            for doc_id in ids:
                if doc_id in current._row:
                    raise BadInput(f"{where}: document id {doc_id!r} is already in the index; ids must be unique")
            manifest = dict(current._manifest)
            total = len(current) + len(ids)
            if manifest["kind"] == "exact" and manifest["requested_kind"] == "auto" and total >= manifest["auto_hnsw_from"]:
                import_faiss(f"{where} reaches {total} documents, where kind auto switches to HNSW, and this")
                manifest["kind"] = "hnsw"
            manifest["count"] = total
            manifest["generation"] = current._manifest["generation"] + 1
            manifest["versions"] = _versions()
            vectors, ann = current._write_generation(manifest, new, ids, texts, show=progress)
        fresh = VectorIndex(self.path, manifest, vectors, current._ids + ids, current._texts + texts)
        fresh._ann = ann
        self.__dict__.update(fresh.__dict__)

    def _write_generation(self, manifest: dict, new: np.ndarray, ids: list[str], texts: list[str], *, show: bool):
        """Write generation ``manifest["generation"]`` = this index + the new rows, then commit.

        Returns the new vectors (memory-mapped) and HNSW index (None for exact). ``self`` must be a
        private copy (``add`` opens one): its HNSW graph is extended in place."""
        folder, old_files, files = self.path, _files(self._manifest["generation"]), _files(manifest["generation"])
        n_old, total = len(self), manifest["count"]
        written = [folder / files["vectors"], folder / files["docs"], folder / files["hnsw"]]
        try:
            out = np.lib.format.open_memmap(folder / files["vectors"], mode="w+", dtype=np.float32, shape=(total, self.dim))
            with _bar(show and total > 0, len(ids), "indexing") as bar:
                for s in range(0, n_old, 65536):
                    e = min(s + 65536, n_old)
                    out[s:e] = self._vectors[s:e]
                for s in range(0, len(ids), 8192):
                    out[n_old + s : n_old + s + 8192] = new[s : s + 8192]
                    bar.update(len(new[s : s + 8192]))
                out.flush()
            del out
            vectors = np.load(folder / files["vectors"], mmap_mode="r", allow_pickle=False)
            old_docs = folder / old_files["docs"]
            if n_old:
                shutil.copyfile(old_docs, folder / files["docs"])
            with open(folder / files["docs"], "a", encoding="utf-8", newline="\n") as f:
                for doc_id, text in zip(ids, texts):
                    f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            ann = self._write_ann(manifest, vectors, folder / files["hnsw"], show) if manifest["kind"] == "hnsw" else None
            _write_json_atomic(folder / MANIFEST, manifest)  # the commit point
        except BaseException as e:
            for p in written:
                with contextlib.suppress(OSError):
                    p.unlink()
            if isinstance(e, OSError):
                raise BadInput(f"index {folder}: cannot write ({e.strerror or e}); the index is unchanged") from None
            raise
        _remove_stale(folder, manifest["generation"])
        return vectors, ann

    def _write_ann(self, manifest: dict, vectors: np.ndarray, path: Path, show: bool):
        n_old = len(self)
        if self._manifest["kind"] == "hnsw" and n_old:
            # Incremental: the previous graph plus the new rows.
            ann, start = (self._ann if self._ann is not None else self._read_ann()), n_old
        else:  # a new index, or exact -> hnsw: build the graph from every vector
            ann, start = new_hnsw(self.dim, HNSWParams(**manifest["hnsw"])), 0
        with _bar(show and vectors.shape[0] > start, vectors.shape[0] - start, "building HNSW") as bar:
            hnsw_add(ann, vectors, start, bar)
        write_hnsw(ann, str(path))
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        manifest["faiss_sha256"] = sha256_file(path)
        return ann

    # -- search ------------------------------------------------------------------------------
    def search(self, query_vectors: np.ndarray, k: int, producer: dict, *, ef_search: int | None = None) -> list[SearchResult]:
        """The ``k`` nearest documents of every query (a (Q, dim) array), best first.

        ``producer`` says who embedded the queries; it must equal the index's (else BadInput
        naming both). Scores are cosine similarities. HNSW answers are approximate; ``ef_search``
        overrides the index's efSearch for this call (higher: slower, better recall).
        """
        self._check_producer(producer, "the queries")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BadInput(f"search k={k!r}: use a whole number >= 1")
        if ef_search is not None and (isinstance(ef_search, bool) or not isinstance(ef_search, int) or ef_search < 1):
            raise BadInput(f"search ef_search={ef_search!r}: use a whole number >= 1")
        queries = _check_vectors(query_vectors, self.dim, f"index {self.path}", "query vectors", None)
        if len(self) == 0:
            return [SearchResult([], []) for _ in range(len(queries))]
        if self.kind == "hnsw":
            if self._ann is None:
                self._ann = self._read_ann()
            rows, scores = hnsw_search(self._ann, queries, k, ef_search or self.hnsw_params.ef_search)
        else:
            rows, scores = exact_top_k(self._vectors, queries, k)
        return [
            SearchResult([self._ids[r] for r in row if r >= 0], [float(s) for r, s in zip(row, score) if r >= 0])
            for row, score in zip(rows, scores)
        ]

    def _check_producer(self, producer: dict, what: str) -> None:
        mine = self._manifest["producer"]
        theirs = _normalise_producer(producer, f"index {self.path}")
        if theirs != mine:
            raise BadInput(
                f"index {self.path} was embedded by {_describe(mine)} but {what} by {_describe(theirs)} "
                f"(differs in {_differences(mine, theirs)}); embed them with the index's run, or build a new index"
            )


# -- reading and checking ------------------------------------------------------------------------


def _check_vectors(vectors: Any, dim: int, where: str, what: str, ids: list | None) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (N, dim) array of unit rows, or BadInput."""
    try:
        arr = np.asarray(vectors)
    except (TypeError, ValueError) as e:
        raise BadInput(f"{where}: {what} are not an array ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != dim:
        hint = " (one query: reshape it to (1, dim))" if arr.ndim == 1 else ""
        raise BadInput(f"{where}: {what} have shape {arr.shape}, expected (n, {dim}){hint}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise BadInput(f"{where}: {what} have dtype {arr.dtype}; give real numbers")
    arr = np.array(arr, dtype=np.float32, order="C")
    norms = np.linalg.norm(arr, axis=1) if arr.size else np.empty(0, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        i = int(bad[0])
        name = f"document {ids[i]!r}" if ids is not None and i < len(ids) else f"row {i}"
        problem = "is all zeros" if np.isfinite(norms[i]) else "holds NaN or infinity"
        raise BadInput(f"{where}: the vector of {name} {problem}; it has no direction to compare by cosine")
    arr /= norms[:, None]
    return arr


def _read_manifest(folder: Path) -> dict:
    where = f"index {folder}"
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BadInput(f"{where}: no such folder; create one with VectorIndex.create")
    if not path.is_file():
        raise BadInput(f"{where}: {MANIFEST} is missing; not a headstart vector index (or a damaged one)")
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise BadInput(f"{where}: {MANIFEST} cannot be read ({str(e).splitlines()[0]}); rebuild the index") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BadInput(f"{where}: {MANIFEST} is not a headstart vector index manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise BadInput(f"{where}: format version {m.get('format_version')!r}; this headstart reads {FORMAT_VERSION} (upgrade headstart or rebuild)")

    def whole(key: str, low: int) -> int:
        v = m.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise BadInput(f"{where}: {MANIFEST} field {key!r} is {v!r}, expected a whole number >= {low}; rebuild the index")
        return v

    whole("dim", 1), whole("count", 0), whole("generation", 0), whole("auto_hnsw_from", 0)
    if m.get("kind") not in ("exact", "hnsw") or m.get("requested_kind") not in KINDS:
        raise BadInput(f"{where}: {MANIFEST} has kind {m.get('kind')!r} / requested_kind {m.get('requested_kind')!r}; rebuild the index")
    if m.get("metric") != "cosine":
        raise BadInput(f"{where}: metric {m.get('metric')!r}; this headstart searches by cosine only")
    if not isinstance(m.get("producer"), dict) or not m["producer"]:
        raise BadInput(f"{where}: {MANIFEST} names no producer; rebuild the index")
    try:
        HNSWParams(**m["hnsw"])
    except (TypeError, BadInput):
        raise BadInput(f"{where}: {MANIFEST} has invalid HNSW parameters {m.get('hnsw')!r:.120}; rebuild the index") from None
    sha = m.get("faiss_sha256")
    if m["kind"] == "hnsw" and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise BadInput(f"{where}: {MANIFEST} has no valid faiss_sha256 for its HNSW file; rebuild the index")
    return m


def _read_docs(path: Path, count: int, where: str) -> tuple[list[str], list[str]]:
    if not path.exists():
        raise FileNotFoundError(2, "missing", str(path))
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            for n, line in enumerate(f, 1):
                if n > count:
                    raise BadInput(f"{where}: {path.name} has more than the manifest's {count} documents; rebuild the index")
                try:
                    doc = json.loads(line)
                except ValueError:
                    raise BadInput(f"{where}: {path.name} line {n} is not JSON; rebuild the index") from None
                if not (isinstance(doc, dict) and isinstance(doc.get("id"), str) and isinstance(doc.get("text"), str)):
                    raise BadInput(f"{where}: {path.name} line {n} is not {{\"id\": string, \"text\": string}}; rebuild the index")
                if doc["id"] in seen:
                    raise BadInput(f"{where}: {path.name} line {n} repeats id {doc['id']!r}; rebuild the index")
                seen.add(doc["id"])
                ids.append(doc["id"])
                texts.append(doc["text"])
    except UnicodeDecodeError:
        raise BadInput(f"{where}: {path.name} is not UTF-8; rebuild the index") from None
    except OSError as e:
        raise BadInput(f"{where}: {path.name} cannot be read ({e.strerror or e})") from None
    if len(ids) != count:
        raise BadInput(f"{where}: {path.name} has {len(ids)} documents, the manifest says {count}; rebuild the index")
    return ids, texts


def _remove_stale(folder: Path, generation: int) -> None:
    """Delete data files of other generations (the previous one, leftovers of crashed adds)."""
    for p in folder.iterdir():
        m = _FILE_RE.match(p.name)
        if m and int(m.group(2)) != generation:
            with contextlib.suppress(OSError):
                p.unlink()
    for p in folder.glob(".index.*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()


__all__ = ["AUTO_HNSW_FROM", "HNSWParams", "SearchResult", "VectorIndex"]
