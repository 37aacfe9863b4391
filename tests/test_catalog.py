from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import Workbook

from pipeline.catalog import read_catalogue
from pipeline.errors import CatalogueError

HEADER_ZH = "档号,题名,保险合同号,投保人,作业流水号,页数,年度,业务环节,保管期限,密级,盒号,备注\r\n"
ROWS = (
    "BX01-2012-CB-D10-0001,投保单,P1,王建国,ZY1,3,2012,承保,10年,内部,B001,\r\n"
    ",缺档号,P2,李四,ZY2,2,2012,承保,10年,内部,B001,\r\n"
    "BX01-2012-CB-D10-0003,页数错,P3,赵六,ZY3,三页,2012,承保,10年,内部,B001,\r\n"
    "BX01-2012-CB-D10-0001,重复,P4,钱七,ZY4,1,2012,承保,10年,内部,B001,\r\n"
    "BX01-2012-CB-D10-0005,繁體題名,P5,陳志明,ZY5,4,2013,理赔,6年,秘密,B002,備註\r\n"
)


def _check(load):  # type: ignore[no-untyped-def]
    assert [e.archive_code for e in load.entries] == ["BX01-2012-CB-D10-0001", "BX01-2012-CB-D10-0005"]
    first = load.entries[0]
    assert (first.policyholder, first.page_count, first.stage, first.title) == ("王建国", 3, "承保", "投保单")
    assert load.entries[1].policyholder == "陳志明"
    problems = {p.row: p.reason for p in load.problems}
    assert set(problems) == {3, 4, 5}
    assert "missing archive code" in problems[3]
    assert "三页" in problems[4] and "whole number" in problems[4]
    assert "duplicate" in problems[5] and "row 2" in problems[5]


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-8", "utf-8-sig"])
def test_csv_in_each_encoding_loads_good_rows_and_reports_bad_ones(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "catalogue.csv"
    path.write_bytes((HEADER_ZH + ROWS).encode(encoding))
    _check(read_catalogue(path))


def test_english_headers_and_xlsx(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(
        [
            "Archive Code",
            "Title",
            "Policy Number",
            "Policyholder",
            "Job Serial Number",
            "Page Count",
            "Year",
            "Business Stage",
            "Retention",
            "Security Level",
            "Box",
            "Remarks",
        ]
    )
    for line in ROWS.strip().split("\r\n"):
        cells = line.split(",")
        cells[5] = int(cells[5]) if cells[5].isdigit() else cells[5]
        sheet.append([c if c != "" else None for c in cells])
    path = tmp_path / "catalogue.xlsx"
    book.save(path)
    _check(read_catalogue(path))


def test_sample_catalogue_is_gbk_and_loads(samples_module) -> None:  # type: ignore[no-untyped-def]
    path = Path(samples_module.HERE) / "catalogue.csv"
    data = path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    load = read_catalogue(path)
    assert len(load.entries) == 4 and not load.problems


def test_unreadable_catalogues_raise_clear_errors(tmp_path: Path) -> None:
    missing_header = tmp_path / "bad.csv"
    missing_header.write_text("name,value\r\nx,1\r\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="档号"):
        read_catalogue(missing_header)
    with pytest.raises(CatalogueError, match="no such"):
        read_catalogue(tmp_path / "nope.csv")
    other = tmp_path / "catalogue.doc"
    other.write_bytes(b"x")
    with pytest.raises(CatalogueError, match="unsupported"):
        read_catalogue(other)
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"not a zip")
    with pytest.raises(CatalogueError, match="XLSX"):
        read_catalogue(broken)


def test_archive_codes_that_could_escape_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("档号,页数\r\n../etc,1\r\nA/B,1\r\nOK-1,1\r\n", encoding="utf-8")
    load = read_catalogue(path)
    assert [e.archive_code for e in load.entries] == ["OK-1"]
    assert {p.row for p in load.problems} == {2, 3}
