"""Read catalogue (归档目录) files, and the one table reader every CSV or XLSX from outside goes through.

Catalogues are CSV (UTF-8 with or without BOM, GBK/GB18030, or UTF-16 with BOM as Excel's
"Unicode text" writes it) or XLSX. Headers may be Chinese or English. Bad rows are reported with
their row number (the line a person sees in a spreadsheet, header = row 1) and the reason; good
rows still load.

`read_table` holds the rules for every table (catalogues here; batch.csv manifests in
pipeline.watch), so they cannot drift apart:

- a file larger than MAX_FILE_BYTES is refused before it is read;
- CSV line endings may be LF, CRLF, CR only (old Mac) or mixed; the delimiter (comma, tab or
  semicolon) is the one the header row uses most;
- the header is the first non-empty row; two header cells that name one field (the same
  spelling twice, or 密级 beside "security level") refuse the whole file, naming both columns;
- a cell longer than MAX_CELL_CHARS (in any column), a control character in a cell that is
  used, or a line break in a used one-line cell makes that row unusable, with its number and
  column (a catalogue reports it as a rejected row; a manifest is refused);
- the only exception it raises is the caller's (CatalogueError, ManifestError), with a message.

Catalogue rows then follow these rules: the archive code must be safe as a file name
(pipeline.intake), used once; 页数 is a whole number of ASCII digits up to MAX_PAGE_COUNT; 密级,
when given, must name a level (pipeline.security) and is stored in its canonical Chinese form,
while an empty 密级 stays empty and counts as the highest level (绝密); 合同终止日期 and 形成日期
(the dates retention counts from), when given, must be calendar dates (2015-06-30, 2015/6/30,
2015年6月30日, 20150630, or an XLSX date cell) and are stored as YYYY-MM-DD; every field fits
its column in the state database (FIELD_MAX_CHARS).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pipeline.errors import CatalogueError, UnsafeNameError
from pipeline.intake import validate_archive_code
from pipeline.models import CatalogueEntry, CatalogueLoad, RowProblem
from pipeline.security import LEVELS, canonical_level

MAX_FILE_BYTES = 200 * 1024 * 1024  # a larger catalogue or manifest is refused unread
MAX_CELL_CHARS = 10_000  # a longer cell makes its row unusable (often a stray quote that swallowed rows)
MAX_ROWS = 1_048_576  # Excel's own limit
MAX_COLUMNS = 16_384  # Excel's own limit
MAX_PAGE_COUNT = 100_000
# Widths of the state database's catalogue columns (pipeline/store/schema.py); title and
# remarks are TEXT and bounded by MAX_CELL_CHARS.
FIELD_MAX_CHARS: dict[str, int] = {
    "archive_code": 100,
    "policy_number": 100,
    "policyholder": 200,
    "job_serial": 100,
    "year": 20,
    "stage": 50,
    "retention": 50,
    "security_level": 50,
    "box": 50,
    "contract_end_date": 40,
    "creation_date": 40,
}
XLSX_SUFFIXES = (".xlsx", ".xlsm")
CSV_SUFFIXES = (".csv", ".txt", ".tsv")

# No cell can be longer than the file it is in, so with this limit the csv module never refuses
# a cell ("field larger than field limit"); long cells are rejected by MAX_CELL_CHARS instead.
csv.field_size_limit(max(csv.field_size_limit(), MAX_FILE_BYTES + 1))

# Accepted header spellings (compared after stripping spaces and lower-casing) per field.
HEADERS: dict[str, tuple[str, ...]] = {
    "archive_code": ("档号", "檔號", "archive code", "archive_code", "archivecode", "reference code"),
    "policy_number": (
        "保险合同号",
        "保險合同號",
        "合同号",
        "保单号",
        "policy number",
        "policy_number",
        "policy no",
    ),
    "policyholder": ("投保人", "policyholder", "policy holder"),
    "job_serial": ("作业流水号", "作業流水號", "流水号", "job serial number", "job_serial", "job serial"),
    "page_count": ("页数", "頁數", "page count", "page_count", "pages"),
    "year": ("年度", "year"),
    "stage": ("业务环节", "業務環節", "business stage", "stage", "business_stage"),
    "retention": ("保管期限", "retention", "retention period"),
    "security_level": ("密级", "密級", "security level", "security_level", "classification"),
    "box": ("盒号", "盒號", "box", "box number"),
    "remarks": ("备注", "備註", "remarks", "notes"),
    "title": ("题名", "題名", "title"),
    "contract_end_date": (
        "合同终止日期",
        "合同終止日期",
        "终止日期",
        "contract end date",
        "contract_end_date",
        "contract end",
    ),
    "creation_date": (
        "形成日期",
        "文件形成日期",
        "creation date",
        "creation_date",
        "date of creation",
        "created",
    ),
}
DATE_NAMES = {
    "contract_end_date": "contract end date (合同终止日期)",
    "creation_date": "creation date (形成日期)",
}

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls but tab, CR, LF
_LINE_BREAK = re.compile(r"[\r\n\u2028\u2029]")
_WHOLE_NUMBER = re.compile(r"([0-9]+)(?:\.0*)?")  # "3", "003", "3.0" (as spreadsheets export)
# 2015-06-30, 2015/6/30, 2015.06.30, 2015年6月30日, an XLSX date cell (2015-06-30 00:00:00), 20150630
_DATE = re.compile(
    r"([0-9]{4})\s*[-/.年]\s*([0-9]{1,2})\s*[-/.月]\s*([0-9]{1,2})\s*日?(?:[ T][0-9:.]+)?"
    r"|([0-9]{4})([0-9]{2})([0-9]{2})"
)
_EDGE_SPACE = " \t\u3000\u00a0"  # stripped from cells; line breaks are not (they are reported)
_DELIMITERS = (",", "\t", ";")  # on a tie, the earlier wins
_CHUNK = 1 << 20


@dataclass(frozen=True)
class TableSpec:
    """What one kind of table looks like, and how its errors are raised."""

    fields: Mapping[str, tuple[str, ...]]  # field -> accepted header spellings
    required: tuple[str, ...]  # fields the header must have
    need: str  # the required headers, as a person reads them
    error: Callable[[str], Exception]  # CatalogueError, ManifestError...
    multiline: frozenset[str] = frozenset()  # fields whose cells may hold line breaks


@dataclass(frozen=True)
class TableRow:
    number: int  # header = row 1 when it is the file's first row
    values: dict[str, str]  # field -> cell text, spaces stripped (a too-long cell is left out)
    problem: str = ""  # why the row cannot be used; "" when it can


@dataclass(frozen=True)
class Table:
    source: str
    header: tuple[str, ...]
    labels: dict[str, str]  # field -> its column as a person finds it: "column 10 (J, 密级)"
    rows: tuple[TableRow, ...] = field(default_factory=tuple)  # data rows; blank rows left out


CATALOGUE = TableSpec(
    HEADERS,
    required=("archive_code", "page_count"),
    need="at least 档号 (archive code) and 页数 (page count)",
    error=CatalogueError,
    multiline=frozenset({"title", "remarks"}),
)


def read_catalogue(path: Path) -> CatalogueLoad:
    """All good rows as entries, every bad row as a problem; raises CatalogueError only when the
    file as a whole cannot be used (missing, unreadable, too large, bad header)."""
    if not path.is_file():
        raise CatalogueError(f"{path}: no such catalogue file")
    suffix = path.suffix.lower()
    if suffix not in XLSX_SUFFIXES + CSV_SUFFIXES:
        raise CatalogueError(f"{path.name}: unsupported catalogue type '{suffix}' (use CSV or XLSX)")
    return _load(read_table(path, CATALOGUE))


def parse_rows(rows: Iterable[list[str]], source: str) -> CatalogueLoad:
    """Catalogue rows already split into cells (the same rules as a file)."""
    return _load(_table(iter(rows), source, CATALOGUE))


# ------------------------------------------------------------------ the table reader


def read_table(path: Path, spec: TableSpec) -> Table:
    """Read a CSV or XLSX table by the rules in this module's docstring; raises only spec.error."""
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise spec.error(f"{name}: cannot be read ({exc.strerror or exc})") from exc
    if size > MAX_FILE_BYTES:
        raise spec.error(
            f"{name}: the file is {size / 2**20:,.0f} MB; at most {MAX_FILE_BYTES // 2**20} MB is read "
            "(split it into several files)"
        )
    try:
        if path.suffix.lower() in XLSX_SUFFIXES:
            rows = _xlsx_rows(path, spec.error)
        else:
            rows = _csv_rows(path, spec.error)
        with contextlib.closing(rows):
            return _table(rows, name, spec)
    except OSError as exc:
        raise spec.error(f"{name}: cannot be read ({exc.strerror or exc})") from exc


