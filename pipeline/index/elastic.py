"""The Elasticsearch backend: one document per page, behind an alias, through the official client.

Text is folded in Python by pipeline.index.analysis (the same folding the embedded index
uses) and analysed by Elasticsearch's built-in `cjk_bigram` machinery (config/elasticsearch/
pages.json), so a query finds the same pages on both backends: a Chinese term of two or
more characters is a phrase of its bigrams, a single character matches the `text.chars`
sub-field, Latin and digit words match as words.

Writers and searchers use the alias; the alias points at a versioned index
(<alias>-v<N>-<time>), so `rebuild` can fill a new index and move the alias in one atomic
step. Transient failures (429, 5xx, time-outs, refused connections) are retried by the
client per request and, with a growing pause, around each whole write; when they persist
the write raises IndexUnavailable and the caller marks the item for re-indexing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, Urllib3HttpNode
from elasticsearch import ApiError, Elasticsearch, helpers
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from pipeline.errors import IndexUnavailable, QueryError
from pipeline.index.analysis import fold
from pipeline.index.base import (
    FACET_FIELDS,
    ITEM_FIELDS,
    TOTAL_CAP,
    IndexItem,
    SearchHit,
    SearchQuery,
    SearchResult,
    decode_cursor,
    encode_cursor,
)
from pipeline.index.snippets import make_snippet
from pipeline.keys import secret
from pipeline.security import fonds_of, rank
from pipeline.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)
DEFINITION = REPO_ROOT / "config" / "elasticsearch" / "pages.json"
TRANSIENT_STATUS = (429, 502, 503, 504)
MAX_WINDOW = 10_000  # Elasticsearch's default index.max_result_window
T = TypeVar("T")


class PlainJsonNode(Urllib3HttpNode):
    """Sends `application/json` instead of the versioned media type (setting `plain_json`)."""

    def perform_request(  # type: ignore[override]
        self, method: str, target: str, body: Any = None, headers: Any = None, **kw: Any
    ) -> Any:
        if headers is not None:
            headers = headers.copy()
            for name in ("content-type", "accept"):
                if name in headers and "vnd.elasticsearch" in str(headers[name]):
                    headers[name] = "application/json"
        return super().perform_request(method, target, body=body, headers=headers, **kw)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TransportConnectionError | ConnectionTimeout):
        return True
    if isinstance(exc, ApiError):
        return exc.meta.status in TRANSIENT_STATUS
    if isinstance(exc, helpers.BulkIndexError):
        return any(
            next(iter(e.values())).get("status") in TRANSIENT_STATUS
            for e in exc.errors
            if isinstance(e, dict)
        )
    return False


def load_definition(path: Path = DEFINITION) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def make_client(settings: Settings) -> Elasticsearch:
    cfg = settings.index.elasticsearch
    kwargs: dict[str, Any] = {
        "request_timeout": cfg.request_timeout,
        "max_retries": cfg.max_retries,
        "retry_on_status": TRANSIENT_STATUS,
        "retry_on_timeout": True,
    }
    if cfg.ca_file:
        kwargs["ca_certs"] = cfg.ca_file
    if not cfg.verify_certs:
        kwargs["verify_certs"] = False
    if cfg.api_key is not None:
        kwargs["api_key"] = cfg.api_key.get_secret_value()
    elif cfg.username:
        kwargs["basic_auth"] = (cfg.username, cfg.password.get_secret_value() if cfg.password else "")
    if cfg.plain_json:
        kwargs["node_class"] = PlainJsonNode
    return Elasticsearch(cfg.hosts, **kwargs)


class ElasticIndex:
    name = "elasticsearch"

    def __init__(
        self,
        client: Elasticsearch,
        alias: str,
        *,
        snippet_chars: int = 30,
        chunk: int = 500,
        attempts: int = 4,
        backoff_seconds: float = 0.5,
        definition: dict[str, Any] | None = None,
        where: str = "",
        cursor_key: bytes | None = None,
        total_cap: int = TOTAL_CAP,
    ) -> None:
        self.client = client
        self.total_cap = total_cap  # hits counted exactly at most (track_total_hits)
        self.cursor_key = cursor_key or os.urandom(32)  # signs paging cursors
        self.alias = alias
        self.snippet_chars = snippet_chars
        self.chunk = chunk
        self.attempts = max(1, attempts)
        self.backoff = backoff_seconds
        self.definition = definition or load_definition()
        self.where = where or alias
        self._prepared = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticIndex:
        cfg = settings.index.elasticsearch
        return cls(
            make_client(settings),
            cfg.alias,
            snippet_chars=settings.index.snippet_chars,
            chunk=cfg.bulk_chunk,
            backoff_seconds=cfg.backoff_seconds,
            where=f"Elasticsearch at {', '.join(cfg.hosts)} (alias {cfg.alias})",
            cursor_key=secret(settings.home_dir, "cursor"),
        )

    def close(self) -> None:
        self.client.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _retry(self, action: str, work: Callable[[], T]) -> T:
        """Run a write with growing pauses on transient errors; IndexUnavailable when they persist."""
        try:
            for attempt in Retrying(
                retry=retry_if_exception(_transient),
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=self.backoff, max=30),
                reraise=True,
            ):
                with attempt:
                    return work()
        except (TransportConnectionError, ConnectionTimeout, ApiError, helpers.BulkIndexError) as exc:
            raise IndexUnavailable(f"{action}: {self.where} failed: {_describe(exc)}") from exc
        raise AssertionError("unreachable")

    @contextmanager
    def _reading(self, action: str) -> Iterator[None]:
        try:
            yield
        except ApiError as exc:
            if exc.meta.status == 400:
                raise QueryError(f"{action}: the search server refused the query: {_describe(exc)}") from exc
            raise IndexUnavailable(f"{action}: {self.where} failed: {_describe(exc)}") from exc
        except (TransportConnectionError, ConnectionTimeout) as exc:
            raise IndexUnavailable(f"{action}: {self.where} is not reachable: {_describe(exc)}") from exc

    @cached_property
    def version(self) -> int:
        return int(self.definition["version"])

    def _new_index_name(self) -> str:
        return f"{self.alias}-v{self.version}-{datetime.now(UTC):%Y%m%d%H%M%S%f}"

    def _create_index(self, name: str, *, with_alias: bool) -> None:
        body: dict[str, Any] = {
            "settings": self.definition["settings"],
            "mappings": self.definition["mappings"],
        }
        if with_alias:
            body["aliases"] = {self.alias: {"is_write_index": True}}
        self.client.indices.create(index=name, **body)

    def ensure(self) -> None:
        """Create the first versioned index and its alias when the cluster has neither."""

        def work() -> None:
            if self.client.indices.exists_alias(name=self.alias):
                return
            if self.client.indices.exists(index=self.alias):
                raise IndexUnavailable(
                    f"{self.where}: {self.alias!r} is an index, not an alias; "
                    "choose another alias (index.elasticsearch.alias) or remove that index"
                )
            try:
                self._create_index(self._new_index_name(), with_alias=True)
            except ApiError as exc:  # another writer created it at the same moment
                if exc.meta.status != 400 or not self.client.indices.exists_alias(name=self.alias):
                    raise

        self._retry("preparing the index", work)

    def _prepare(self) -> None:
        """Make sure the alias exists, once per backend object (before its first use)."""
        if not self._prepared:
            self.ensure()
            self._prepared = True

    def _document(self, item: IndexItem, page_no: int, text: str, stamp: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "archive_code": item.archive_code,
            "fonds": fonds_of(item.archive_code),
            "page": page_no,
            "title": item.title,
            "security_rank": rank(item.fields.get("security_level", "")),
            "visible": item.visible,
            "text": fold(text),
            "content": text,
            "indexed_at": stamp,
        }
        doc.update({f: item.fields.get(f, "") for f in ITEM_FIELDS})
        return doc

    def _actions(self, items: Iterable[IndexItem], index: str) -> Iterator[dict[str, Any]]:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        for item in items:
            for page in item.pages:
                yield {
                    "_op_type": "index",
                    "_index": index,
                    "_id": f"{item.archive_code}:{page.page}",
                    "_source": self._document(item, page.page, page.text, stamp),
                }

    def _bulk(self, actions: Iterable[dict[str, Any]], refresh: bool | str = False) -> int:
        done = 0
        for ok, _info in helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=self.chunk,
            max_retries=3,
            initial_backoff=max(self.backoff, 0.1),
            raise_on_error=True,
            refresh=refresh,
        ):
            done += int(ok)
        return done

    # -- the protocol -----------------------------------------------------------------------

    def index_item(self, item: IndexItem) -> None:
        """Write the item's pages (ids code:page), then remove pages it no longer has."""
        self._prepare()
        ids = [f"{item.archive_code}:{p.page}" for p in item.pages]

        def work() -> None:
            if ids:
                self._bulk(self._actions([item], self.alias), refresh="wait_for")
            self.client.delete_by_query(
                index=self.alias,
                query={
                    "bool": {
                        "filter": [{"term": {"archive_code": item.archive_code}}],
                        "must_not": [{"ids": {"values": ids}}],
                    }
                },
                refresh=True,
                conflicts="proceed",
            )

        self._retry(f"indexing {item.archive_code}", work)

    def _ids_of(self, archive_code: str) -> list[str]:
        found = self.client.search(
            index=self.alias,
            query={"term": {"archive_code": archive_code}},
            source=False,
            size=MAX_WINDOW,
        )
        return [h["_id"] for h in found["hits"]["hits"]]

    def set_visible(self, archive_code: str, visible: bool) -> None:
        self._prepare()

        def work() -> None:
            actions = [
                {"_op_type": "update", "_index": self.alias, "_id": i, "doc": {"visible": visible}}
                for i in self._ids_of(archive_code)
            ]
            if actions:
                self._bulk(actions, refresh="wait_for")

        self._retry(f"changing visibility of {archive_code}", work)

    def delete_item(self, archive_code: str) -> None:
        self._prepare()
        self._retry(
            f"removing {archive_code}",
            lambda: self.client.delete_by_query(
                index=self.alias,
                query={"term": {"archive_code": archive_code}},
                refresh=True,
                conflicts="proceed",
            ),
        )

    def count_pages(self, archive_code: str | None = None) -> int:
        self._prepare()
        query = {"term": {"archive_code": archive_code}} if archive_code else {"match_all": {}}
        with self._reading("counting pages"):
            return int(self.client.count(index=self.alias, query=query)["count"])

    def rebuild(self, items: Iterable[IndexItem]) -> int:
        """Fill a new versioned index, then point the alias at it and drop the old ones."""
        name = self._new_index_name()

        def create() -> None:
            self._create_index(name, with_alias=False)

        self._retry("creating the new index", create)
        pages = self._retry("filling the new index", lambda: self._bulk(self._actions(items, name)))
        self._retry("refreshing the new index", lambda: self.client.indices.refresh(index=name))
        old: list[str] = []
        if self.client.indices.exists_alias(name=self.alias):
            old = list(self.client.indices.get_alias(name=self.alias))
        actions: list[dict[str, Any]] = [{"remove": {"index": o, "alias": self.alias}} for o in old]
        actions.append({"add": {"index": name, "alias": self.alias, "is_write_index": True}})
        self._retry("moving the alias", lambda: self.client.indices.update_aliases(actions=actions))
        for o in old:
            self.client.indices.delete(index=o, ignore_unavailable=True)
        log.info("rebuilt %s: %d pages in %s (was %s)", self.alias, pages, name, old)
        return pages

    def _query(self, query: SearchQuery, terms: list[str]) -> dict[str, Any]:
        must: list[dict[str, Any]] = []
        for term in terms:
            field = "text.chars" if len(term) == 1 and not term.isascii() else "text"
            must.append({"match_phrase": {field: term}})
        filters: list[dict[str, Any]] = [
            {"term": {name: value}} for name, value in sorted(query.filters.items()) if value
        ]
        access = query.access
        reach: list[dict[str, Any]] = [{"range": {"security_rank": {"lte": access.clearance}}}]
        if access.fonds:
            reach.append({"terms": {"fonds": list(access.fonds)}})
        if access.granted:  # a live grant reaches exactly its item, whatever its level and fonds
            either = [{"bool": {"filter": reach}}, {"terms": {"archive_code": list(access.granted)}}]
            filters.append({"bool": {"should": either, "minimum_should_match": 1}})
        else:
            filters.extend(reach)
        if not access.see_held:
            filters.append({"term": {"visible": True}})
        return {"bool": {"must": must, "filter": filters}}

    def search(self, query: SearchQuery) -> SearchResult:
        terms = query.terms()
        self._prepare()
        body: dict[str, Any] = {
            "query": self._query(query, terms),
            "sort": [{"_score": "desc"}, {"archive_code": "asc"}, {"page": "asc"}],
            "size": query.limit,
            "track_total_hits": self.total_cap,
            "source_excludes": ["text"],
        }
        if query.cursor:
            position, after = decode_cursor(query.cursor, self.cursor_key, "p", "a")
            body["search_after"] = after
        else:
            position = query.offset
            if position + query.limit > MAX_WINDOW:
                raise QueryError(
                    f"offset {position} is past the first {MAX_WINDOW} hits; page on with the cursor instead"
                )
            body["from_"] = position
        if query.facets:
            body["aggs"] = {f: {"terms": {"field": f, "size": 100}} for f in FACET_FIELDS}
        with self._reading("searching"):
            found = self.client.search(index=self.alias, **body)
        counted = found["hits"]["total"]
        total_exact = counted.get("relation", "eq") == "eq"
        total = min(int(counted["value"]), self.total_cap) if not total_exact else int(counted["value"])
        hits = []
        raw = found["hits"]["hits"]
        for h in raw:
            src = h["_source"]
            snippet, spans = make_snippet(src.get("content", ""), terms, self.snippet_chars)
            fields = {f: str(src.get(f, "")) for f in ITEM_FIELDS}
            hits.append(
                SearchHit(
                    src["archive_code"],
                    int(src["page"]),
                    src.get("title", ""),
                    snippet,
                    spans,
                    float(h["_score"] or 0),
                    fields,
                )
            )
        facets: dict[str, list[tuple[str, int]]] = {}
        for name, agg in (found.get("aggregations") or {}).items():
            facets[name] = sorted(
                ((str(b["key"]), int(b["doc_count"])) for b in agg["buckets"] if str(b["key"])),
                key=lambda kv: (-kv[1], kv[0]),
            )
        following = position + len(hits)
        more = following < total or (not total_exact and len(raw) == query.limit)
        cursor = (
            encode_cursor({"p": following, "a": raw[-1]["sort"]}, self.cursor_key) if raw and more else None
        )
        # Elasticsearch counts the facets over every match, whatever track_total_hits says.
        return SearchResult(total, hits, facets, cursor, total_exact, True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.meta.status} {exc.message}"
    if isinstance(exc, helpers.BulkIndexError):
        first = exc.errors[0] if exc.errors else {}
        return f"{len(exc.errors)} document(s) rejected, first: {json.dumps(first, ensure_ascii=False)[:300]}"
    return f"{type(exc).__name__}: {exc}"
