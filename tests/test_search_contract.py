"""One contract, every backend: embedded SQLite, osmem-server (Elasticsearch API), and a live
cluster when CAPTURE_ES_URL is set. The same items, the same queries, the same answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.errors import QueryError
from pipeline.index.analysis import analyse, fold, join_lines
from pipeline.index.base import IndexItem, IndexPage, SearchBackend, SearchQuery, open_backend
from pipeline.security import FULL_ACCESS, Access

TRAD = IndexItem(
    "BX01-2014-LP-D6-0003",
    "理赔申请书",
    {"year": "2014", "stage": "理赔", "security_level": "秘密", "box": "B002", "retention": "合同终止后6年"},
    (IndexPage(1, "理賠申請書 醫療費用發票原件 保險合同號 P2014-008910"),),
)
SIMP = IndexItem(
    "BX01-2012-CB-D10-0001",
    "人身保险投保单",
    {"year": "2012", "stage": "承保", "security_level": "内部", "box": "B001", "retention": "合同终止后10年"},
    (IndexPage(1, "养老保险待遇核定表"), IndexPage(2, "医疗费用报销 policy change")),
)
OTHER_FONDS = IndexItem(
    "SB02-2015-CB-D30-0004",
    "社会保险参保登记表",
    {"year": "2015", "stage": "参保", "security_level": "公开", "box": "B003"},
    (IndexPage(1, "社会保险参保登记 医疗费用"),),
)
ITEMS = (TRAD, SIMP, OTHER_FONDS)
CLERK = Access(clearance=1)  # 内部: may not see TRAD (秘密)


@pytest.fixture
def index(backend_settings) -> Iterator[SearchBackend]:  # type: ignore[no-untyped-def]
    backend = open_backend(backend_settings)
    for item in ITEMS:
        backend.index_item(item)
    yield backend
    backend.close()


def pages(index: SearchBackend, text: str, *args, **kw) -> set[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return {(h.archive_code, h.page) for h in index.search(SearchQuery(text, *args, **kw)).hits}


def test_analysis_folds_scripts_and_widths() -> None:
    assert fold("醫療費用ＡＢＣ") == "医疗费用abc"
    tokens = analyse("保险合同 P2012")
    assert tokens.bigrams == ["保险", "险合", "合同"] and tokens.words == ["p2012"]
    assert join_lines(["养老保", "险待遇", "P1", "号"]) == "养老保险待遇 P1 号"


def test_simplified_query_finds_traditional_page_and_back(index: SearchBackend) -> None:
    assert pages(index, "医疗费用") == {
        ("BX01-2014-LP-D6-0003", 1),
        ("BX01-2012-CB-D10-0001", 2),
        ("SB02-2015-CB-D30-0004", 1),
    }
    assert pages(index, "養老保險") == {("BX01-2012-CB-D10-0001", 1)}


def test_any_word_of_one_to_four_characters_on_the_page_is_found(index: SearchBackend) -> None:
    text = "养老保险待遇核定表"
    for size in (1, 2, 3, 4):
        for start in range(len(text) - size + 1):
            assert ("BX01-2012-CB-D10-0001", 1) in pages(index, text[start : start + size])
    assert pages(index, "保险待核") == set()  # the characters are there, the phrase is not
    assert pages(index, "核定 养老") == {("BX01-2012-CB-D10-0001", 1)}  # every word, any order


def test_policy_numbers_and_latin_words_match_as_words(index: SearchBackend) -> None:
    assert pages(index, "P2014-008910") == {("BX01-2014-LP-D6-0003", 1)}
    assert pages(index, "ＰＯＬＩＣＹ") == {("BX01-2012-CB-D10-0001", 2)}
    assert pages(index, "polic") == set()


def test_filters_facets_and_snippet_marks(index: SearchBackend) -> None:
    assert pages(index, "医疗费用", {"year": "2014"}) == {("BX01-2014-LP-D6-0003", 1)}
    assert pages(index, "医疗费用", {"stage": "承保"}) == {("BX01-2012-CB-D10-0001", 2)}
    assert pages(index, "医疗费用", {"box": "B003", "retention": ""}) == {("SB02-2015-CB-D30-0004", 1)}
    assert pages(index, "医疗费用", {"archive_code": "nope"}) == set()
    result = index.search(SearchQuery("医疗费用", {"year": "2014"}, facets=True))
    hit = result.hits[0]
    start, end = hit.highlights[0]
    assert hit.snippet[start:end] == "醫療費用" and hit.page == 1 and hit.title == "理赔申请书"
    assert hit.fields["box"] == "B002"
    everything = index.search(SearchQuery("医疗费用", facets=True))
    assert everything.total == 3
    assert dict(everything.facets["year"]) == {"2012": 1, "2014": 1, "2015": 1}
    assert dict(everything.facets["security_level"]) == {"秘密": 1, "内部": 1, "公开": 1}
    with pytest.raises(QueryError, match="unknown filter"):
        index.search(SearchQuery("医疗费用", {"policyholder; DROP": "x"}))


def test_reindexing_replaces_pages_and_never_duplicates(index: SearchBackend) -> None:
    for _ in range(3):
        index.index_item(SIMP)
    assert index.count_pages() == 4 and index.count_pages("BX01-2012-CB-D10-0001") == 2
    shrunk = IndexItem(SIMP.archive_code, SIMP.title, SIMP.fields, (IndexPage(2, "新的第二页"),))
    index.index_item(shrunk)
    assert index.count_pages("BX01-2012-CB-D10-0001") == 1
    assert pages(index, "养老保险") == set() and pages(index, "第二页") == {("BX01-2012-CB-D10-0001", 2)}
    index.delete_item(SIMP.archive_code)
    assert index.count_pages() == 2


def test_items_held_for_qa_are_invisible_until_shown(index: SearchBackend) -> None:
    held = IndexItem(
        "BX01-2016-LP-D6-0009", "held", {"security_level": "公开"}, (IndexPage(1, "待审核的理赔材料"),), False
    )
    index.index_item(held)
    assert pages(index, "理赔材料") == set()
    assert pages(index, "理赔材料", access=Access(see_held=True)) == {("BX01-2016-LP-D6-0009", 1)}
    index.set_visible(held.archive_code, True)
    assert pages(index, "理赔材料") == {("BX01-2016-LP-D6-0009", 1)}
    index.set_visible(held.archive_code, False)
    assert pages(index, "理赔材料") == set()


def test_no_search_parameter_reaches_an_item_above_the_clearance(index: SearchBackend) -> None:
    secret = ("BX01-2014-LP-D6-0003", 1)
    assert secret in pages(index, "医疗费用", access=Access(clearance=2))
    attempts: list[SearchQuery] = [
        SearchQuery("医疗费用", access=CLERK),
        SearchQuery("理赔申请", access=CLERK),
        SearchQuery("P2014-008910", access=CLERK),
        SearchQuery("医疗费用", {"security_level": "秘密"}, CLERK),
        SearchQuery("医疗费用", {"archive_code": "BX01-2014-LP-D6-0003"}, CLERK),
        SearchQuery("医疗费用", {"year": "2014", "stage": "理赔", "box": "B002"}, CLERK),
        SearchQuery("医疗费用", access=CLERK, offset=2, limit=1),
        SearchQuery("医疗费用", access=Access(clearance=1, see_held=True)),
    ]
    for query in attempts:
        result = index.search(query)
        assert secret not in {(h.archive_code, h.page) for h in result.hits}, query
    walked = index.search(SearchQuery("医疗费用", access=CLERK, limit=1, facets=True))
    assert walked.total == 2 and "秘密" not in dict(walked.facets["security_level"])
    assert "2014" not in dict(walked.facets["year"])  # facet counts do not leak it either
    seen = {(h.archive_code, h.page) for h in walked.hits}
    while walked.next_cursor:
        walked = index.search(SearchQuery("医疗费用", access=CLERK, limit=1, cursor=walked.next_cursor))
        seen |= {(h.archive_code, h.page) for h in walked.hits}
    assert secret not in seen and len(seen) == 2


def test_fonds_restriction_is_part_of_the_query(index: SearchBackend) -> None:
    social = Access(clearance=4, fonds=("SB02",))
    assert pages(index, "医疗费用", access=social) == {("SB02-2015-CB-D30-0004", 1)}
    assert pages(index, "医疗费用", {"archive_code": "BX01-2012-CB-D10-0001"}, social) == set()


def test_offset_and_cursor_paging_visit_every_hit_once(index: SearchBackend) -> None:
    every = pages(index, "医疗费用", access=FULL_ACCESS)
    by_offset = [pages(index, "医疗费用", offset=i, limit=1, access=FULL_ACCESS) for i in range(3)]
    assert set().union(*by_offset) == every and all(len(p) == 1 for p in by_offset)
    result = index.search(SearchQuery("医疗费用", access=FULL_ACCESS, limit=2))
    seen = [(h.archive_code, h.page) for h in result.hits]
    assert result.next_cursor
    result = index.search(SearchQuery("医疗费用", access=FULL_ACCESS, limit=2, cursor=result.next_cursor))
    seen += [(h.archive_code, h.page) for h in result.hits]
    assert sorted(seen) == sorted(every) and result.next_cursor is None
    with pytest.raises(QueryError, match="cursor"):
        index.search(SearchQuery("医疗费用", cursor="not-a-cursor"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no searchable words"),
        ("\"'()*:^~", "no searchable words"),
        ("保" * 201, "at most 200"),
        (" ".join(["保险"] * 17), "at most 16"),
        ("保险\x00\x1b", "not valid text"),
        ("bad \ufffd bytes", "not valid text"),
    ],
)
def test_unusable_queries_are_refused_with_a_reason(index: SearchBackend, text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        index.search(SearchQuery(text))


def test_query_syntax_is_text_not_syntax(index: SearchBackend) -> None:
    for hostile in [
        '保险" OR "1',
        "NEAR(保险",
        "* OR 1",
        "bigrams:保险",
        "text:医疗 AND _id:*",
        "'; DROP --",
    ]:
        index.search(SearchQuery(hostile))  # no error, no injection
    assert pages(index, 'text:医疗费用 OR "x"') == set()  # the words "text", "or", "x" are required too
    assert index.count_pages() == 4


def test_rebuild_switches_searchers_to_the_new_index_at_once(index: SearchBackend) -> None:
    assert index.rebuild(iter([SIMP])) == 2
    assert index.count_pages() == 2
    assert pages(index, "医疗费用", access=FULL_ACCESS) == {("BX01-2012-CB-D10-0001", 2)}
    index.index_item(TRAD)  # writes go on through the same alias / file after a rebuild
    assert index.count_pages() == 3


def test_past_the_counting_cap_the_total_reads_at_least_and_the_hits_stay_exact(index: SearchBackend) -> None:
    index.total_cap = 2  # type: ignore[attr-defined]  # both backends take it (default 10,000)
    result = index.search(SearchQuery("医疗费用", access=FULL_ACCESS, limit=2, facets=True))
    assert (result.total, result.total_exact, result.total_text) == (2, False, "2+")
    assert result.to_dict()["total_exact"] is False and result.to_dict()["total_text"] == "2+"
    assert result.next_cursor  # paging goes on past the cap to the last match, and stops there
    rest = index.search(SearchQuery("医疗费用", access=FULL_ACCESS, limit=2, cursor=result.next_cursor))
    seen = {(h.archive_code, h.page) for h in result.hits + rest.hits}
    assert len(seen) == 3 and rest.next_cursor is None
    clerk = index.search(SearchQuery("医疗费用", access=CLERK, limit=5, facets=True))
    assert (clerk.total, clerk.total_exact, clerk.total_text) == (2, True, "2")  # what the clerk may see
    assert ("BX01-2014-LP-D6-0003", 1) not in {(h.archive_code, h.page) for h in clerk.hits}
    assert "秘密" not in dict(clerk.facets["security_level"])
