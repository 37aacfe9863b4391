"""A search as every route runs it: the searcher's reach, the backend's query, the audit row.

`ArchiveService.search` (web, API, the CLI's other commands) and the lean `capture search`
(pipeline/cli/search.py, over `pipeline.statedb.LeanStore`) both call `audited_search`, so the
filter a searcher gets and what is written to the audit log are decided in one place. It
imports neither the ORM store nor the service's page and packaging stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pipeline.access import Principal, search_access
from pipeline.errors import CaptureError
from pipeline.index.base import SearchQuery

if TYPE_CHECKING:
    from pipeline.index.base import SearchBackend, SearchResult


class SearchState(Protocol):
    """What a search needs of the state store (`Store` and `LeanStore` both have it)."""

    def live_grant_codes(self, user_id: str) -> tuple[str, ...]: ...

    def audit(
        self, user: str, action: str, target: str = "", details: dict[str, Any] | None = None
    ) -> None: ...


def audited_search(
    store: SearchState,
    index: SearchBackend,
    who: Principal,
    text: str,
    filters: dict[str, str],
    *,
    limit: int = 10,
    offset: int = 0,
    cursor: str | None = None,
    facets: bool = True,
    include_held: bool = False,
    via: str = "api",
) -> SearchResult:
    """`who`'s search, within their reach (clearance, fonds, QA holds, live grants); audited,
    refused searches too."""
    try:
        granted = store.live_grant_codes(who.user_id)
        access = search_access(who, include_held=include_held, granted=granted)
        query = SearchQuery(text, filters, access, limit=limit, offset=offset, cursor=cursor, facets=facets)
        result = index.search(query)
    except CaptureError as exc:
        store.audit(
            who.username,
            "search.refused",
            text[:500],
            {"filters": filters, "why": str(exc)[:500], "via": via, "include_held": include_held},
        )
        raise
    store.audit(
        who.username,
        "search",
        text,
        {
            "filters": filters,
            "hits": result.total,
            "hits_exact": result.total_exact,
            "offset": offset,
            "cursor": bool(cursor),
            "include_held": include_held,
            "backend": index.name,
            "via": via,
        },
    )
    return result