def cell_problem(text: str, *, multiline: bool = False) -> str | None:
    """Why a cell's text cannot be used ('contains ...'), or None: too long, a control character,
    or (unless multiline) a line break."""
    if len(text) > MAX_CELL_CHARS:
        return f"is {len(text):,} characters long; a cell may hold at most {MAX_CELL_CHARS:,}"
    found = _CONTROL.search(text)
    if found:
        return f"contains a control character (U+{ord(found.group()):04X})"
    if not multiline:
        found = _LINE_BREAK.search(text)
        if found:
            return f"contains a line break (U+{ord(found.group()):04X}); it must be one line"
    return None


def _table(rows: Iterator[list[str]], source: str, spec: TableSpec) -> Table:
    lookup = _lookup(spec.fields)
    header: list[str] | None = None
    columns: list[str | None] = []
    labels: dict[str, str] = {}
    found: list[TableRow] = []
    for number, raw in enumerate(rows, start=1):
        if number > MAX_ROWS:
            raise spec.error(f"{source}: more than {MAX_ROWS:,} rows (split it into several files)")
        if len(raw) > MAX_COLUMNS:
            raise spec.error(
                f"{source}: row {number} has {len(raw):,} cells; at most {MAX_COLUMNS:,} columns are read"
            )
        if not any(cell.strip() for cell in raw):
            continue
        if header is None:
            header, columns, labels = _header(raw, number, source, spec, lookup)
            continue
        used = [(column, raw[index]) for index, column in enumerate(columns) if column and index < len(raw)]
        values = {column: cell.strip(_EDGE_SPACE) for column, cell in used if len(cell) <= MAX_CELL_CHARS}
        one_line = "".join(cell for column, cell in used if column not in spec.multiline)
        problem = ""
        if (
            max(map(len, raw)) > MAX_CELL_CHARS
            or _CONTROL.search("".join(cell for _, cell in used))
            or _LINE_BREAK.search(one_line)
        ):
            problem = _first_problem(raw, header, columns, spec.multiline)
        found.append(TableRow(number, values, problem))
    if header is None:
        raise spec.error(f"{source}: the file is empty (no header row)")
    return Table(source, tuple(header), labels, tuple(found))


