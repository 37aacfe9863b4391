"""The embedded index: SQLite FTS5, one row per page, analysed by pipeline.index.analysis.

Three FTS columns hold the analysed text: CJK bigrams in order (a query of two or more
Chinese characters is a phrase of its bigrams), single CJK characters (one-character
queries), and Latin/digit words. Filters and visibility live in an ordinary table joined
to the FTS rows, so they are part of the query itself.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from pipeline.index.analysis import analyse, query_terms
from pipeline.index.base import IndexItem, SearchHit, SearchQuery, SearchResult
from pipeline.index.snippets import make_snippet

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    id INTEGER PRIMARY KEY,
    archive_code TEXT NOT NULL,
    page INTEGER NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    year TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL DEFAULT '',
    retention TEXT NOT NULL DEFAULT '',
    security_level TEXT NOT NULL DEFAULT '',
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
_FIELDS = ("year", "stage", "retention", "security_level", "box", "policy_number", "policyholder")


def _phrase(tokens: list[str]) -> str:
    return '"' + " ".join(t.replace('"', '""') for t in tokens) + '"'


def fts_expression(text: str) -> str | None:
    """The FTS5 MATCH expression for a query: every term must be on the page."""
    parts = []
    for term in query_terms(text):
        if term[0].isascii():
            parts.append(f"words : {_phrase([term])}")
        elif len(term) == 1:
            parts.append(f"unigrams : {_phrase([term])}")
        else:
            parts.append(f"bigrams : {_phrase([term[i : i + 2] for i in range(len(term) - 1)])}")
    return " AND ".join(parts) if parts else None


class SqliteIndex:
    def __init__(self, path: Path, *, snippet_chars: int = 30) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.snippet_chars = snippet_chars
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def index_item(self, item: IndexItem) -> None:
        with self._lock, self._db:
            self._delete(item.archive_code)
            for page in item.pages:
                cur = self._db.execute(
                    "INSERT INTO pages (archive_code, page, title, year, stage, retention, security_level,"
                    " box, policy_number, policyholder, visible, text) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        item.archive_code,
                        page.page,
                        item.title,
                        *(item.fields.get(f, "") for f in _FIELDS),
                        int(item.visible),
                        page.text,
                    ),
                )
                tokens = analyse(page.text)
                self._db.execute(
                    "INSERT INTO pages_fts (rowid, bigrams, unigrams, words) VALUES (?,?,?,?)",
                    (
                        cur.lastrowid,
                        " ".join(tokens.bigrams),
                        " ".join(tokens.unigrams),
                        " ".join(tokens.words),
                    ),
                )

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
        return int(
            self._db.execute("SELECT count(*) FROM pages WHERE archive_code = ?", (archive_code,)).fetchone()[
                0
            ]
        )

    def search(self, query: SearchQuery) -> SearchResult:
        expression = fts_expression(query.text)
        if expression is None:
            return SearchResult(0, [])
        where = ["pages_fts MATCH ?"]
        args: list[object] = [expression]
        for column, value in (
            ("p.year", query.year),
            ("p.stage", query.stage),
            ("p.archive_code", query.archive_code),
        ):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if not query.include_hidden:
            where.append("p.visible = 1")
        sql_from = f"FROM pages_fts JOIN pages p ON p.id = pages_fts.rowid WHERE {' AND '.join(where)}"
        with self._lock:
            total = int(self._db.execute(f"SELECT count(*) {sql_from}", args).fetchone()[0])
            rows = self._db.execute(
                f"SELECT p.archive_code, p.page, p.title, p.text, bm25(pages_fts) AS score, "
                f"{', '.join('p.' + f for f in _FIELDS)} {sql_from} "
                "ORDER BY score, p.archive_code, p.page LIMIT ? OFFSET ?",
                [*args, query.limit, query.offset],
            ).fetchall()
        terms = query_terms(query.text)
        hits = []
        for code, page, title, text, score, *values in rows:
            snippet, spans = make_snippet(text, terms, self.snippet_chars)
            hits.append(
                SearchHit(
                    code, page, title, snippet, spans, -float(score), dict(zip(_FIELDS, values, strict=True))
                )
            )
        return SearchResult(total, hits)
