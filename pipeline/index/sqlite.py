"""The embedded index: SQLite FTS5, one row per page, analysed by pipeline.index.analysis.

Three FTS columns hold the analysed text: CJK bigrams in order (a query of two or more
Chinese characters is a phrase of its bigrams), single CJK characters (one-character
queries), and Latin/digit words. Filters, security rank, fonds and visibility live in an
ordinary table joined to the FTS rows, so they are part of the query itself.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.index.analysis import analyse
from pipeline.index.base import (
    FACET_FIELDS,
    ITEM_FIELDS,
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
from pipeline.store.base import owner_only

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    id INTEGER PRIMARY KEY,
    archive_code TEXT NOT NULL,
    page INTEGER NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    fonds TEXT NOT NULL DEFAULT '',
    year TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL DEFAULT '',
    retention TEXT NOT NULL DEFAULT '',
    security_level TEXT NOT NULL DEFAULT '',
    security_rank INTEGER NOT NULL DEFAULT 4,
    box TEXT NOT NULL DEFAULT '',
    policy_number TEXT NOT NULL DEFAULT '',
    policyholder TEXT NOT NULL DEFAULT '',
    visible INTEGER NOT NULL DEFAULT 1,
    text TEXT NOT NULL DEFAULT '',
    UNIQUE (archive_code, page)
);
CREATE INDEX IF NOT EXISTS pages_filters ON pages (year, stage);
CREATE VIRTUAL TABLE IF NOT EXISTS pages_fts USING fts5(
    bigrams, unigrams, words, tokenize = 'unicode61 remove_diacritics 0'
);
"""
_DROP = "DROP TABLE IF EXISTS pages_fts; DROP TABLE IF EXISTS pages;"


def _phrase(tokens: list[str]) -> str:
    return '"' + " ".join(t.replace('"', '""') for t in tokens) + '"'


def fts_expression(terms: list[str]) -> str:
    """The FTS5 MATCH expression for a query's terms: every term must be on the page."""
    parts = []
    for term in terms:
        if term[0].isascii():
            parts.append(f"words : {_phrase([term])}")
        elif len(term) == 1:
            parts.append(f"unigrams : {_phrase([term])}")
        else:
            parts.append(f"bigrams : {_phrase([term[i : i + 2] for i in range(len(term) - 1)])}")
    return " AND ".join(parts)


