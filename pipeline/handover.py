"""Handover (移交): the packages of a year (and fonds) as a BagIt bag, and checking a bag later.

    <dest>/bagit.txt, bag-info.txt, manifest-sha256.txt, tagmanifest-sha256.txt   (bagit's own)
    <dest>/data/packages/<档号>/...        each package as archived (PDF/A, record, manifest, QA history)
    <dest>/data/catalogue.xlsx            the catalogue of the items handed over
    <dest>/data/catalogue.csv             the same, CSV in GB18030 (as Chinese archive systems read it)
    <dest>/data/catalogue.json            the same, JSON, with each item's SHA-256 and due date

Only items that passed QA are handed over (an item held for QA is listed as left out), and
every package is checked against its manifest and the state store before it is copied and
again while it is copied; a damaged package stops the export (repair it first). The bag is
made and validated with the `bagit` package; `verify_bag` runs bagit's validator again.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import bagit

from pipeline import __version__
from pipeline.archive import ArchiveLayout, read_manifest, sha256_of
from pipeline.disposal import COLUMNS
from pipeline.errors import BagInvalid, ConfigError, FixityFailed, NotFound
from pipeline.fixity import check_package, primary_root
from pipeline.models import CatalogueEntry
from pipeline.retention import due_of
from pipeline.security import fonds_of
from pipeline.settings import Settings
from pipeline.store import Store

CATALOGUE_FIELDS = tuple(key for key, _ in COLUMNS if key not in ("start_date", "due_date")) + (
    "contract_end_date",
    "creation_date",
)
HEADER = {**dict(COLUMNS), "contract_end_date": "合同终止日期", "creation_date": "形成日期"}


@dataclass
class Handover:
    dest: Path
    items: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # packaged but not passed QA: left out
    files: int = 0
    bytes: int = 0


def select_items(store: Store, year: str, fonds: str = "") -> tuple[list[str], list[str]]:
    """(items to hand over, items left out because QA holds them) of a year and fonds."""
    packages = store.current_packages()
    entries = store.catalogue_entries(packages)
    chosen: list[str] = []
    held: list[str] = []
    for code in sorted(packages):
        entry = entries.get(code)
        if entry is None or entry.year != year or (fonds and fonds_of(code) != fonds):
            continue
        row = store.item(code)
        (chosen if row is not None and row.visible else held).append(code)
    return chosen, held


def export(
    settings: Settings, store: Store, dest: Path, *, year: str, fonds: str = "", user: str
) -> Handover:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest} exists and is not an empty folder; a bag is written into a new one")
    chosen, held = select_items(store, year, fonds)
    if not chosen:
        raise NotFound(f"no archived item of {year}{' in fonds ' + fonds if fonds else ''} has passed QA")
    layout = ArchiveLayout(primary_root(settings))
    packages = store.current_packages()
    baselines = store.baselines(chosen)
    for code in chosen:
        check = check_package(layout.root, code, packages[code], baselines.get((code, packages[code])))
        if not check.ok:
            first = check.problems[0]
            raise FixityFailed(f"{first.path}: {first.kind} ({first.detail}); repair it before the handover")
    outcome = Handover(dest, chosen, held)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        for code in chosen:
            _copy_package(layout.folder(code), dest / "packages" / code)
        _write_catalogue(settings, store, dest, chosen)
        bag = bagit.make_bag(
            str(dest),
            {
                "Source-Organization": "Archive Capture",
                "External-Description": f"Handover of archived items, year {year}"
                + (f", fonds {fonds}" if fonds else ""),
                "External-Identifier": f"capture-{year}{'-' + fonds if fonds else ''}",
                "Bag-Software-Agent": f"Archive Capture {__version__} (bagit {bagit.VERSION})",
                "Bag-Count": "1 of 1",
            },
            checksums=["sha256"],
        )
        bag.validate()
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    outcome.files = sum(1 for _ in (dest / "data").rglob("*") if _.is_file())
    outcome.bytes = sum(p.stat().st_size for p in (dest / "data").rglob("*") if p.is_file())
    store.audit(
        user,
        "export",
        str(dest)[:500],
        {"year": year, "fonds": fonds, "items": len(chosen), "held": held[:200], "files": outcome.files},
    )
    return outcome


def _copy_package(source: Path, target: Path) -> None:
    """Copy a package, checking each copied file against the package's manifest."""
    target.mkdir(parents=True)
    entries = read_manifest(source / "manifest-sha256.txt")
    for path in sorted(source.iterdir()):
        if not path.is_file() or path.is_symlink():
            continue
        shutil.copyfile(path, target / path.name)
        if path.name in entries and sha256_of(target / path.name)[0] != entries[path.name]:
            raise FixityFailed(f"{source.name}/{path.name} changed while it was copied into the bag")


def _write_catalogue(settings: Settings, store: Store, dest: Path, codes: list[str]) -> None:
    from openpyxl import Workbook

    entries = store.catalogue_entries(codes)
    rows = []
    for code in codes:
        entry = entries.get(code) or CatalogueEntry(code, 0)
        values = {**{k: "" for k in CATALOGUE_FIELDS}, **entry.to_dict()}
        rows.append({k: values[k] for k in CATALOGUE_FIELDS})
    headers = [HEADER[k] for k in CATALOGUE_FIELDS]
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "移交目录"
    sheet.append(headers)
    for row in rows:
        sheet.append([row[k] for k in CATALOGUE_FIELDS])
    book.save(dest / "catalogue.xlsx")
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(headers)
    writer.writerows([row[k] for k in CATALOGUE_FIELDS] for row in rows)
    (dest / "catalogue.csv").write_bytes(text.getvalue().encode("gb18030"))
    items = []
    for code, row in zip(codes, rows, strict=True):
        item = store.item(code)
        due = due_of(entries[code], settings.retention).to_dict() if code in entries else {}
        items.append({**row, "pdf_sha256": item.pdf_sha256 if item else None, "retention_due": due})
    document = {
        "written_by": f"Archive Capture {__version__}",
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": items,
    }
    (dest / "catalogue.json").write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")


def verify_bag(dest: Path) -> int:
    """Validate a bag again with bagit (every payload file against its manifest); the files checked."""
    try:
        bag = bagit.Bag(str(dest))
        bag.validate()
    except bagit.BagValidationError as exc:
        details = "; ".join(str(d) for d in (exc.details or [])[:5])
        shown = f"{exc.message}: {details}" if details else exc.message
        raise BagInvalid(f"{dest} is not a valid bag: {shown}") from exc
    except bagit.BagError as exc:
        raise BagInvalid(f"{dest} is not a valid bag: {exc}") from exc
    return len(bag.payload_entries())
