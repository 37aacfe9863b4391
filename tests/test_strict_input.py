"""Strict input at every boundary: archive codes, catalogue and manifest tables, 密级 cells.

Everything here runs the real readers on real files (CSV bytes, XLSX workbooks, folders).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openpyxl import Workbook

from pipeline import watch
from pipeline.catalog import (
    MAX_CELL_CHARS,
    MAX_FILE_BYTES,
    MAX_PAGE_COUNT,
    parse_rows,
    read_catalogue,
)
from pipeline.errors import CatalogueError, UnsafeNameError
from pipeline.intake import read_layout, validate_archive_code
from pipeline.security import HIGHEST, LEVELS, rank

# ------------------------------------------------------------------ archive codes and names

BAD_ENDINGS = ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\x00", "\x1b[31m", "\t", "\x0b"]


@pytest.mark.parametrize("ending", BAD_ENDINGS)
def test_archive_codes_are_matched_whole(ending: str) -> None:
    with pytest.raises(UnsafeNameError, match="control character or line break"):
        validate_archive_code("A-1" + ending)
    with pytest.raises(UnsafeNameError):
        validate_archive_code(ending + "A-1")
    assert validate_archive_code("BX01-2012-CB-D10-0001") == "BX01-2012-CB-D10-0001"


def test_archive_code_messages_show_the_code_escaped() -> None:
    with pytest.raises(UnsafeNameError) as caught:
        validate_archive_code("A-1\n")
    assert "'A-1\\n'" in str(caught.value) and "U+000A" in str(caught.value)
    for other in ("A 1", "A-1\u200b", "Ａ-1", "-A", ".A", "A" * 101, "A/1", "A..1"):
        with pytest.raises(UnsafeNameError):
            validate_archive_code(other)


@pytest.mark.parametrize("ending", ["\n", "\r", "\u2028", "\x1b"])
def test_batch_names_with_a_line_break_or_control_character_are_unsafe(ending: str) -> None:
    reason = watch.unsafe_name_reason("scan-2024-03" + ending)
    assert reason is not None and "control character or line break" in reason
    assert watch.unsafe_name_reason("scan 2024-03") is None
    assert watch.unsafe_name_reason("a..b") is not None


def test_read_layout_rejects_an_item_folder_whose_name_ends_in_a_newline(tmp_path: Path) -> None:
    (tmp_path / "A-1\n").mkdir()
    (tmp_path / "A-2").mkdir()
    layout = read_layout(tmp_path)
    assert [code for code, _ in layout.items] == ["A-2"]
    assert [r.name for r in layout.rejected] == ["A-1\n"]
    assert "line break" in layout.rejected[0].reason


# ------------------------------------------------------------------ catalogue tables


def _csv(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _xlsx(tmp_path: Path, rows: list[list[object]], name: str = "c.xlsx") -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    path = tmp_path / name
    book.save(path)
    return path


LINES = [
    "档号,题名,页数,密级,备注",
    "A-1,第一件,3,内部,",
    'A-2,"两行\r\n题名",1,秘密,"备注一\r第二行"',  # quoted line breaks stay inside their cells
    "A-3,第三件,三页,内部,",  # rejected: row 4
    "A-4,第四件,2,,",
]


@pytest.mark.parametrize(
    "endings",
    [["\n"], ["\r\n"], ["\r"], ["\r", "\n", "\r\n", "\r"]],
    ids=["LF", "CRLF", "CR-only", "mixed"],
)
@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
def test_catalogue_line_endings_all_read_the_same(tmp_path: Path, endings: list[str], encoding: str) -> None:
    text = "".join(line + endings[i % len(endings)] for i, line in enumerate(LINES))
    load = read_catalogue(_csv(tmp_path, text, encoding))
    assert [e.archive_code for e in load.entries] == ["A-1", "A-2", "A-4"]
    assert load.entries[1].title == "两行\r\n题名" and load.entries[1].remarks == "备注一\r第二行"
    assert [(p.row, p.archive_code) for p in load.problems] == [(4, "A-3")]


def test_a_blank_line_before_the_header_keeps_spreadsheet_row_numbers(tmp_path: Path) -> None:
    load = read_catalogue(_csv(tmp_path, "\r\r档号,页数\r\rA-1,x\rA-2,1\r"))
    assert [p.row for p in load.problems] == [5]  # blank rows count, as in a spreadsheet


@pytest.mark.parametrize("size", [MAX_CELL_CHARS + 1, 200_000, 2_000_000])
def test_a_huge_cell_rejects_its_row_without_crashing(tmp_path: Path, size: int) -> None:
    text = (
        f"档号,题名,页数,其他\r\nA-1,短,1,\r\nA-2,{'长' * size},1,\r\nA-3,短,1,{'x' * size}\r\nA-4,短,2,\r\n"
    )
    load = read_catalogue(_csv(tmp_path, text))
    assert [e.archive_code for e in load.entries] == ["A-1", "A-4"]
    problems = {p.row: p for p in load.problems}
    assert set(problems) == {3, 4}
    assert f"{size:,} characters" in problems[3].reason and "column 2 (B, 题名)" in problems[3].reason
    assert f"at most {MAX_CELL_CHARS:,}" in problems[3].reason and problems[3].archive_code == "A-2"
    assert "column 4 (D, 其他)" in problems[4].reason  # an unused column counts too


def test_a_cell_at_the_limit_is_accepted(tmp_path: Path) -> None:
    load = read_catalogue(_csv(tmp_path, f"档号,页数,备注\r\nA-1,1,{'x' * MAX_CELL_CHARS}\r\n"))
    assert len(load.entries) == 1 and len(load.entries[0].remarks) == MAX_CELL_CHARS


def test_a_huge_xlsx_cell_rejects_its_row(tmp_path: Path) -> None:
    path = _xlsx(tmp_path, [["档号", "页数", "题名"], ["A-1", 1, "x" * 20_000], ["A-2", 2, "ok"]])
    load = read_catalogue(path)
    assert [e.archive_code for e in load.entries] == ["A-2"]
    assert [p.row for p in load.problems] == [2] and "column 3 (C, 题名)" in load.problems[0].reason


@pytest.mark.parametrize(
    ("header", "first", "second"),
    [
        ("档号,页数,密级,密级", "column 3 (C, 密级)", "column 4 (D, 密级)"),
        ("档号,密级,页数,security level", "column 2 (B, 密级)", "column 4 (D, security level)"),
        ("密級,档号,页数,密级", "column 1 (A, 密級)", "column 4 (D, 密级)"),
        ("档号,页数,Page Count", "column 2 (B, 页数)", "column 3 (C, Page Count)"),
    ],
)
def test_two_columns_for_one_field_refuse_the_whole_file(
    tmp_path: Path, header: str, first: str, second: str
) -> None:
    cells = {"档号": "A-1", "页数": "1", "密级": "绝密", "密級": "绝密", "security level": "公开"}
    row = ",".join(cells.get(h, "1") for h in header.split(","))
    path = _csv(tmp_path, f"{header}\r\n{row}\r\n")
    with pytest.raises(CatalogueError) as caught:
        read_catalogue(path)
    message = str(caught.value)
    assert first in message and second in message and "keep one" in message
    assert caught.value.exit_code == 3


def test_duplicate_columns_in_xlsx_are_refused_too(tmp_path: Path) -> None:
    path = _xlsx(tmp_path, [["档号", "页数", "密级", "Security Level"], ["A-1", 1, "绝密", "公开"]])
    with pytest.raises(CatalogueError, match=r"column 3 \(C, 密级\) and column 4 \(D, Security Level\)"):
        read_catalogue(path)


def test_the_cli_maps_a_duplicate_column_to_exit_3_and_imports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main
    from pipeline.settings import load_settings
    from pipeline.store import Store

    path = _csv(tmp_path, "档号,页数,密级,security level\r\nA-1,1,绝密,公开\r\n")
    with pytest.raises(SystemExit) as stopped:
        main(["catalogue", "import", str(path)])
    assert stopped.value.code == 3
    assert "column 3 (C, 密级)" in capsys.readouterr().err
    store = Store(load_settings().state_url)
    try:
        assert "A-1" not in store.catalogue()
    finally:
        store.close()


def test_a_catalogue_ending_in_a_newline_code_is_a_rejected_row(tmp_path: Path) -> None:
    load = read_catalogue(_csv(tmp_path, '档号,页数\r\n"BX01-2012-CB-D10-0001\n",1\r\nA-2,1\r\n'))
    assert [e.archive_code for e in load.entries] == ["A-2"]
    assert [p.row for p in load.problems] == [2]
    assert "line break" in load.problems[0].reason and "\n" not in load.problems[0].archive_code
    xlsx = read_catalogue(_xlsx(tmp_path, [["档号", "页数"], ["A-1\n", 1], ["A-2", 1]]))
    assert [p.row for p in xlsx.problems] == [2]


def test_control_characters_and_line_breaks_in_one_line_fields_reject_the_row(tmp_path: Path) -> None:
    text = '档号,页数,投保人,题名\r\nA-1,1,"王\x1b[2J",t\r\nA-2,1,"王\n建国",t\r\nA-3,1,王,"two\nlines"\r\n'
    load = read_catalogue(_csv(tmp_path, text))
    assert [e.archive_code for e in load.entries] == ["A-3"]  # a title may span lines
    reasons = {p.row: p.reason for p in load.problems}
    assert "control character (U+001B)" in reasons[2] and "column 3 (C, 投保人)" in reasons[2]
    assert "line break" in reasons[3]


def test_fields_longer_than_their_database_column_reject_the_row(tmp_path: Path) -> None:
    load = read_catalogue(_csv(tmp_path, f"档号,页数,投保人\r\nA-1,1,{'王' * 201}\r\nA-2,1,{'王' * 200}\r\n"))
    assert [e.archive_code for e in load.entries] == ["A-2"]
    assert "column 3 (C, 投保人) is 201 characters long; at most 200" in load.problems[0].reason


@pytest.mark.parametrize("pages", ["1e3", "-1", "３", "²", "3.5", "9" * 5000, str(MAX_PAGE_COUNT + 1), "3\n"])
def test_page_counts_are_plain_whole_numbers(tmp_path: Path, pages: str) -> None:
    load = read_catalogue(_csv(tmp_path, f'档号,页数\r\nA-1,"{pages}"\r\nA-2,3.0\r\nA-3,007\r\n'))
    assert [(e.archive_code, e.page_count) for e in load.entries] == [("A-2", 3), ("A-3", 7)]
    assert [p.row for p in load.problems] == [2]


def test_other_delimiters_and_encodings(tmp_path: Path) -> None:
    semicolon = read_catalogue(_csv(tmp_path, "档号;页数;题名\r\nA-1;1;a,b\r\n", name="s.csv"))
    assert semicolon.entries[0].title == "a,b"
    tabs = read_catalogue(_csv(tmp_path, "\ufeff档号\t页数\r\nA-1\t1\r\n", "utf-16", name="u.txt"))
    assert [e.archive_code for e in tabs.entries] == ["A-1"]  # Excel's "Unicode text"
    bom = read_catalogue(_csv(tmp_path, "档号,页数\nA-1,1\n", "utf-8-sig", name="b.csv"))
    assert len(bom.entries) == 1


def test_whole_file_problems_are_catalogue_errors(tmp_path: Path) -> None:
    (tmp_path / "bin.csv").write_bytes(b"\xff\xff\xff\x80,\x81\r\n")
    with pytest.raises(CatalogueError, match="not UTF-8, GBK/GB18030"):
        read_catalogue(tmp_path / "bin.csv")
    with pytest.raises(CatalogueError, match="empty"):
        read_catalogue(_csv(tmp_path, "\r\n\r\n", name="empty.csv"))
    with pytest.raises(CatalogueError, match="the header"):
        read_catalogue(_csv(tmp_path, "x" * (MAX_CELL_CHARS + 1) + ",页数\r\n", name="h.csv"))
    big = tmp_path / "big.csv"
    with big.open("wb") as handle:  # sparse: takes no disk space
        handle.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(CatalogueError, match="at most 200 MB"):
        read_catalogue(big)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(CatalogueError):
        read_catalogue(folder)


def test_parse_rows_follows_the_same_rules() -> None:
    load = parse_rows([["档号", "页数", "密级"], ["A-1", "1", "2"], ["A-2", "1", "Secret"]], "rows")
    assert [p.row for p in load.problems] == [2]
    assert load.entries[0].security_level == "秘密"
    with pytest.raises(CatalogueError, match="column 1"):
        parse_rows([["档号", "档号", "页数"]], "rows")


# ------------------------------------------------------------------ 密级 cells


@pytest.mark.parametrize("level", ["²", "０", "0", "2", "4", "top-sekret", "秘", "二级"])
def test_a_cell_that_is_not_a_level_is_a_rejected_row(tmp_path: Path, level: str) -> None:
    load = read_catalogue(_csv(tmp_path, f"档号,页数,密级\r\nA-1,1,公开\r\nA-2,1,{level}\r\nA-3,1,\r\n"))
    assert [e.archive_code for e in load.entries] == ["A-1", "A-3"]
    assert [(p.row, p.archive_code) for p in load.problems] == [(3, "A-2")]
    reason = load.problems[0].reason
    assert repr(level) in reason and all(name in reason for name in LEVELS)


def test_a_number_in_an_xlsx_level_cell_is_not_a_level(tmp_path: Path) -> None:
    load = read_catalogue(_xlsx(tmp_path, [["档号", "页数", "密级"], ["A-1", 1, 2], ["A-2", 1, 0.0]]))
    assert not load.entries and [p.row for p in load.problems] == [2, 3]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Secret", "秘密"),
        ("機密", "机密"),
        ("TOP SECRET", "绝密"),
        ("公開", "公开"),
        (" 内部 ", "内部"),
        ("Internal", "内部"),
        ("Ｓｅｃｒｅｔ", "秘密"),
    ],
)
def test_recognised_levels_are_stored_canonically(tmp_path: Path, given: str, stored: str) -> None:
    load = read_catalogue(_csv(tmp_path, f"档号,页数,密级\r\nA-1,1,{given}\r\n"))
    assert [e.security_level for e in load.entries] == [stored]
    assert rank(load.entries[0].security_level) == LEVELS.index(stored)


def test_an_empty_level_stays_empty_and_ranks_highest(tmp_path: Path) -> None:
    load = read_catalogue(_csv(tmp_path, "档号,页数,密级\r\nA-1,1,\r\nA-2,1,  \r\n"))
    assert [e.security_level for e in load.entries] == ["", ""]
    assert rank(load.entries[0].security_level) == HIGHEST == 4
    no_column = read_catalogue(_csv(tmp_path, "档号,页数\r\nA-1,1\r\n", name="n.csv"))
    assert rank(no_column.entries[0].security_level) == 4


# ------------------------------------------------------------------ batch manifests


def _manifest(tmp_path: Path, text: str, encoding: str = "gbk") -> Path:
    (tmp_path / "batch.csv").write_bytes(text.encode(encoding))
    return tmp_path


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n", "mixed"])
def test_manifest_line_endings_all_read(tmp_path: Path, ending: str) -> None:
    lines = ["station,operator,档号", "S3,张,W-0001", "S3,张,W-0002", "S3,张,W-0003"]
    ends = ["\r", "\n", "\r\n", "\r"] if ending == "mixed" else [ending]
    text = "".join(line + ends[i % len(ends)] for i, line in enumerate(lines))
    manifest = watch.read_manifest(_manifest(tmp_path, text))
    assert manifest == {
        "station": "S3",
        "operator": "张",
        "scan_date": "",
        "items": ["W-0001", "W-0002", "W-0003"],
    }


def test_a_huge_manifest_cell_is_a_manifest_error_with_its_row(tmp_path: Path) -> None:
    text = f"档号,operator\r\nW-0001,张\r\nW-0002,{'x' * 200_000}\r\n"
    with pytest.raises(watch.ManifestError, match=r"row 3: column 2 \(B, operator\) is 200,000 characters"):
        watch.read_manifest(_manifest(tmp_path, text, "utf-8"))


def test_manifest_duplicate_columns_are_refused_naming_both(tmp_path: Path) -> None:
    with pytest.raises(watch.ManifestError, match=r"column 1 \(A, 档号\) and column 2 \(B, archive_code\)"):
        watch.read_manifest(_manifest(tmp_path, "档号,archive_code\r\nW-1,W-2\r\n"))


def test_manifest_codes_are_checked(tmp_path: Path) -> None:
    with pytest.raises(watch.ManifestError, match="row 3: .*line break"):
        watch.read_manifest(_manifest(tmp_path, '档号\r\nW-1\r\n"W-2\n"\r\n'))
    with pytest.raises(watch.ManifestError, match="row 3: archive code W-1 is already row 2"):
        watch.read_manifest(_manifest(tmp_path, "档号\r\nW-1\r\nW-1\r\n"))
    with pytest.raises(watch.ManifestError, match="row 2: no archive code"):
        watch.read_manifest(_manifest(tmp_path, "档号,station\r\n,S1\r\n"))
    with pytest.raises(watch.ManifestError, match="row 2: archive code '../x'"):
        watch.read_manifest(_manifest(tmp_path, "档号\r\n../x\r\n"))


def test_json_manifest_codes_and_fields_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"items": ["W-1", "W-2\n"]}), encoding="utf-8")
    with pytest.raises(watch.ManifestError, match="item 2: .*line break"):
        watch.read_manifest(tmp_path)
    path.write_text(json.dumps({"station": "S1\x1b[2J", "items": ["W-1"]}), encoding="utf-8")
    with pytest.raises(watch.ManifestError, match="'station' contains a control character"):
        watch.read_manifest(tmp_path)
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(watch.ManifestError, match="not valid JSON"):
        watch.read_manifest(tmp_path)
    path.write_text(json.dumps({"station": None, "items": ["W-1"]}), encoding="utf-8")
    assert watch.read_manifest(tmp_path) == {"station": "", "operator": "", "scan_date": "", "items": ["W-1"]}


def test_an_unreadable_manifest_raises_only_manifest_error(tmp_path: Path) -> None:
    (tmp_path / "batch.csv").write_bytes(b"\xff\xff\x80\x81")
    with pytest.raises(watch.ManifestError, match="not UTF-8"):
        watch.read_manifest(tmp_path)
    (tmp_path / "batch.csv").unlink()
    (tmp_path / "batch.csv").mkdir()  # a folder where the file should be
    with pytest.raises(watch.ManifestError, match="cannot be read"):
        watch.read_manifest(tmp_path)
