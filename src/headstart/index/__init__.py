"""Vector indexes for semantic search: documents, their embeddings and who embedded them, in a
folder on disk; exact search for small corpora, faiss HNSW above :data:`AUTO_HNSW_FROM` documents.

faiss is optional (``pip install "headstart[search]"``): exact indexes work without it.
"""

from .backends import HNSWParams
from .store import AUTO_HNSW_FROM, SearchResult, VectorIndex

__all__ = ["AUTO_HNSW_FROM", "HNSWParams", "SearchResult", "VectorIndex"]
