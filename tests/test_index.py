from __future__ import annotations

from pathlib import Path

from pipeline.index.analysis import analyse, fold, join_lines
from pipeline.index.base import IndexItem, IndexPage, SearchQuery
from pipeline.index.sqlite import SqliteIndex

TRAD = IndexItem(
    "BX01-2014-LP-D6-0003",
    "理赔申请书",
    {"year": "2014", "stage": "理赔"},
    (IndexPage(1, "理賠申請書 醫療費用發票原件 保險合同號 P2014-008910"),),
)
SIMP = IndexItem(
    "BX01-2012-CB-D10-0001",
    "人身保险投保单",
    {"year": "2012", "stage": "承保"},
    (IndexPage(1, "养老保险待遇核定表"), IndexPage(2, "医疗费用报销 policy change")),
)


def _index(tmp_path: Path) -> SqliteIndex:
    index = SqliteIndex(tmp_path / "index.sqlite")
    index.index_item(TRAD)
    index.index_item(SIMP)
    return index


def _pages(index: SqliteIndex, text: str, **kw) -> set[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return {(h.archive_code, h.page) for h in index.search(SearchQuery(text, **kw)).hits}


def test_analysis_folds_scripts_and_widths() -> None:
    assert fold("醫療費用ＡＢＣ") == "医疗费用abc"
    tokens = analyse("保险合同 P2012")
    assert tokens.bigrams == ["保险", "险合", "合同"] and tokens.words == ["p2012"]
    assert join_lines(["养老保", "险待遇", "P1", "号"]) == "养老保险待遇 P1 号"


def test_simplified_query_finds_traditional_page_and_back(tmp_path: Path) -> None:
    index = _index(tmp_path)
    assert _pages(index, "医疗费用") == {("BX01-2014-LP-D6-0003", 1), ("BX01-2012-CB-D10-0001", 2)}
    assert _pages(index, "養老保險") == {("BX01-2012-CB-D10-0001", 1)}


def test_any_word_of_two_or_more_characters_on_the_page_is_found(tmp_path: Path) -> None:
    index = _index(tmp_path)
    text = "养老保险待遇核定表"
    for size in (2, 3, 4):
        for start in range(len(text) - size + 1):
            assert ("BX01-2012-CB-D10-0001", 1) in _pages(index, text[start : start + size])
    assert _pages(index, "保险待核") == set()  # not a phrase on the page


def test_policy_numbers_and_latin_words_match_as_words(tmp_path: Path) -> None:
    index = _index(tmp_path)
    assert _pages(index, "P2014-008910") == {("BX01-2014-LP-D6-0003", 1)}
    assert _pages(index, "POLICY") == {("BX01-2012-CB-D10-0001", 2)}
    assert _pages(index, "polic") == set()


def test_filters_and_snippet_marks(tmp_path: Path) -> None:
    index = _index(tmp_path)
    assert _pages(index, "医疗费用", year="2014") == {("BX01-2014-LP-D6-0003", 1)}
    assert _pages(index, "医疗费用", stage="承保") == {("BX01-2012-CB-D10-0001", 2)}
    assert _pages(index, "医疗费用", archive_code="nope") == set()
    hit = index.search(SearchQuery("医疗费用", year="2014")).hits[0]
    start, end = hit.highlights[0]
    assert hit.snippet[start:end] == "醫療費用"


def test_reindexing_an_item_never_duplicates_rows(tmp_path: Path) -> None:
    index = _index(tmp_path)
    for _ in range(3):
        index.index_item(SIMP)
    assert index.count_pages() == 3
    assert index.count_pages("BX01-2012-CB-D10-0001") == 2


def test_hidden_items_are_not_found_by_searchers(tmp_path: Path) -> None:
    index = _index(tmp_path)
    hidden = IndexItem("H-1", "held for QA", {}, (IndexPage(1, "待审核的理赔材料"),), visible=False)
    index.index_item(hidden)
    assert _pages(index, "理赔材料") == set()
    assert _pages(index, "理赔材料", include_hidden=True) == {("H-1", 1)}


def test_query_syntax_is_never_passed_through(tmp_path: Path) -> None:
    index = _index(tmp_path)
    for hostile in ['"', "NEAR(", "* OR 1", "bigrams:保险", ")))", "'; DROP TABLE pages; --", ""]:
        index.search(SearchQuery(hostile))
    assert index.count_pages() == 3
