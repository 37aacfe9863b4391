"""Retention: the catalogue's start dates (Chinese or English headers, CSV and XLSX), due dates per
class, items without a start date reported and never due, appraisal decisions moving due dates."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook

from pipeline.catalog import read_catalogue
from pipeline.models import CatalogueEntry
from pipeline.retention import add_years, due_of, find_class
from pipeline.settings import RetentionSettings, Settings
from pipeline.store import Store

CLASSES = RetentionSettings()


def test_the_catalogue_reads_both_dates_with_chinese_or_english_headers(tmp_path: Path) -> None:
    path = tmp_path / "cat.csv"
    path.write_bytes(
        (
            "档号,页数,保管期限,合同终止日期,形成日期\r\n"
            "A-1,2,合同终止后10年,2015-06-30,\r\n"
            "A-2,2,形成之日起6年,,2014年3月1日\r\n"
            "A-3,2,合同终止后6年,2015-13-01,\r\n"
            "A-4,2,合同终止后6年,2015/2/29,\r\n"
            "A-5,2,永久,,20100105\r\n"
        ).encode("gbk")
    )
    load = read_catalogue(path)
    entries = {e.archive_code: e for e in load.entries}
    assert entries["A-1"].contract_end_date == "2015-06-30" and entries["A-1"].creation_date == ""
    assert entries["A-2"].creation_date == "2014-03-01"
    assert entries["A-5"].creation_date == "2010-01-05"
    problems = {p.row: p.reason for p in load.problems}
    assert set(problems) == {4, 5}
    assert "合同终止日期" in problems[4] and "'2015-13-01' is not a date" in problems[4]
    assert "'2015/2/29'" in problems[5]
    # entries without dates keep their old shape (records and input keys of older items unchanged)
    assert "creation_date" not in entries["A-1"].to_dict() and "contract_end_date" in entries["A-1"].to_dict()


def test_english_headers_and_xlsx_date_cells(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Archive code", "Pages", "Retention", "Contract end date", "Creation date"])
    sheet.append(["B-1", 3, "D6", datetime(2016, 2, 29), None])
    sheet.append(["B-2", 3, "D6", "not a date", None])
    path = tmp_path / "cat.xlsx"
    book.save(path)
    load = read_catalogue(path)
    assert [e.contract_end_date for e in load.entries] == ["2016-02-29"]
    assert load.problems[0].row == 3 and "contract end date" in load.problems[0].reason


def _entry(retention: str, contract_end: str = "", created: str = "") -> CatalogueEntry:
    return CatalogueEntry(
        "C-1", 1, retention=retention, contract_end_date=contract_end, creation_date=created
    )


@pytest.mark.parametrize(
    ("retention", "contract_end", "created", "due"),
    [
        ("合同终止后10年", "2013-05-01", "2001-01-01", date(2023, 5, 1)),
        ("D10", "2013-05-01", "", date(2023, 5, 1)),
        ("合同终止后6年", "2015-06-30", "2001-01-01", date(2021, 6, 30)),
        ("形成之日起6年", "2030-01-01", "2015-11-03", date(2021, 11, 3)),
        ("文件形成后6年", "", "2016-02-29", date(2022, 2, 28)),  # 29 February: due on the 28th
    ],
)
def test_each_class_counts_from_its_own_date(
    retention: str, contract_end: str, created: str, due: date
) -> None:
    found = due_of(_entry(retention, contract_end, created), CLASSES)
    assert found.due == due and not found.problem and not found.permanent
    assert found.is_due_by(due) and not found.is_due_by(date(due.year - 1, 12, 31))


def test_permanent_items_and_missing_dates_are_never_due() -> None:
    permanent = due_of(_entry("永久", "2000-01-01", "2000-01-01"), CLASSES)
    assert permanent.permanent and permanent.due is None and not permanent.is_due_by(date(9999, 12, 31))
    missing = due_of(_entry("合同终止后10年", "", "2000-01-01"), CLASSES)
    assert missing.due is None and "合同终止日期" in missing.problem
    assert not missing.is_due_by(date(9999, 12, 31))
    unknown = due_of(_entry("30年", "2000-01-01"), CLASSES)
    assert unknown.due is None and "names no class" in unknown.problem
    assert due_of(_entry(""), CLASSES).problem.startswith("no 保管期限")
    assert find_class(" ｄ10 ", CLASSES) is not None  # width and case folded
    assert add_years(date(2020, 2, 29), 1) == date(2021, 2, 28)


def test_appraisal_decisions_move_the_due_date() -> None:
    entry = _entry("合同终止后6年", "2015-06-30")
    approved = datetime(2024, 3, 1, tzinfo=UTC)
    kept = due_of(entry, CLASSES, ("keep", 5, approved))
    assert kept.due == date(2029, 3, 1) and "5 more years" in kept.extended
    forever = due_of(entry, CLASSES, ("permanent", None, approved))
    assert forever.permanent and forever.due is None


def test_retention_classes_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overlay = tmp_path / "office.toml"
    overlay.write_text(
        "[retention]\nclasses = [{ name = '30年', counts_from = 'created', years = 30 }]\n", encoding="utf-8"
    )
    monkeypatch.setenv("CAPTURE_CONFIG", str(overlay))
    from pipeline.settings import load_settings

    settings = load_settings()
    assert due_of(_entry("30年", "", "2000-01-01"), settings.retention).due == date(2030, 1, 1)
    overlay.write_text(
        "[retention]\nclasses = [{ name = 'x', counts_from = 'created', years = 1, aliases = ['X'] }]\n",
        encoding="utf-8",
    )
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="used twice"):
        load_settings()


def test_the_catalogue_dates_survive_the_state_store(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.import_catalogue([_entry("合同终止后6年", "2015-06-30", "2014-01-01")], "a.csv")
        entry = store.catalogue_entry("C-1")
        assert entry is not None and (entry.contract_end_date, entry.creation_date) == (
            "2015-06-30",
            "2014-01-01",
        )
        store.import_catalogue(
            [_entry("合同终止后6年")], "b.csv"
        )  # a re-import without the dates clears them
        entry = store.catalogue_entry("C-1")
        assert entry is not None and (entry.contract_end_date, entry.creation_date) == ("", "")
    finally:
        store.close()
    assert Settings().retention.classes[0].name == "合同终止后10年"
