"""The search backend protocol and the values it takes and returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from pipeline.settings import Settings


@dataclass(frozen=True)
class IndexPage:
    page: int
    text: str


@dataclass(frozen=True)
class IndexItem:
    """One archived item as the index sees it: catalogue fields, visibility and its pages."""

    archive_code: str
    title: str
    fields: dict[str, str]  # year, stage, retention, security_level, box, policy_number, policyholder
    pages: tuple[IndexPage, ...]
    visible: bool = True  # False while QA holds the item back from searchers


@dataclass(frozen=True)
class SearchQuery:
    text: str
    year: str | None = None
    stage: str | None = None
    archive_code: str | None = None
    include_hidden: bool = False  # QA staff see items held for QA
    limit: int = 10
    offset: int = 0


@dataclass(frozen=True)
class SearchHit:
    archive_code: str
    page: int
    title: str
    snippet: str
    highlights: list[tuple[int, int]] = field(default_factory=list)  # [start, end) in snippet
    score: float = 0.0
    fields: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["highlights"] = [list(h) for h in self.highlights]
        return data


@dataclass(frozen=True)
class SearchResult:
    total: int
    hits: list[SearchHit]


class SearchBackend(Protocol):
    def index_item(self, item: IndexItem) -> None:
        """Replace everything indexed for the item with these pages (idempotent)."""

    def set_visible(self, archive_code: str, visible: bool) -> None:
        """Show or hide an item to searchers (QA holds and decisions)."""

    def delete_item(self, archive_code: str) -> None: ...

    def search(self, query: SearchQuery) -> SearchResult: ...

    def count_pages(self, archive_code: str | None = None) -> int: ...

    def close(self) -> None: ...


def open_backend(settings: Settings) -> SearchBackend:
    from pipeline.index.sqlite import SqliteIndex

    return SqliteIndex(settings.index_path, snippet_chars=settings.index.snippet_chars)