def _first_problem(
    raw: list[str], header: list[str], columns: list[str | None], multiline: frozenset[str]
) -> str:
    """The first cell, left to right, that makes the row unusable, and why; "" when there is none."""
    for index, cell in enumerate(raw):
        column = columns[index] if index < len(columns) else None
        if column is None and len(cell) <= MAX_CELL_CHARS:
            continue  # an unused column: only its length matters
        why = cell_problem(cell, multiline=column in multiline)
        if why:
            return f"{_column_label(index, header[index] if index < len(header) else '')} {why}"
    return ""


def _header(
    raw: list[str], number: int, source: str, spec: TableSpec, lookup: dict[str, str]
) -> tuple[list[str], list[str | None], dict[str, str]]:
    for index, cell in enumerate(raw):
        if len(cell) > MAX_CELL_CHARS:
            raise spec.error(
                f"{source}: row {number} (the header), {_column_label(index, '')}, is "
                f"{len(cell):,} characters long"
            )
    header = [cell.strip().lstrip("\ufeff").strip() for cell in raw]
    columns: list[str | None] = []
    first: dict[str, int] = {}
    for index, text in enumerate(header):
        column = _field_of(text, lookup)
        if column is not None and column in first:
            other = first[column]
            raise spec.error(
                f"{source}: {_column_label(other, header[other])} and {_column_label(index, text)} both "
                f"name the field {spec.fields[column][0]} ({column}); keep one of them (nothing was read)"
            )
        if column is not None:
            first[column] = index
        columns.append(column)
    if not all(name in first for name in spec.required):
        shown = ", ".join(_shown_text(h) for h in header if h)[:300]
        raise spec.error(f"{source}: the header row (row {number}) needs {spec.need}; found: {shown}")
    labels = {column: _column_label(index, header[index]) for column, index in first.items()}
    return header, columns, labels


