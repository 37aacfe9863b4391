"""The embedded index: SQLite FTS5, one row per page, analysed by pipeline.index.analysis.

Five FTS columns: CJK bigrams in order (a query of two or more Chinese characters is a phrase
of its bigrams), single CJK characters (one-character queries), Latin/digit words, and two of
our own. `tiers` holds, for each bigram or word that is prominent on the page, a token naming
how prominent (the term and its impact level, see `impact_level`), so the pages where a term
weighs most can be found without reading every page that has it. `meta` holds a token per
filter value (year, stage, box...) and the page's fonds, security rank and visibility, so user
filters and a fonds restriction are part of the FTS query and a search does not walk pages it
would throw away. Every condition, clearance and the QA hold included, is also checked on the
`pages` table, which stays the authority. Page texts live in `page_texts`, read for snippets.

Searching at archive scale (a common word is on nearly every page of a million):

- the total is counted exactly up to TOTAL_CAP matches, then reads "10,000+";
- facets are counted over the same capped scan (exact when the total is);
- the hits are ranked by BM25 over the page's terms (length-normalised against a nominal page,
  weighted by each term's rarity), best first. When there are at most RANK_BUDGET matches all
  are scored. Otherwise the tier tokens give the pages where the query's terms are most
  prominent, highest level first, each term's floor lowered in turn, until the pages scoring
  more than any page below the floors could (the threshold algorithm) fill the page of hits:
  they are the exhaustive ranking's top hits, in its order. If the budget runs out first, the
  pages looked at lead by score and the other matches follow newest first; the benchmark
  reports how often the top 10 equals the exhaustive ranking's.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import sqlite3
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.index.analysis import analyse
from pipeline.index.base import (
    FACET_FIELDS,
    FILTER_FIELDS,
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
from pipeline.security import Access, fonds_of, rank
from pipeline.statedb import owner_only

SCHEMA_VERSION = 3
# the FTS columns in declaration order: FTS5 keeps them as c0, c1, ... in pages_fts_content
_FTS_COLUMNS = ("bigrams", "unigrams", "words", "tiers", "meta")
_SCHEMA = f"""
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
    length INTEGER NOT NULL DEFAULT 0,
    UNIQUE (archive_code, page)
);
CREATE TABLE IF NOT EXISTS page_texts (id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pages_filters ON pages (year, stage);
CREATE VIRTUAL TABLE IF NOT EXISTS pages_fts USING fts5(
    {", ".join(_FTS_COLUMNS)},
    tokenize = 'unicode61 remove_diacritics 0', columnsize = 0
);
"""
_DROP = "DROP TABLE IF EXISTS pages_fts; DROP TABLE IF EXISTS page_texts; DROP TABLE IF EXISTS pages;"

# BM25 (k1, b) with lengths normalised against a nominal page of NOMINAL_LENGTH terms (bigrams
# and words): a fixed yardstick, so a page's impact levels need not change as the index grows.
K1 = 1.2
B = 0.75
NOMINAL_LENGTH = 400
# Impact levels: 4 per doubling of tf/K (K the length-normalised saturation), from tf/K = sqrt(2)
# (level 2) up to MAX_LEVEL. A page gets a tier token for a term only from level 2 up.
MIN_LEVEL = 2
MAX_LEVEL = 23
LEVEL_STEPS = (23, 19, 16, 13, 11, 9, 8, 7, 6, 5, 4, 3, 2)  # each term's level floors, highest first
RANK_BUDGET = 2000  # pages scored for one search at most
DF_SAMPLE = 1000  # matches read to estimate a term's document frequency
LEVEL_COUNT = 1000  # a step's pages counted up to this, to choose which term's floor to lower
PLAIN_SHARE = 0.4  # pages read without the match must match at least this often, or FTS5 checks it
PLAIN_SAMPLE = 100  # pages read without the match before their share is judged
ROUND_PAGES = 50  # what one more round of the ranking costs, in pages read
CACHE_KIB = 65536  # SQLite's page cache for the connection (its default is 2 MB)


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
            parts.append(f"bigrams : {_phrase(_bigrams(term))}")
    return " AND ".join(parts)


def _bigrams(term: str) -> list[str]:
    return [term[i : i + 2] for i in range(len(term) - 1)]


def saturation(length: int) -> float:
    """BM25's K for a page of `length` terms."""
    return K1 * (1 - B + B * length / NOMINAL_LENGTH)


def impact_level(tf: int, length: int) -> int:
    """How prominent a term occurring `tf` times is on a page of `length` terms: 0 (not), or
    MIN_LEVEL..MAX_LEVEL, rising with BM25's term weight tf / (tf + K)."""
    if tf <= 0:
        return 0
    ratio = tf / saturation(length)
    if ratio < 2 ** (MIN_LEVEL / 4):
        return 0
    return min(MAX_LEVEL, int(4 * math.log2(ratio) + 1e-9))


_impact_level = functools.lru_cache(maxsize=1 << 16)(impact_level)


def tier_tokens(bigrams: Sequence[str], words: Sequence[str], length: int) -> list[str]:
    """The page's tier tokens: '<term>x<level>' for each prominent bigram or word."""
    counts = Counter(b for b in bigrams if len(b) == 2)
    counts.update(words)
    out = []
    for term, tf in counts.items():
        level = impact_level(tf, length)
        if level:
            out.append(f"{term}x{level}")
    return out


def meta_token(name: str, value: object) -> str:
    """The FTS token standing for `name = value` (a filter or access value), as a hash: values
    may hold any characters, the token only letters and digits."""
    digest = hashlib.blake2b(f"{name}\x1f{value}".encode(), digest_size=10).hexdigest()
    return "m" + digest


def meta_tokens(archive_code: str, fields: dict[str, str], security_rank: int, visible: bool) -> list[str]:
    values: dict[str, object] = {f: fields.get(f, "") for f in FILTER_FIELDS if f != "archive_code"}
    values.update(
        archive_code=archive_code,
        fonds=fonds_of(archive_code),
        security_rank=security_rank,
        visible=int(visible),
    )
    return [meta_token(name, value) for name, value in sorted(values.items())]


def _any_of(tokens: Iterable[str]) -> str:
    return "(" + " OR ".join(_phrase([t]) for t in tokens) + ")"


def access_expression(access: Access) -> str:
    """The selective part of the searcher's reach as FTS meta tokens: a fonds restriction (with
    the items of live grants). Clearance and the QA hold let most pages through, and ANDing such
    dense lists costs the FTS query more than the pages it saves, so they are checked in SQL only
    (as everything is: the meta tokens only make the search cheaper)."""
    if not access.fonds:
        return ""
    reach = _any_of(meta_token("fonds", f) for f in access.fonds)
    if access.granted:
        return f"({reach} OR {_any_of(meta_token('archive_code', code) for code in access.granted)})"
    return reach


def tier_expression(term: str, floor: int) -> str | None:
    """Pages where every bigram of `term` (or the word) is at impact level `floor` or higher."""
    if term[0].isascii():
        tokens = [term]
    elif len(term) >= 2:
        tokens = list(dict.fromkeys(_bigrams(term)))
    else:
        return None
    levels = range(floor, MAX_LEVEL + 1)
    return " AND ".join(f"tiers : {_any_of(f'{t}x{level}' for level in levels)}" for t in tokens)


def new_tier_expression(term: str, floor: int, above: int) -> str | None:
    """Pages that `tier_expression(term, floor)` admits and `tier_expression(term, above)` did
    not (floor < above): every bigram at `floor` or higher and some bigram below `above`."""
    every = tier_expression(term, floor)
    if every is None:
        return None
    tokens = [term] if term[0].isascii() else list(dict.fromkeys(_bigrams(term)))
    levels = range(floor, above)
    if len(tokens) == 1:
        return f"tiers : {_any_of(f'{tokens[0]}x{level}' for level in levels)}"
    newly = _any_of(f"{t}x{level}" for t in tokens for level in levels)
    return f"{every} AND tiers : {newly}"


@dataclass
class _Candidate:
    id: int
    archive_code: str
    page: int
    title: str
    length: int
    fields: dict[str, str]
    score: float = 0.0
    levels: dict[str, int] = field(default_factory=dict)  # a query term's impact level on the page


class SqliteIndex:
    name = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        snippet_chars: int = 30,
        total_cap: int = TOTAL_CAP,
        rank_budget: int = RANK_BUDGET,
    ) -> None:
        self.path = Path(path)
        self.total_cap = total_cap  # matches counted exactly at most
        self.rank_budget = rank_budget  # pages scored for one search at most
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner_only(self.path)  # page texts, policy numbers, names: readable by the owner only
        self.cursor_key = secret(self.path.parent, "cursor")
        self.snippet_chars = snippet_chars
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
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
        security_rank = rank(level)
        meta = " ".join(meta_tokens(item.archive_code, item.fields, security_rank, item.visible))
        for page in item.pages:
            tokens = analyse(page.text)
            length = len(tokens.bigrams) + len(tokens.words)
            cur = self._db.execute(
                "INSERT INTO pages (archive_code, page, title, fonds, security_rank, visible, length, "
                f"{', '.join(ITEM_FIELDS)}) VALUES ({', '.join('?' * (7 + len(ITEM_FIELDS)))})",
                (
                    item.archive_code,
                    page.page,
                    item.title,
                    fonds_of(item.archive_code),
                    security_rank,
                    int(item.visible),
                    length,
                    *(item.fields.get(f, "") for f in ITEM_FIELDS),
                ),
            )
            self._db.execute("INSERT INTO page_texts (id, text) VALUES (?, ?)", (cur.lastrowid, page.text))
            self._db.execute(
                "INSERT INTO pages_fts (rowid, bigrams, unigrams, words, tiers, meta) VALUES (?,?,?,?,?,?)",
                (
                    cur.lastrowid,
                    " ".join(tokens.bigrams),
                    " ".join(tokens.unigrams),
                    " ".join(tokens.words),
                    " ".join(tier_tokens(tokens.bigrams, tokens.words, length)),
                    meta,
                ),
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
            self._db.execute("DELETE FROM page_texts")
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
        self._db.execute(
            "DELETE FROM page_texts WHERE id IN (SELECT id FROM pages WHERE archive_code = ?)",
            (archive_code,),
        )
        self._db.execute("DELETE FROM pages WHERE archive_code = ?", (archive_code,))

    def set_visible(self, archive_code: str, visible: bool) -> None:
        """Show or hide an item's pages to searchers (QA decisions), without re-indexing them."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE pages SET visible = ? WHERE archive_code = ?", (int(visible), archive_code)
            )
            rows = self._db.execute(
                f"SELECT id, security_rank, {', '.join(ITEM_FIELDS)} FROM pages WHERE archive_code = ?",
                (archive_code,),
            ).fetchall()
            for page_id, security_rank, *values in rows:
                fields = dict(zip(ITEM_FIELDS, values, strict=True))
                meta = " ".join(meta_tokens(archive_code, fields, security_rank, visible))
                self._db.execute("UPDATE pages_fts SET meta = ? WHERE rowid = ?", (meta, page_id))

    def delete_item(self, archive_code: str) -> None:
        with self._lock, self._db:
            self._delete(archive_code)

    def count_pages(self, archive_code: str | None = None) -> int:
        if archive_code is None:
            return int(self._db.execute("SELECT count(*) FROM pages").fetchone()[0])
        row = self._db.execute("SELECT count(*) FROM pages WHERE archive_code = ?", (archive_code,))
        return int(row.fetchone()[0])

    def search(self, query: SearchQuery) -> SearchResult:
        offset = int(decode_cursor(query.cursor, self.cursor_key, "o")[0]) if query.cursor else query.offset
        search = self.searcher(query)
        terms = search.terms
        with self._lock:
            total, total_exact, facets = search.count(query.facets)
            hits = search.hits(offset, query.limit, total, total_exact)
            texts = search.texts([c.id for c in hits])
        results = []
        for c in hits:
            snippet, spans = make_snippet(texts.get(c.id, ""), terms, self.snippet_chars)
            results.append(
                SearchHit(c.archive_code, c.page, c.title, snippet, spans, round(c.score, 6), c.fields)
            )
        following = offset + len(results)
        more = following < total or (not total_exact and len(results) == query.limit)
        cursor = encode_cursor({"o": following}, self.cursor_key) if more else None
        return SearchResult(total, results, facets, cursor, total_exact, total_exact)

    def searcher(self, query: SearchQuery) -> _Search:
        """The queries of one search (run them holding the lock)."""
        terms = query.terms()
        pushed = [meta_token(name, value) for name, value in sorted(query.filters.items()) if value]
        reach = access_expression(query.access)
        fts_filter = " AND ".join([*(_phrase([t]) for t in pushed), *([reach] if reach else [])])
        where, args = self._conditions(query)
        search = _Search(self._db, terms, fts_expression(terms), fts_filter, where, args)
        search.total_cap, search.rank_budget = self.total_cap, self.rank_budget
        return search

    @staticmethod
    def _conditions(query: SearchQuery) -> tuple[list[str], list[Any]]:
        """The filters and the searcher's reach as SQL over `pages p`: the authority on what a
        searcher sees (the FTS meta tokens only make the search cheaper)."""
        where: list[str] = []
        args: list[Any] = []
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
        return where, args


class _Search:
    """One search's queries against the index (called with the index's lock held)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        terms: list[str],
        matching: str,
        fts_filter: str,
        where: list[str],
        args: list[Any],
    ) -> None:
        self.db = db
        self.terms = terms
        self.matching = matching
        self.fts_filter = fts_filter
        self.where = where
        self.args = args
        self.total_cap = TOTAL_CAP
        self.rank_budget = RANK_BUDGET
        self._tier_counts: dict[tuple[str, int, int, int], int] = {}  # see _tier_pages

    def _select(
        self, columns: str, extra: str = "", tail: str = "", tail_args: Sequence[Any] = (), match: bool = True
    ) -> list[Any]:
        matching = self.matching if match else ""
        expression = " AND ".join(f"({e})" for e in (matching, extra, self.fts_filter) if e)
        sql = (
            f"SELECT {columns} FROM pages_fts CROSS JOIN pages p ON p.id = pages_fts.rowid "
            f"WHERE pages_fts MATCH ? {''.join(' AND ' + w for w in self.where)} {tail}"
        )
        return self.db.execute(sql, [expression, *self.args, *tail_args]).fetchall()

    def count(self, facets: bool) -> tuple[int, bool, dict[str, list[tuple[str, int]]]]:
        """The total (exact up to the cap) and the facet counts over the same matches: SQLite
        keeps the capped matches' facet values and groups them by each field in turn (grouping
        by all fields at once made nearly a group a page: the box is nearly an item's own)."""
        expression = " AND ".join(f"({e})" for e in (self.matching, self.fts_filter) if e)
        inner = (
            f"SELECT {', '.join('p.' + f for f in FACET_FIELDS) if facets else '1'} "
            "FROM pages_fts CROSS JOIN pages p ON p.id = pages_fts.rowid "
            f"WHERE pages_fts MATCH ? {''.join(' AND ' + w for w in self.where)} LIMIT ?"
        )
        args = [expression, *self.args, self.total_cap + 1]
        found: dict[str, list[tuple[str, int]]] = {}
        if not facets:
            matched = int(self.db.execute(f"SELECT count(*) FROM ({inner})", args).fetchone()[0])
            return min(matched, self.total_cap), matched <= self.total_cap, found
        groups = " UNION ALL ".join(
            f"SELECT {n}, {name}, count(*) FROM m GROUP BY {name}" for n, name in enumerate(FACET_FIELDS)
        )
        rows = self.db.execute(f"WITH m AS MATERIALIZED ({inner}) {groups}", args).fetchall()
        counts: list[Counter[str]] = [Counter() for _ in FACET_FIELDS]
        for n, value, count in rows:
            counts[n][str(value)] += int(count)
        matched = sum(counts[0].values())
        for n, name in enumerate(FACET_FIELDS):
            counts[n].pop("", None)
            found[name] = sorted(counts[n].items(), key=lambda kv: (-kv[1], kv[0]))
        return min(matched, self.total_cap), matched <= self.total_cap, found

    # -- ranking ------------------------------------------------------------------------------

    def load(self, ids: Sequence[int], catalogue: bool = True) -> list[_Candidate]:
        """The pages' lengths and catalogue fields (without `catalogue`, only what ranking needs:
        `fill` adds the rest to the hits)."""
        out = []
        if not catalogue:
            select = "SELECT id, archive_code, page, length FROM pages WHERE id"
            for page_id, code, page, length in self._rows_in(select, ids):
                out.append(_Candidate(page_id, code, page, "", length, {}))
            return out
        select = f"SELECT id, archive_code, page, title, length, {', '.join(ITEM_FIELDS)} FROM pages WHERE id"
        for page_id, code, page, title, length, *values in self._rows_in(select, ids):
            fields = dict(zip(ITEM_FIELDS, values, strict=True))
            out.append(_Candidate(page_id, code, page, title, length, fields))
        return out

    def fill(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """The candidates with their titles and catalogue fields."""
        full = {c.id: c for c in self.load([c.id for c in candidates])}
        for c in candidates:
            c.title, c.fields = full[c.id].title, full[c.id].fields
        return candidates

    def _rows_in(self, select: str, ids: Sequence[int]) -> Iterator[Any]:
        """The rows of `select ... WHERE <key>` IN ids, asked 500 ids at a time."""
        for start in range(0, len(ids), 500):
            part = list(ids[start : start + 500])
            yield from self.db.execute(f"{select} IN ({', '.join('?' * len(part))})", part)

    def texts(self, ids: Sequence[int]) -> dict[int, str]:
        return {int(i): str(t) for i, t in self._rows_in("SELECT id, text FROM page_texts WHERE id", ids)}

    def _tokens(self, ids: Sequence[int]) -> dict[int, dict[str, bytes]]:
        """The analysed columns the query's terms are counted in, as UTF-8 (see `_needle`)."""
        columns = sorted({_column(t) for t in self.terms})
        out: dict[int, dict[str, bytes]] = {}
        # read from the FTS table's own content table (`pages_fts_content`, columns c0.. in the
        # order the FTS columns are declared): a plain rowid look-up, a third of the cost of
        # the same read through the virtual table
        blobs = ", ".join(f"CAST(c{_FTS_COLUMNS.index(c)} AS BLOB)" for c in columns)
        select = f"SELECT id, {blobs} FROM pages_fts_content WHERE id"
        for rowid, *values in self._rows_in(select, ids):
            out[int(rowid)] = {c: _spaced(c, v) for c, v in zip(columns, values, strict=True)}
        return out

    def ids(
        self, extra: str, limit: int, offset: int = 0, exclude: Sequence[int] = (), match: bool = True
    ) -> list[int]:
        """Matching pages (with `match` False, pages `extra` and the filters admit: the caller
        checks the match) the searcher may see, newest first."""
        skip = f"AND p.id NOT IN ({', '.join('?' * len(exclude))}) " if exclude else ""
        rows = self._select(
            "pages_fts.rowid",
            extra,
            tail=f"{skip}ORDER BY pages_fts.rowid DESC LIMIT ? OFFSET ?",
            tail_args=(*exclude, limit, offset),
            match=match,
        )
        return [int(r[0]) for r in rows]

    def score(
        self,
        candidates: list[_Candidate],
        weights: list[float],
        tiered: Sequence[str] = (),
        tokens: dict[int, dict[str, bytes]] | None = None,
    ) -> None:
        """BM25 of each page, from its analysed tokens (`_tokens`, read unless given); with
        `tiered`, also each of those terms' impact level on the page as its tier tokens say it
        (the lowest of its bigrams' levels)."""
        if tokens is None:
            tokens = self._tokens([c.id for c in candidates])
        needles = [(_needle(t), _column(t)) for t in self.terms]
        tiers = [(t, [_needle(token) for token in _tier_tokens_of(t)], _column(t)) for t in tiered]
        for c in candidates:
            columns = tokens.get(c.id, {})
            k = saturation(c.length)
            score = 0.0
            for weight, (needle, column) in zip(weights, needles, strict=True):
                tf = columns.get(column, b"").count(needle)
                score += weight * tf * (K1 + 1) / (tf + k)
            c.score = score
            for term, parts, column in tiers:  # the level rises with tf: the fewest sets it
                text = columns.get(column, b"")
                c.levels[term] = _impact_level(min(text.count(part) for part in parts), c.length)

    def weights(self) -> list[float]:
        """Each term's BM25 inverse document frequency (1 for a one-term query: it changes no order)."""
        if len(self.terms) == 1:
            return [1.0]
        pages = self._pages()
        frequencies = [self._document_frequency(t) for t in self.terms]
        return [math.log(1 + (max(pages - df, 0.0) + 0.5) / (df + 0.5)) for df in frequencies]

    def _document_frequency(self, term: str) -> float:
        """Pages holding the term: counted up to DF_SAMPLE, estimated from their spread past it."""
        rows = self.db.execute(
            "SELECT rowid FROM pages_fts WHERE pages_fts MATCH ? ORDER BY rowid DESC LIMIT ?",
            (fts_expression([term]), DF_SAMPLE),
        ).fetchall()
        if len(rows) < DF_SAMPLE:
            return float(len(rows))
        lowest = int(rows[-1][0])
        spread = int(self.db.execute("SELECT count(*) FROM pages WHERE id >= ?", (lowest,)).fetchone()[0])
        return DF_SAMPLE * self._pages() / max(spread, 1)

    def _pages(self) -> int:
        """About how many pages the index holds (the highest row id: holes left by deletions count)."""
        return int(self.db.execute("SELECT coalesce(max(id), 0) FROM pages").fetchone()[0]) or 1

    @staticmethod
    def _order(candidates: list[_Candidate]) -> list[_Candidate]:
        return sorted(candidates, key=lambda c: (-c.score, c.archive_code, c.page))

    def hits(self, offset: int, limit: int, total: int, total_exact: bool) -> list[_Candidate]:
        """Hits offset..offset+limit in rank order (BM25 score, best first), see `_rank`."""
        return self.fill(self._rank(offset, limit, total, total_exact))

    def _rank(self, offset: int, limit: int, total: int, total_exact: bool) -> list[_Candidate]:
        """Hits offset..offset+limit in rank order (BM25 score, best first), without their
        titles and catalogue fields.

        A page none of whose terms reaches impact level `floor` scores below `bound(floor)`;
        so the pages where some term does (found through the tier tokens, highest floor first)
        that score at least that much are the true best, in order (the threshold algorithm).
        When the pages to look at outgrow RANK_BUDGET before enough are certain, the pages
        looked at come first by score (the certain ones lead) and the other matches follow
        newest first."""
        need = offset + limit
        if total == 0 or (total_exact and offset >= total):
            return []
        weights = self.weights()
        budget = self.rank_budget
        if total_exact and total <= budget:  # few enough: score every match
            every = self.load(self.ids("", budget), catalogue=False)
            self.score(every, weights)
            return self._order(every)[offset:need]
        tierable = list(dict.fromkeys(t for t in self.terms if tier_expression(t, MIN_LEVEL)))
        # A term of several bigrams is at level L where all of them are; the pages are asked for
        # by its rarest bigram's tier tokens alone (a few tokens, not every bigram's every
        # level: each token costs a look-up in every segment of the index) and the levels that
        # admit a page are counted on it (`score`), so the pages admitted are the same.
        lead = {t: self._rarest(_tier_tokens_of(t)) for t in tierable}
        exact = all(len(_tier_tokens_of(t)) == 1 for t in tierable)  # every page asked for admitted
        reach = budget if exact else 2 * budget  # pages asked for at most
        head: list[_Candidate] = []  # the pages admitted so far, by score
        seen: set[int] = set()  # the pages asked for so far
        pool: dict[int, _Candidate] = {}  # those that match, scored
        steps = dict.fromkeys(tierable, 0)  # each term's floor, as an index into LEVEL_STEPS
        # the pages the first floors admit; then, each time one term's floor is lowered, only
        # the pages its new levels admit (the others are known already)
        levels = range(LEVEL_STEPS[0], MAX_LEVEL + 1)
        expression = " OR ".join(f"tiers : {_any_of(f'{lead[t]}x{n}' for n in levels)}" for t in tierable)
        # The tier tokens and the filters alone (FTS5 checks every term of an AND at each page
        # one of them proposes, and a common word costs a seek in each segment) where the terms
        # are plain (common CJK characters, Latin letters and digits: FTS5 reads them as we do,
        # so a page matches exactly when every term is counted on it: only those are loaded and
        # scored); the match in the FTS query when that would read too many pages.
        plain = all(_PLAIN.fullmatch(t) for t in self.terms)
        needles = [(_column(t), _needle(t)) for t in self.terms]
        asked = matched = 0  # pages read without the match, and those of them that matched
        while steps:
            room = reach + 1 - len(pool)
            fresh = self.ids(expression, room, exclude=list(seen), match=False) if plain else []
            cheap = plain and len(pool) + len(fresh) <= reach
            if not cheap:
                plain = False  # too many pages without the match: the lower levels hold more
                fresh = self.ids(expression, room, exclude=list(seen))
                if len(pool) + len(fresh) > reach:
                    break
            seen.update(fresh)
            tokens = self._tokens(fresh)
            if cheap:  # the pages where every term is counted
                asked += len(fresh)
                fresh = [i for i in fresh if all(tokens.get(i, {}).get(c, b"").count(n) for c, n in needles)]
                matched += len(fresh)
                # most pages a term is prominent on lack another term: let FTS5 check the match
                plain = asked < PLAIN_SAMPLE or matched >= PLAIN_SHARE * asked
            new = self.load(fresh, catalogue=False)
            self.score(new, weights, () if exact else tierable, tokens)
            pool.update((c.id, c) for c in new)
            floors = {t: LEVEL_STEPS[n] for t, n in steps.items()}
            admitted = list(pool.values())
            if not exact:
                admitted = [c for c in admitted if any(c.levels[t] >= f for t, f in floors.items())]
            if len(admitted) > budget:
                break
            parts = self._bound_parts(weights, floors)
            head = self._order(admitted)
            certain = sum(1 for c in head if c.score >= sum(parts.values()))  # a prefix of head
            if certain >= need:
                return head[offset:need]
            # lower the floor of the term whose next step lowers the bound most for the pages it
            # brings in, while it can go lower
            lower = [t for t in tierable if steps[t] + 1 < len(LEVEL_STEPS)]
            if not lower:
                break
            term = self._next_to_lower(lower, steps, floors, parts, weights, lead)
            steps[term] += 1
            levels = range(LEVEL_STEPS[steps[term]], floors[term])
            expression = f"tiers : {_any_of(f'{lead[term]}x{n}' for n in levels)}"
        # Out of budget before enough were certain: the pages looked at come first, by score
        # (the certain ones lead them), then the other matches newest first (rowid order).
        taken = head[offset:need]
        rest = self.ids("", limit - len(taken), max(0, offset - len(head)), [c.id for c in head])
        tail = {c.id: c for c in self.load(rest, catalogue=False)}
        self.score(list(tail.values()), weights)
        return taken + [tail[i] for i in rest if i in tail]

    def _next_to_lower(
        self,
        lower: list[str],
        steps: dict[str, int],
        floors: dict[str, int],
        parts: dict[str, float],
        weights: list[float],
        lead: dict[str, str],
    ) -> str:
        """The term whose floor to lower next: the most drop in the bound per page its next
        step brings in (counted: a common word's low levels hold thousands of pages, another
        term's high levels often none). Any order finds the same hits; this one reads fewer."""
        if len(lower) == 1:
            return lower[0]

        def gain(term: str) -> float:
            below = LEVEL_STEPS[steps[term] + 1]
            drop = parts[term] - self._bound_parts(weights, {**floors, term: below})[term]
            return drop / (
                ROUND_PAGES + self._tier_pages(lead[term], range(below, floors[term]), LEVEL_COUNT)
            )

        return max(lower, key=gain)

    def _tier_pages(self, token: str, levels: range, cap: int) -> int:
        """Pages where `token` is at one of `levels`, counted up to `cap` (remembered for the
        search)."""
        key = (token, levels.start, levels.stop, cap)
        if key not in self._tier_counts:
            expression = f"tiers : {_any_of(f'{token}x{n}' for n in levels)}"
            self._tier_counts[key] = self.db.execute(
                "SELECT count(*) FROM (SELECT rowid FROM pages_fts WHERE pages_fts MATCH ? LIMIT ?)",
                (expression, cap),
            ).fetchone()[0]
        return self._tier_counts[key]

    def _rarest(self, tokens: list[str]) -> str:
        """The token prominent on the fewest pages (a phrase's own bigram, not the common word
        inside it): its pages at levels 6 to 8 counted up to 300; among the tokens tied at 300,
        the same at levels 10 to 12, then 14 to 16."""
        left = sorted(set(tokens))
        for levels in (range(6, 9), range(10, 13), range(14, 17)):
            if len(left) == 1:
                break
            counts = {token: self._tier_pages(token, levels, 300) for token in left}
            fewest = min(counts.values())
            left = [t for t in left if counts[t] == fewest]
            if fewest < 300:
                break
        return left[0]

    def _bound_parts(self, weights: list[float], floors: dict[str, int]) -> dict[str, float]:
        """Per term, the most it adds to the score of a page where it is below its floor (a term
        without tier tokens, a single character, may add up to its whole weight)."""
        parts: dict[str, float] = {}
        for weight, term in zip(weights, self.terms, strict=True):
            if term in floors:
                ratio = 2 ** (floors[term] / 4)
                part = weight * (K1 + 1) * ratio / (ratio + 1)
            else:
                part = weight * (K1 + 1)
            parts[term] = parts.get(term, 0.0) + part
        return parts


_PLAIN = re.compile(r"[\u4e00-\u9fa5]+|[0-9a-z]+")  # tokens as FTS5's unicode61 reads them


def _column(term: str) -> str:
    """The FTS column a query term is matched in."""
    if term[0].isascii():
        return "words"
    return "unigrams" if len(term) == 1 else "bigrams"


def _spaced(column: str, value: bytes) -> bytes:
    """A column's tokens as `_needle` counts them: CJK columns as stored, the words column with
    each word between two spaces of its own (so that a word repeated back to back counts every
    time and a word never counts inside a longer one)."""
    if column == "words":
        return b" " + value.replace(b" ", b"  ") + b" "
    return value


def _needle(term: str) -> bytes:
    """What `bytes.count` looks for in the `_spaced` column to count the term's occurrences (as
    a phrase of its tokens, occurrences not overlapping). A CJK token (a bigram, or a single
    character in `unigrams`) is never part of a longer one, and UTF-8 never matches inside a
    character, so the bigrams and unigrams are searched as stored."""
    tokens = _tokens_of(term)
    if _column(term) == "words":
        return f" {'  '.join(tokens)} ".encode()
    return " ".join(tokens).encode()


def _tier_tokens_of(term: str) -> list[str]:
    """The tokens that carry a term's tier tokens: the word, or each of its bigrams once."""
    if term[0].isascii():
        return [term]
    return list(dict.fromkeys(_bigrams(term)))


def _tokens_of(term: str) -> list[str]:
    """The tokens a term is matched as, in order (a phrase of bigrams for Chinese)."""
    if term[0].isascii() or len(term) == 1:
        return [term]
    return _bigrams(term)