class SqliteIndex:
    name = "sqlite"

    def __init__(self, path: Path, *, snippet_chars: int = 30) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner_only(self.path)  # page texts, policy numbers, names: readable by the owner only
        self.cursor_key = secret(self.path.parent, "cursor")
        self.snippet_chars = snippet_chars
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            had_pages = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'pages'").fetchone()
            if had_pages:
                print(
                    f"{self.path}: built by an older version; starting it empty. "
                    "Run `capture reindex` to fill it from the archive.",
                    file=sys.stderr,
                )
            with self._db:
                self._db.executescript(_DROP)
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def _insert(self, item: IndexItem) -> None:
        level = item.fields.get("security_level", "")
        for page in item.pages:
            cur = self._db.execute(
                "INSERT INTO pages (archive_code, page, title, fonds, security_rank, visible, text, "
                f"{', '.join(ITEM_FIELDS)}) VALUES ({', '.join('?' * (7 + len(ITEM_FIELDS)))})",
                (
                    item.archive_code,
                    page.page,
                    item.title,
                    fonds_of(item.archive_code),
                    rank(level),
                    int(item.visible),
                    page.text,
                    *(item.fields.get(f, "") for f in ITEM_FIELDS),
                ),
            )
            tokens = analyse(page.text)
            self._db.execute(
                "INSERT INTO pages_fts (rowid, bigrams, unigrams, words) VALUES (?,?,?,?)",
                (cur.lastrowid, " ".join(tokens.bigrams), " ".join(tokens.unigrams), " ".join(tokens.words)),
            )

    def index_item(self, item: IndexItem) -> None:
        with self._lock, self._db:
            self._delete(item.archive_code)
            self._insert(item)

    def rebuild(self, items: Iterable[IndexItem]) -> int:
        """Replace the whole index in one transaction: searchers see the old one until it commits."""
        pages = 0
        with self._lock, self._db:
            self._db.execute("DELETE FROM pages_fts")
            self._db.execute("DELETE FROM pages")
            for item in items:
                self._insert(item)
                pages += len(item.pages)
        return pages

    def _delete(self, archive_code: str) -> None:
        self._db.execute(
            "DELETE FROM pages_fts WHERE rowid IN (SELECT id FROM pages WHERE archive_code = ?)",
            (archive_code,),
        )
        self._db.execute("DELETE FROM pages WHERE archive_code = ?", (archive_code,))

    def set_visible(self, archive_code: str, visible: bool) -> None:
        """Show or hide an item's pages to searchers (QA decisions), without re-indexing them."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE pages SET visible = ? WHERE archive_code = ?", (int(visible), archive_code)
            )

    def delete_item(self, archive_code: str) -> None:
        with self._lock, self._db:
            self._delete(archive_code)

    def count_pages(self, archive_code: str | None = None) -> int:
        if archive_code is None:
            return int(self._db.execute("SELECT count(*) FROM pages").fetchone()[0])
        row = self._db.execute("SELECT count(*) FROM pages WHERE archive_code = ?", (archive_code,))
        return int(row.fetchone()[0])

    def search(self, query: SearchQuery) -> SearchResult:
        terms = query.terms()
        offset = int(decode_cursor(query.cursor, self.cursor_key, "o")[0]) if query.cursor else query.offset
        where = ["pages_fts MATCH ?"]
        args: list[Any] = [fts_expression(terms)]
        for name, value in sorted(query.filters.items()):
            if value:
                where.append(f"p.{name} = ?")  # names checked against FILTER_FIELDS
                args.append(value)
        access = query.access
        reach = ["p.security_rank <= ?"]
        args.append(access.clearance)
        if access.fonds:
            reach.append(f"p.fonds IN ({', '.join('?' * len(access.fonds))})")
            args.extend(access.fonds)
        if access.granted:  # a live grant reaches exactly its item, whatever its level and fonds
            granted = f"p.archive_code IN ({', '.join('?' * len(access.granted))})"
            where.append(f"(({' AND '.join(reach)}) OR {granted})")
            args.extend(access.granted)
        else:
            where.extend(reach)
        if not access.see_held:
            where.append("p.visible = 1")
        sql_from = f"FROM pages_fts JOIN pages p ON p.id = pages_fts.rowid WHERE {' AND '.join(where)}"
        facets: dict[str, list[tuple[str, int]]] = {}
        with self._lock:
            total = int(self._db.execute(f"SELECT count(*) {sql_from}", args).fetchone()[0])
            rows = self._db.execute(
                f"SELECT p.archive_code, p.page, p.title, p.text, bm25(pages_fts) AS score, "
                f"{', '.join('p.' + f for f in ITEM_FIELDS)} {sql_from} "
                "ORDER BY score, p.archive_code, p.page LIMIT ? OFFSET ?",
                [*args, query.limit, offset],
            ).fetchall()
            if query.facets:
                for name in FACET_FIELDS:
                    counts = self._db.execute(
                        f"SELECT p.{name}, count(*) AS n {sql_from} AND p.{name} != '' "
                        f"GROUP BY p.{name} ORDER BY n DESC, p.{name}",
                        args,
                    ).fetchall()
                    facets[name] = [(str(v), int(n)) for v, n in counts]
        hits = []
        for code, page, title, text, score, *values in rows:
            snippet, spans = make_snippet(text, terms, self.snippet_chars)
            fields = dict(zip(ITEM_FIELDS, values, strict=True))
            hits.append(SearchHit(code, page, title, snippet, spans, -float(score), fields))
        following = offset + len(hits)
        cursor = encode_cursor({"o": following}, self.cursor_key) if following < total else None
        return SearchResult(total, hits, facets, cursor)
