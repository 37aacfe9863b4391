"""The search backend protocol and the values it takes and returns.

Both backends (embedded SQLite FTS5, Elasticsearch) take the same SearchQuery and return
the same SearchResult; the security filter (clearance, fonds, QA visibility) travels inside
the query as an Access, so each backend applies it inside its own query.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.errors import QueryError
from pipeline.index.analysis import query_terms
from pipeline.keys import sign
from pipeline.security import Access

if TYPE_CHECKING:
    from pipeline.settings import Settings

MAX_QUERY_CHARS = 200
MAX_QUERY_TERMS = 16
MAX_LIMIT = 100
MAX_OFFSET = 10_000  # deeper than this, page on with the cursor (Elasticsearch's own window)
# Matches are counted exactly up to this many; past it the total reads "10,000+" (total_exact is
# False), as the big search engines do: counting a million matches costs more than the search.
TOTAL_CAP = 10_000
FILTER_FIELDS = ("year", "stage", "retention", "box", "security_level", "archive_code", "policy_number")
FACET_FIELDS = ("year", "stage", "retention", "security_level", "box")
ITEM_FIELDS = ("year", "stage", "retention", "security_level", "box", "policy_number", "policyholder")


@dataclass(frozen=True)
class IndexPage:
    page: int
    text: str


@dataclass(frozen=True)
class IndexItem:
    """One archived item as the index sees it: catalogue fields, visibility and its pages."""

    archive_code: str
    title: str
    fields: dict[str, str]  # ITEM_FIELDS
    pages: tuple[IndexPage, ...]
    visible: bool = True  # False while QA holds the item back from searchers


@dataclass(frozen=True)
class SearchQuery:
    text: str
    filters: dict[str, str] = field(default_factory=dict)  # FILTER_FIELDS -> exact value
    access: Access = Access()  # every level, nothing held for QA; callers pass the user's
    limit: int = 10
    offset: int = 0
    cursor: str | None = None  # from a previous SearchResult.next_cursor (deep paging)
    facets: bool = False

    def terms(self) -> list[str]:
        return check_query(self)


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
    """The hits asked for, the total and the facet counts.

    `total` is exact when `total_exact` is True; otherwise at least TOTAL_CAP pages match and
    `total` is TOTAL_CAP ("10,000+"). Facet counts are then counted over the first TOTAL_CAP
    matches the backend found (a sample) when `facets_exact` is False. Hits are always exact:
    every hit is a page the searcher may see."""

    total: int
    hits: list[SearchHit]
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    next_cursor: str | None = None
    total_exact: bool = True
    facets_exact: bool = True

    @property
    def total_text(self) -> str:
        """The total as people read it: "1,234", or "10,000+" past the counting cap."""
        return f"{self.total:,}" if self.total_exact else f"{self.total:,}+"

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "total_exact": self.total_exact,
            "total_text": self.total_text,
            "hits": [h.to_dict() for h in self.hits],
            "facets": {k: [{"value": v, "count": c} for v, c in vs] for k, vs in self.facets.items()},
            "facets_exact": self.facets_exact,
            "next_cursor": self.next_cursor,
        }


def given_filters(**values: str | None) -> dict[str, str]:
    """The filters a person actually set (empty and missing ones dropped)."""
    return {name: value for name, value in values.items() if value}


def check_query(query: SearchQuery) -> list[str]:
    """The query's search terms, or a QueryError saying what is wrong with it."""
    if len(query.text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is {len(query.text)} characters long; at most {MAX_QUERY_CHARS}")
    if "\ufffd" in query.text or any(
        (ord(c) < 32 and c not in "\t\n") or 0xD800 <= ord(c) <= 0xDFFF for c in query.text
    ):
        raise QueryError("the query contains characters that are not valid text (not UTF-8?)")
    unknown = set(query.filters) - set(FILTER_FIELDS)
    if unknown:
        raise QueryError(f"unknown filter {sorted(unknown)[0]!r}; filters are {', '.join(FILTER_FIELDS)}")
    if not 1 <= query.limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
    if not 0 <= query.offset <= MAX_OFFSET:
        raise QueryError(f"offset must be between 0 and {MAX_OFFSET}; page on with the cursor instead")
    terms = query_terms(query.text)
    if not terms:
        raise QueryError("the query has no searchable words (Chinese characters, letters or digits)")
    if len(terms) > MAX_QUERY_TERMS:
        raise QueryError(f"the query has {len(terms)} separate words; at most {MAX_QUERY_TERMS}")
    return terms


def encode_cursor(data: dict[str, Any], key: bytes) -> str:
    """The position as base64 JSON, signed (HMAC) so that only cursors this index handed out
    come back: no forged offsets past the paging limit, no made-up sort values."""
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + sign(key, raw)[:32]


MAX_POSITION = 1_000_000_000


def decode_cursor(cursor: str, key: bytes, *keys: str) -> tuple[Any, ...]:
    """The values stored under `keys` in a cursor from encode_cursor; QueryError for anything else.

    A cursor comes back from outside, so it is checked like any input: valid base64 JSON, an
    object with the keys, positions that are whole numbers in range, sort values that are
    plain numbers or short strings."""
    bad = QueryError("the paging cursor is not one this index handed out")
    body, _, signature = cursor.rpartition(".")
    if len(cursor) > 2000 or not body or "=" in body:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if not hmac.compare_digest(sign(key, raw)[:32], signature):
            raise bad
        data = json.loads(raw)
        values = tuple(data[name] for name in keys)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise bad from exc
    for name, value in zip(keys, values, strict=True):
        if name in ("o", "p"):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_POSITION:
                raise bad
        elif not isinstance(value, list) or len(value) > 10 or not all(_plain_sort_value(v) for v in value):
            raise bad
    return values


def _plain_sort_value(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    return isinstance(value, str) and len(value) <= 200


class SearchBackend(Protocol):
    name: str

    def index_item(self, item: IndexItem) -> None:
        """Replace everything indexed for the item with these pages (idempotent)."""

    def set_visible(self, archive_code: str, visible: bool) -> None:
        """Show or hide an item to searchers (QA holds and decisions)."""

    def delete_item(self, archive_code: str) -> None: ...

    def search(self, query: SearchQuery) -> SearchResult: ...

    def count_pages(self, archive_code: str | None = None) -> int: ...

    def rebuild(self, items: Iterable[IndexItem]) -> int:
        """Build a fresh index from these items and switch searchers to it at once; pages indexed."""

    def close(self) -> None: ...


def open_backend(settings: Settings, backend: str | None = None) -> SearchBackend:
    """The backend the settings choose (or `backend`, overriding them)."""
    name = backend or settings.index.backend
    if name == "elasticsearch":
        from pipeline.index.elastic import ElasticIndex

        return ElasticIndex.from_settings(settings)
    if name == "sqlite":
        from pipeline.index.sqlite import SqliteIndex

        return SqliteIndex(settings.index_path, snippet_chars=settings.index.snippet_chars)
    raise QueryError(f"unknown index backend {name!r}; use sqlite or elasticsearch")
