"""The two ways an index answers a query: exact (numpy) and approximate (faiss HNSW).

Both score by inner product on L2-normalised vectors, i.e. cosine similarity, and both return the
``k`` best rows of every query, best first. Nothing here knows about folders or manifests
(:mod:`headstart.index.store` does); this module only turns matrices into rankings.

faiss files are read with ``faiss.read_index``: faiss's own binary format, parsed by its C++
reader (``faiss/impl/index_read.cpp``), never Python's pickle (faiss only pickles when *you*
pickle an index object, through ``serialize_index``; nothing here does). That reader trusts the
sizes written in the file, so :mod:`~headstart.index.store` checks the file's sha256 against the
manifest before handing it over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import BadInput

INSTALL_HINT = 'pip install "headstart[search]"'

# Rows of the corpus scored at once by exact search, and queries per block: the score block is at
# most _QUERY_BLOCK x _CHUNK_ROWS float32 (64 MiB), whatever the corpus size.
_CHUNK_ROWS = 65536
_QUERY_BLOCK = 256


@dataclass(frozen=True)
class HNSWParams:
    """faiss ``IndexHNSWFlat`` settings (Malkov & Yashunin 2016, arXiv:1603.09320).

    ``m``: links per node (memory and recall grow with it); ``ef_construction``: candidate list
    while building (build time and graph quality); ``ef_search``: candidate list while searching
    (latency and recall; raised to ``k`` when ``k`` is larger). Defaults from
    ``benchmarks/index.py`` on 27,529 real MiniLM-L6 embeddings, one thread: recall@10 0.983
    against exact search, 25x lower single-query latency (README "Vector index"); efConstruction
    200 doubled the build time for +0.5 pt recall, M=16 lost 1 pt at the same efSearch.
    """

    m: int = 32
    ef_construction: int = 100
    ef_search: int = 32

    def __post_init__(self) -> None:
        for name, value, low in (("m", self.m, 2), ("ef_construction", self.ef_construction, 1), ("ef_search", self.ef_search, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 4096:
                raise BadInput(f"HNSW {name}={value!r}: use a whole number from {low} to 4096")

    def to_dict(self) -> dict:
        return asdict(self)


def import_faiss(why: str):
    """faiss, or a one-line BadInput saying how to install it (``why``: what needed it)."""
    try:
        import faiss
    except ImportError:
        raise BadInput(f"{why} needs faiss, which is not installed: {INSTALL_HINT}") from None
    return faiss


def faiss_version() -> str | None:
    try:
        import faiss
    except ImportError:
        return None
    return str(faiss.__version__)


# -- exact ---------------------------------------------------------------------------------------


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``vectors`` (N, d) with the highest inner product with each query (Q, d).

    Returns ``(rows, scores)``, both (Q, min(k, N)), best first, equal scores in row order (which
    of several rows tied exactly at the k-th score is kept is unspecified). The corpus is scored in chunks of rows, each chunk's
    best ``k`` merged into a running best ``k`` (memory stays bounded for any N).
    """
    n = vectors.shape[0]
    k = min(k, n)
    rows_out = np.empty((len(queries), k), dtype=np.int64)
    scores_out = np.empty((len(queries), k), dtype=np.float32)
    for q0 in range(0, len(queries), _QUERY_BLOCK):
        q = queries[q0 : q0 + _QUERY_BLOCK]
        best_rows = np.empty((len(q), 0), dtype=np.int64)
        best_scores = np.empty((len(q), 0), dtype=np.float32)
        for start in range(0, n, _CHUNK_ROWS):
            s = q @ np.asarray(vectors[start : start + _CHUNK_ROWS]).T  # (q, c)
            if s.shape[1] > k:  # this chunk's best k, unordered
                part = np.argpartition(-s, k - 1, axis=1)[:, :k]
                s, rows = np.take_along_axis(s, part, axis=1), part + start
            else:
                rows = np.broadcast_to(np.arange(start, start + s.shape[1]), s.shape)
            best_scores = np.concatenate([best_scores, s], axis=1)  # (q, <= 2k)
            best_rows = np.concatenate([best_rows, rows], axis=1)
            if best_scores.shape[1] > k:
                keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
                best_scores = np.take_along_axis(best_scores, keep, axis=1)
                best_rows = np.take_along_axis(best_rows, keep, axis=1)
        # Best first; ties by row number (lexsort's last key is the primary one).
        order = np.lexsort((best_rows, -best_scores), axis=1)
        rows_out[q0 : q0 + len(q)] = np.take_along_axis(best_rows, order, axis=1)
        scores_out[q0 : q0 + len(q)] = np.take_along_axis(best_scores, order, axis=1)
    return rows_out, scores_out


# -- HNSW ----------------------------------------------------------------------------------------


def new_hnsw(dim: int, params: HNSWParams):
    faiss = import_faiss("an HNSW index")
    index = faiss.IndexHNSWFlat(dim, params.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params.ef_construction
    index.hnsw.efSearch = params.ef_search
    return index


def hnsw_add(index, vectors: np.ndarray, start: int, bar, chunk: int = 4096) -> None:
    """Add rows ``start:`` of ``vectors`` to ``index`` in chunks (one bar update per chunk)."""
    for s in range(start, vectors.shape[0], chunk):
        block = np.ascontiguousarray(vectors[s : s + chunk], dtype=np.float32)
        index.add(block)
        bar.update(len(block))


def hnsw_search(index, queries: np.ndarray, k: int, ef_search: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) as :func:`exact_top_k`; rows faiss could not fill (-1) are dropped later."""
    faiss = import_faiss("searching an HNSW index")
    params = faiss.SearchParametersHNSW(efSearch=max(ef_search, k))  # per call: no shared state
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, index.ntotal), params=params)
    return rows, scores


def read_hnsw(path: str, dim: int, count: int, where: str):
    """A faiss HNSW file, checked to be an inner-product HNSW of ``count`` vectors of ``dim``."""
    faiss = import_faiss(f"{where} is an HNSW index and")
    try:
        index = faiss.read_index(path)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{where}: faiss cannot read its HNSW file ({first}); rebuild the index") from None
    if not isinstance(index, faiss.IndexHNSWFlat) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise BadInput(f"{where}: its faiss file is not an inner-product HNSW index; rebuild the index")
    if index.d != dim or index.ntotal != count:
        raise BadInput(
            f"{where}: its faiss file holds {index.ntotal} vectors of dim {index.d}, the manifest says "
            f"{count} of dim {dim}; rebuild the index"
        )
    return index


def write_hnsw(index, path: str) -> None:
    import_faiss("writing an HNSW index").write_index(index, path)
