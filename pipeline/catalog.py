"""Read catalogue (归档目录) files: CSV in UTF-8 (with or without BOM) or GBK/GB18030, or XLSX.

Headers may be Chinese or English. Bad rows are reported with their row number (the line a
person sees in a spreadsheet, header = row 1) and the reason; good rows still load.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pipeline.errors import CatalogueError, UnsafeNameError
from pipeline.intake import validate_archive_code
from pipeline.models import CatalogueEntry, CatalogueLoad, RowProblem

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
}
_LOOKUP = {spelling.replace(" ", "").lower(): field for field, names in HEADERS.items() for spelling in names}
_LOOKUP.update({spelling.lower(): field for field, names in HEADERS.items() for spelling in names})


def _field_of(header: str) -> str | None:
    key = header.strip().lstrip("\ufeff").lower()
    return _LOOKUP.get(key) or _LOOKUP.get(key.replace(" ", ""))


def decode_csv(data: bytes, name: str) -> str:
    """UTF-8 (BOM or not) first, then GB18030 (a superset of GBK and GB2312)."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CatalogueError(f"{name}: not UTF-8 or GBK/GB18030 text; save the catalogue as CSV or XLSX")


def _rows_from_csv(path: Path) -> list[list[str]]:
    text = decode_csv(path.read_bytes(), path.name)
    sample = text[:4096]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return [list(row) for row in csv.reader(io.StringIO(text), dialect)]


def _rows_from_xlsx(path: Path) -> list[list[str]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a damaged file
        raise CatalogueError(f"{path.name}: not a readable XLSX workbook ({exc})") from exc
    try:
        sheet = book.worksheets[0]
        rows = []
        for row in sheet.iter_rows(values_only=True):
            rows.append(["" if v is None else _cell_text(v) for v in row])
        return rows
    finally:
        book.close()


def _cell_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _whole_number(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if not value.is_integer() or value < 0:
        return None
    return int(value)


def read_catalogue(path: Path) -> CatalogueLoad:
    """All good rows as entries, every bad row as a problem; raises only if nothing is readable."""
    if not path.is_file():
        raise CatalogueError(f"{path}: no such catalogue file")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        rows = _rows_from_xlsx(path)
    elif suffix in (".csv", ".txt", ".tsv"):
        rows = _rows_from_csv(path)
    else:
        raise CatalogueError(f"{path.name}: unsupported catalogue type '{suffix}' (use CSV or XLSX)")
    return parse_rows(rows, path.name)


def parse_rows(rows: list[list[str]], source: str) -> CatalogueLoad:
    # the header is the first non-empty row
    start = next((i for i, r in enumerate(rows) if any(c.strip() for c in r)), None)
    if start is None:
        raise CatalogueError(f"{source}: the catalogue is empty")
    columns = [_field_of(h) for h in rows[start]]
    if "archive_code" not in columns or "page_count" not in columns:
        raise CatalogueError(
            f"{source}: the header row needs at least 档号 (archive code) and 页数 (page count); "
            f"found: {', '.join(h for h in rows[start] if h.strip())}"
        )
    entries: list[CatalogueEntry] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for offset, row in enumerate(rows[start + 1 :], start=start + 2):
        if not any(cell.strip() for cell in row):
            continue
        values = {col: row[i].strip() for i, col in enumerate(columns) if col and i < len(row)}
        entry_or_problem = _entry(values, offset, seen)
        if isinstance(entry_or_problem, RowProblem):
            problems.append(entry_or_problem)
        else:
            seen[entry_or_problem.archive_code] = offset
            entries.append(entry_or_problem)
    return CatalogueLoad(source, tuple(entries), tuple(problems))


def _entry(values: dict[str, str], row: int, seen: dict[str, int]) -> CatalogueEntry | RowProblem:
    code = values.get("archive_code", "")
    if not code:
        return RowProblem(row, "missing archive code (档号)")
    try:
        validate_archive_code(code)
    except UnsafeNameError as exc:
        return RowProblem(row, str(exc), code)
    if code in seen:
        return RowProblem(row, f"duplicate archive code {code} (first on row {seen[code]})", code)
    raw_pages = values.get("page_count", "")
    pages = _whole_number(raw_pages)
    if pages is None:
        return RowProblem(row, f"page count (页数) '{raw_pages}' is not a whole number", code)
    fields = {k: v for k, v in values.items() if k not in ("archive_code", "page_count")}
    return CatalogueEntry(archive_code=code, page_count=pages, **fields)