def _lookup(fields: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    table: dict[str, str] = {}
    for name, spellings in fields.items():
        for spelling in spellings:
            table[spelling.lower()] = name
            table[spelling.replace(" ", "").lower()] = name
    return table


def _field_of(header: str, lookup: dict[str, str]) -> str | None:
    key = header.lower()
    return lookup.get(key) or lookup.get(key.replace(" ", ""))


def _column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _column_label(index: int, header: str) -> str:
    """'column 10 (J, 密级)': the position, the spreadsheet letter and the header text."""
    text = _shown_text(header) if header else ""
    return f"column {index + 1} ({_column_letters(index)}{', ' + text if text else ''})"


def _shown_text(text: str, limit: int = 40) -> str:
    """The text as it may be printed: cut to `limit`, and in repr form if it holds anything unprintable."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut if cut.isprintable() else repr(cut)


def _quoted(text: str, limit: int = 40) -> str:
    """A cell value for a message: cut to `limit`, in repr form (quotes; a newline shows as \\n)."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _csv_rows(path: Path, error: Callable[[str], Exception]) -> Generator[list[str], None, None]:
    encoding = _csv_encoding(path, error)
    delimiter = _csv_delimiter(path, encoding)
    # newline="": the reader sees LF, CRLF and lone CR as line ends, and keeps quoted ones in cells
    with path.open(encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        number = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:  # the file changed since it was checked
                raise error(f"{path.name}: row {number + 1} cannot be read as CSV ({exc})") from exc
            number += 1
            yield row


def _csv_encoding(path: Path, error: Callable[[str], Exception]) -> str:
    """UTF-16 when the file starts with its BOM; else UTF-8 (BOM or not), then GB18030 (a superset
    of GBK and GB2312). Checked over the whole file in chunks, never holding it in memory."""
    with path.open("rb") as handle:
        start = handle.read(2)
    candidates = ("utf-16",) if start in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig", "gb18030")
    for encoding in candidates:
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        return encoding
    raise error(f"{path.name}: not UTF-8, GBK/GB18030 or UTF-16 text; save it as CSV (UTF-8 or GBK) or XLSX")


def _csv_delimiter(path: Path, encoding: str) -> str:
    """The delimiter the first non-empty line (the header) uses most outside quotes; ',' if none."""
    line = ""
    with path.open(encoding=encoding, newline="") as handle:
        for _ in range(1000):
            line = handle.readline(65536)
            if not line or line.strip():
                break
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(_DELIMITERS, key=lambda d: counts[d])  # max keeps the first of equals
    return best if counts[best] else ","


def _xlsx_rows(path: Path, error: Callable[[str], Exception]) -> Generator[list[str], None, None]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a damaged file
        raise error(f"{path.name}: not a readable XLSX workbook ({exc})") from exc
    try:
        if not book.worksheets:
            raise error(f"{path.name}: the workbook has no worksheet")
        values = book.worksheets[0].iter_rows(values_only=True)
        number = 0
        while True:
            try:
                row = next(values)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a damaged sheet part, in any of openpyxl's ways
                raise error(f"{path.name}: row {number + 1} cannot be read ({exc})") from exc
            number += 1
            yield ["" if v is None else _cell_text(v) for v in row]
    finally:
        book.close()


def _cell_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ------------------------------------------------------------------ catalogue rows


def _load(table: Table) -> CatalogueLoad:
    entries: list[CatalogueEntry] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for row in table.rows:
        entry_or_problem = _entry(row, table.labels, seen)
        if isinstance(entry_or_problem, RowProblem):
            problems.append(entry_or_problem)
        else:
            seen[entry_or_problem.archive_code] = row.number
            entries.append(entry_or_problem)
    return CatalogueLoad(table.source, tuple(entries), tuple(problems))


def _entry(row: TableRow, labels: dict[str, str], seen: dict[str, int]) -> CatalogueEntry | RowProblem:
    values = row.values
    code = values.get("archive_code", "")
    shown_code = _shown_text(code, 100)
    if row.problem:
        return RowProblem(row.number, row.problem, shown_code)
    if not code:
        return RowProblem(row.number, "missing archive code (档号)")
    try:
        validate_archive_code(code)
    except UnsafeNameError as exc:
        return RowProblem(row.number, str(exc), shown_code)
    if code in seen:
        return RowProblem(row.number, f"duplicate archive code {code} (first on row {seen[code]})", code)
    for name, limit in FIELD_MAX_CHARS.items():
        text = values.get(name, "")
        if len(text) > limit:
            return RowProblem(
                row.number,
                f"{labels[name]} is {len(text):,} characters long; at most {limit} are allowed",
                code,
            )
    raw_pages = values.get("page_count", "")
    pages = _page_count(raw_pages)
    if isinstance(pages, str):
        return RowProblem(row.number, pages, code)
    fields = {k: v for k, v in values.items() if k not in ("archive_code", "page_count")}
    raw_level = values.get("security_level", "")
    if raw_level:
        level = canonical_level(raw_level)
        if level is None:
            return RowProblem(
                row.number,
                f"security level (密级) {_quoted(raw_level)} is not a level; use one of "
                f"{', '.join(LEVELS)} (Traditional Chinese and English names are accepted, numbers are "
                "not; an empty cell counts as 绝密)",
                code,
            )
        fields["security_level"] = level
    for name, label in DATE_NAMES.items():
        raw_date = values.get(name, "")
        if raw_date:
            parsed = parse_date(raw_date)
            if parsed is None:
                return RowProblem(
                    row.number,
                    f"{label} {_quoted(raw_date)} is not a date; write it as YYYY-MM-DD (e.g. 2015-06-30)",
                    code,
                )
            fields[name] = parsed.isoformat()
    return CatalogueEntry(archive_code=code, page_count=pages, **fields)


def parse_date(text: str) -> date | None:
    """A calendar date written as the catalogues write them (see _DATE); None when it is not one."""
    found = _DATE.fullmatch(text.strip())
    if found is None:
        return None
    year, month, day = (int(g) for g in (found.groups()[:3] if found.group(1) else found.groups()[3:]))
    try:
        return date(year, month, day)
    except ValueError:  # 2015-02-30, month 13...
        return None


def _page_count(text: str) -> int | str:
    """The page count, or why the cell is not one."""
    found = _WHOLE_NUMBER.fullmatch(text)
    if found is None:
        return f"page count (页数) {_quoted(text)} is not a whole number (digits 0-9)"
    digits = found.group(1).lstrip("0") or "0"
    if len(digits) > len(str(MAX_PAGE_COUNT)) or int(digits) > MAX_PAGE_COUNT:
        return f"page count (页数) {_shown_text(text)} is more than {MAX_PAGE_COUNT:,}"
    return int(digits)
