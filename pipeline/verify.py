"""Findings and a verdict per item: page counts, catalogue, files, resolution, OCR confidence.

Nothing here raises for a mismatch: every problem becomes a Finding and the batch goes on.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.errors import PageReadError, all_errors
from pipeline.models import CatalogueEntry, Finding, PageResult, Severity, SourceSnapshot, Verdict
from pipeline.pages import FileProblem, source_change
from pipeline.settings import VerifySettings

_READ_FINDINGS = frozenset(c.finding for c in all_errors() if issubclass(c, PageReadError))
# A page our own processing failed on (an OCR engine that did not load or kept timing out, a
# renderer stopped from outside): it says nothing about the scan, so its item is not packaged
# without it (`not_packaged`) and the next run of the batch does it again.
PROCESSING_FAILED = "processing_failed"


def check_pages(pages: Iterable[PageResult], settings: VerifySettings) -> list[Finding]:
    findings: list[Finding] = []
    for page in pages:
        if page.error and page.error_code == PROCESSING_FAILED:
            findings.append(
                Finding(
                    PROCESSING_FAILED,
                    f"{page.source}: {page.error} (not a fault of the scan: this run archived "
                    "nothing of the item; run the batch again)",
                    Severity.ERROR,
                    page.seq,
                    page.source,
                )
            )
            continue
        if page.error:
            # a read error's own code (page_too_large, page_too_small: the message names the file,
            # its size and the limit); anything else, a page that failed later too, is unreadable_file
            code = page.error_code if page.error_code in _READ_FINDINGS else PageReadError.finding
            findings.append(
                Finding(code, f"{page.source}: {page.error}", Severity.ERROR, page.seq, page.source)
            )
            continue
        if page.blank:
            findings.append(
                Finding(
                    "blank_page",
                    f"page {page.seq} ({page.source}) is blank; "
                    "kept in the package, not counted against 页数",
                    Severity.INFO,
                    page.seq,
                    page.source,
                )
            )
            continue
        if page.dpi_assumed:
            findings.append(
                Finding(
                    "dpi_missing",
                    f"{page.source} does not say its resolution; {page.dpi} dpi was assumed",
                    Severity.WARNING,
                    page.seq,
                    page.source,
                )
            )
        elif page.dpi is not None and page.dpi < settings.min_dpi:
            findings.append(
                Finding(
                    "low_dpi",
                    f"{page.source} is scanned at {page.dpi} dpi, below the {settings.min_dpi} dpi minimum",
                    Severity.WARNING,
                    page.seq,
                    page.source,
                )
            )
        if page.confidence is None:
            findings.append(
                Finding(
                    "no_text",
                    f"page {page.seq} ({page.source}) is not blank but no text was recognised",
                    Severity.WARNING,
                    page.seq,
                    page.source,
                )
            )
        elif page.confidence < settings.min_page_confidence:
            findings.append(
                Finding(
                    "low_confidence",
                    f"page {page.seq} ({page.source}) was read with mean "
                    f"confidence {page.confidence:.2f}, below {settings.min_page_confidence:.2f}",
                    Severity.WARNING,
                    page.seq,
                    page.source,
                )
            )
    return findings


def check_sources(snapshots: Iterable[SourceSnapshot]) -> list[Finding]:
    """A source file that changed while the batch ran: the archive holds the version read."""
    findings = []
    for snap in snapshots:
        change = source_change(snap)
        if change is not None:
            findings.append(
                Finding(
                    "source_changed",
                    f"{snap.name} changed during the run ({change}); the archived page is the version "
                    f"read at {snap.read_at} with SHA-256 {snap.sha256}",
                    Severity.WARNING,
                    None,
                    snap.name,
                )
            )
    return findings


def check_files(problems: Iterable[FileProblem]) -> list[Finding]:
    return [
        Finding("unreadable_file", f"{p.file} {p.reason}", Severity.ERROR, None, p.file) for p in problems
    ]


def check_catalogue(
    archive_code: str, entry: CatalogueEntry | None, pages: list[PageResult]
) -> list[Finding]:
    if entry is None:
        return [
            Finding(
                "unknown_item",
                f"archive code {archive_code} is not in the catalogue (归档目录)",
                Severity.ERROR,
            )
        ]
    counted = sum(1 for p in pages if p.readable and not p.blank)
    blank = sum(1 for p in pages if p.blank)
    # a page we failed on may be a counted page: the scans are not blamed for it
    unprocessed = sum(1 for p in pages if p.error_code == PROCESSING_FAILED)
    unreadable = sum(1 for p in pages if not p.readable) - unprocessed
    if counted <= entry.page_count <= counted + unprocessed:
        return []
    details = [f"{len(pages)} page images"]
    if blank:
        details.append(f"{blank} blank page{'s' if blank > 1 else ''} not counted")
    if unreadable:
        details.append(f"{unreadable} unreadable")
    if unprocessed:
        details.append(f"{unprocessed} not processed")
    return [
        Finding(
            "page_count_mismatch",
            f"catalogue says {entry.page_count} pages (页数), the scans have {counted} "
            f"({', '.join(details)})",
            Severity.ERROR,
        )
    ]


def check_manifest(archive_code: str, expected: bool | None) -> list[Finding]:
    if expected is False:
        return [Finding("unexpected_item", f"{archive_code} is in the batch but not listed in its manifest")]
    return []


def not_packaged(findings: Iterable[Finding]) -> bool:
    """An item with a page its processing failed on is not packaged: an archive must not hold it
    short of a page the scan has."""
    return any(f.code == PROCESSING_FAILED for f in findings)


def verdict_of(findings: Iterable[Finding], packaged: bool) -> Verdict:
    if not packaged:
        return Verdict.FAILED
    if any(f.severity != Severity.INFO for f in findings):
        return Verdict.NEEDS_QA
    return Verdict.PASSED
