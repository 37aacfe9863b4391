"""The embedded index at scale, in small: the total capped past a threshold, the best pages first
without scoring every match (impact tiers), and access kept exact on that path.

The index takes its counting cap and its ranking budget as arguments, so a few hundred pages
exercise what a million pages do with the defaults (10,000 and 2,000)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.index.base import IndexItem, IndexPage, SearchQuery
from pipeline.index.sqlite import SqliteIndex, impact_level
from pipeline.security import Access

FILLER = "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥"


def _page(rng: random.Random, counts: dict[str, int], length: int) -> str:
    """A page of `length` filler characters with each word inserted `count` times, separated."""
    parts = [w for w, n in counts.items() for _ in range(n)]
    parts += ["".join(rng.choice(FILLER) for _ in range(rng.randint(3, 9))) for _ in range(length // 6)]
    rng.shuffle(parts)
    return "，".join(parts)


def _build(path: Path, pages: list[tuple[str, dict[str, str], bool]], **kw: int) -> SqliteIndex:
    index = SqliteIndex(path, **kw)
    for n, (text, fields, visible) in enumerate(pages):
        code = f"BX01-2020-LP-D10-{n:04d}"
        index.index_item(IndexItem(code, "t", fields, (IndexPage(1, text),), visible))
    return index


def _exhaustive(path: Path, text: str, access: Access, limit: int) -> list[tuple[str, float]]:
    """The same query with a budget and cap over every match: every match scored."""
    index = SqliteIndex(path, total_cap=10**6, rank_budget=10**6)
    try:
        return [
            (h.archive_code, h.score)
            for h in index.search(SearchQuery(text, access=access, limit=limit)).hits
        ]
    finally:
        index.close()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """400 pages of varied length; 保险 on most, 理赔 on some, 养老保险 on a few, each a
    varying number of times (a long tail, as in a real archive)."""
    rng = random.Random(3)
    pages = []
    for _ in range(400):
        counts = {"保险": rng.choice([0, 1, 1, 1, 2, 2, 3, 5, 8, 13])}
        if rng.random() < 0.4:
            counts["理赔"] = rng.choice([1, 1, 2, 4, 9])
        if rng.random() < 0.2:
            counts["养老保险"] = rng.choice([1, 2, 6])
        level = rng.choice(["公开", "内部", "秘密", "机密"])
        pages.append((_page(rng, counts, rng.choice([30, 120, 400, 900])), {"security_level": level}, True))
    _build(tmp_path / "index.sqlite", pages).close()
    return tmp_path / "index.sqlite"


@pytest.mark.parametrize("text", ["保险", "理赔", "保险 理赔", "养老保险", "养老保险 理赔"])
def test_the_best_pages_come_first_without_scoring_every_match(corpus: Path, text: str) -> None:
    index = SqliteIndex(corpus, total_cap=50, rank_budget=40)
    try:
        for access in (Access(), Access(clearance=1)):
            result = index.search(SearchQuery(text, access=access, limit=10))
            expected = _exhaustive(corpus, text, access, 10)
            assert len(expected) == 10 and expected[0][1] > expected[-1][1]  # a real ranking to match
            assert [(h.archive_code, round(h.score, 6)) for h in result.hits] == [
                (code, round(score, 6)) for code, score in expected
            ], (text, access)
    finally:
        index.close()


def test_the_best_pages_come_first_when_a_words_prominent_pages_lack_the_other(tmp_path: Path) -> None:
    """保险 prominent on hundreds of pages without 理赔 and the other way round: the ranking reads
    such pages, finds most do not match, and lets FTS5 check the match for the rest; the hits
    stay the exhaustive ones."""
    rng = random.Random(5)
    pages = [
        (_page(rng, {w: rng.choice([6, 8, 13])}, 120), {}, True) for w in ("保险", "理赔") for _ in range(200)
    ]
    pages += [
        (_page(rng, {"保险": rng.choice([2, 3, 5, 8]), "理赔": rng.choice([2, 3, 5, 8])}, 120), {}, True)
        for _ in range(60)
    ]
    rng.shuffle(pages)
    path = tmp_path / "index.sqlite"
    _build(path, pages).close()
    index = SqliteIndex(path, total_cap=20, rank_budget=200)
    try:
        result = index.search(SearchQuery("保险 理赔", access=Access(), limit=10))
        expected = _exhaustive(path, "保险 理赔", Access(), 10)
        assert expected[0][1] > expected[-1][1]
        assert [(h.archive_code, round(h.score, 6)) for h in result.hits] == [
            (code, round(score, 6)) for code, score in expected
        ]
    finally:
        index.close()


def test_paging_past_the_ranked_head_visits_every_page_once(corpus: Path) -> None:
    index = SqliteIndex(corpus, total_cap=30, rank_budget=20)
    try:
        every = SqliteIndex(corpus, total_cap=10**6, rank_budget=10**6)
        allowed = every.search(SearchQuery("保险", access=Access(clearance=1), limit=100)).total
        every.close()
        first = index.search(SearchQuery("保险", access=Access(clearance=1), limit=25))
        assert (first.total, first.total_exact, first.total_text) == (30, False, "30+")
        seen = [h.archive_code for h in first.hits]
        cursor = first.next_cursor
        while cursor:
            more = index.search(SearchQuery("保险", access=Access(clearance=1), limit=25, cursor=cursor))
            seen += [h.archive_code for h in more.hits]
            cursor = more.next_cursor
        assert len(seen) == len(set(seen)) == allowed > 100
        offsets = [
            h.archive_code
            for start in range(0, 100, 20)
            for h in index.search(
                SearchQuery("保险", access=Access(clearance=1), limit=20, offset=start)
            ).hits
        ]
        assert offsets == seen[:100]  # offsets and the cursor walk agree on one order
    finally:
        index.close()


def test_hidden_and_forbidden_pages_never_surface_on_the_fast_path(tmp_path: Path) -> None:
    rng = random.Random(5)
    pages = [(_page(rng, {"保险": 1}, 120), {"security_level": "公开"}, True) for _ in range(60)]
    pages[7] = (_page(rng, {"保险": 40}, 120), {"security_level": "机密"}, True)  # the best page, too high
    pages[9] = (_page(rng, {"保险": 30}, 120), {"security_level": "公开"}, False)  # next best, held for QA
    pages[11] = (_page(rng, {"保险": 20}, 120), {"security_level": "公开"}, True)
    index = _build(tmp_path / "index.sqlite", pages, total_cap=10, rank_budget=5)
    try:
        clerk = index.search(SearchQuery("保险", access=Access(clearance=1), limit=3, facets=True))
        assert clerk.hits[0].archive_code.endswith("0011")
        assert not {"BX01-2020-LP-D10-0007", "BX01-2020-LP-D10-0009"} & {h.archive_code for h in clerk.hits}
        assert "机密" not in dict(clerk.facets["security_level"])
        boss = index.search(SearchQuery("保险", access=Access(clearance=4, see_held=True), limit=3))
        assert [h.archive_code[-4:] for h in boss.hits] == ["0007", "0009", "0011"]
        index.set_visible("BX01-2020-LP-D10-0009", True)  # QA lets it through: found at once
        assert (
            index.search(SearchQuery("保险", access=Access(clearance=1), limit=1)).hits[0].archive_code[-4:]
            == "0009"
        )
    finally:
        index.close()


def test_impact_levels_rise_with_occurrences_and_fall_with_length() -> None:
    assert impact_level(1, 400) == 0  # once on an ordinary page: no tier token
    assert impact_level(2, 400) < impact_level(4, 400) < impact_level(16, 400)
    assert impact_level(4, 2000) < impact_level(4, 400) < impact_level(4, 40)
    assert impact_level(10**6, 1) == 23


def test_the_api_and_the_search_page_say_at_least_past_the_cap(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from pipeline.service import ArchiveService
    from pipeline.store import Store
    from pipeline.users import make_token, save_user
    from pipeline.web.app import LOGIN_COOKIE, create_web_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "home")
    rng = random.Random(7)
    pages = [
        (_page(rng, {"保险": 1 + n % 3}, 60), {"security_level": "内部", "year": "2012"}, True)
        for n in range(5)
    ]
    _build(settings.index_path, pages).close()
    store = Store(settings.state_url)
    save_user(store, "clerk", role="searcher", clearance="内部", fonds=[], password="correct horse 8")
    token = make_token(store, "clerk", "tests")
    store.close()
    service = ArchiveService(settings)
    service.index.total_cap = 3  # type: ignore[attr-defined]
    with TestClient(create_web_app(settings, service)) as client:
        found = client.get("/api/search", params={"q": "保险"}, headers={"Authorization": f"Bearer {token}"})
        body = found.json()
        assert (body["total"], body["total_exact"], body["total_text"]) == (3, False, "3+")
        assert body["facets_exact"] is False and len(body["hits"]) == 5
        client.get("/login")
        nonce = client.cookies.get(LOGIN_COOKIE)
        client.post("/login", data={"username": "clerk", "password": "correct horse 8", "csrf": nonce})
        page = client.get("/search", params={"q": "保险"})
        assert page.status_code == 200 and page.text.count('<li class="hit">') == 5
        assert "3+ matching pages" in page.text or "共 3+ 页命中" in page.text
        assert "counts over the first 3 matching pages" in page.text or "按前 3 个命中页统计" in page.text
    store = Store(settings.state_url)
    try:
        assert store.audit_log("search")[-1].details["hits_exact"] is False  # the audit says so too
    finally:
        store.close()
