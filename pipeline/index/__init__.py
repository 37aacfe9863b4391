"""Search index: the analysis shared by all backends, the backend protocol, the SQLite backend."""

from pipeline.index.analysis import analyse, fold
from pipeline.index.base import IndexItem, IndexPage, SearchBackend, SearchHit, SearchQuery, open_backend

__all__ = [
    "IndexItem",
    "IndexPage",
    "SearchBackend",
    "SearchHit",
    "SearchQuery",
    "analyse",
    "fold",
    "open_backend",
]
