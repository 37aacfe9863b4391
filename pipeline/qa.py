"""QA decisions: approve, send for rescanning, or correct the catalogue and re-verify.

Every decision needs a reason and records who and when (decisions table, audit log, and a
decisions.jsonl beside the package, so the archive folder carries its own history).
Visibility to searchers follows the decision inside the index itself. People reach these
functions only through pipeline.service.ArchiveService.decide, which checks access first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pipeline import verify
from pipeline.archive import ArchiveLayout
from pipeline.errors import IndexUnavailable, QaError
from pipeline.index.base import SearchBackend
from pipeline.models import Severity
from pipeline.process import item_from_record
from pipeline.settings import Settings
from pipeline.store import Store


@dataclass(frozen=True)
class Outcome:
    archive_code: str
    action: str
    case_status: str  # the case's status after the decision
    visible: bool
    remaining: list[dict[str, Any]]


def _require(reason: str, user: str) -> None:
    if not reason.strip():
        raise QaError("a reason is required for every QA decision (--reason)")
    if not user.strip():
        raise QaError("the deciding user is unknown (--user or CAPTURE_USER)")


def _decide(
    store: Store,
    index: SearchBackend,
    settings: Settings,
    archive_code: str,
    action: str,
    reason: str,
    user: str,
    close_as: str | None,
    details: dict[str, Any] | None = None,
    page_count: int | None = None,
    findings: list[dict[str, Any]] | None = None,
) -> Outcome:
    _require(reason, user)
    try:
        store.decide(
            archive_code,
            action,
            reason,
            user,
            close_as=close_as,
            details=details,
            page_count=page_count,
            findings=findings,
        )
    except LookupError as exc:  # the store's own "no open QA case" check
        raise QaError(str(exc)) from exc
    item = store.item(archive_code)
    visible = bool(item and item.visible)
    try:
        index.set_visible(archive_code, visible)
    except IndexUnavailable as exc:  # the decision stands; the index catches up on re-indexing
        store.mark_index_pending(archive_code, str(exc))
    ArchiveLayout(settings.archive_dir).append_decision(
        archive_code,
        {
            "action": action,
            "reason": reason,
            "user": user,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            **(details or {}),
        },
    )
    case = store.open_case(archive_code)
    return Outcome(archive_code, action, close_as or "open", visible, list(case.findings) if case else [])


def approve(
    store: Store, index: SearchBackend, settings: Settings, code: str, reason: str, user: str
) -> Outcome:
    return _decide(store, index, settings, code, "approve", reason, user, close_as="approved")


def rescan(
    store: Store, index: SearchBackend, settings: Settings, code: str, reason: str, user: str
) -> Outcome:
    return _decide(store, index, settings, code, "rescan", reason, user, close_as="rescan")


def correct(
    store: Store, index: SearchBackend, settings: Settings, code: str, pages: int, reason: str, user: str
) -> Outcome:
    """Set the catalogue's page count and verify the item again against it."""
    _require(reason, user)
    if pages < 0:
        raise QaError("--pages must be 0 or more")
    if store.open_case(code) is None:  # checked before the catalogue is touched
        raise QaError(f"{code} has no open QA case")
    entry = store.catalogue_entry(code)
    if entry is None:
        raise QaError(f"{code} is not in the catalogue; import a catalogue row for it first")
    record = load_record(settings, code)
    old = entry.page_count
    item = item_from_record(record, settings.archive_dir / code)
    new_entry = replace(entry, page_count=pages)
    findings = [f for f in item.findings if f.code not in ("page_count_mismatch", "unknown_item")]
    findings += verify.check_catalogue(code, new_entry, item.pages)
    remaining = [f.to_dict() for f in findings if f.severity != Severity.INFO]
    close_as = None if remaining else "corrected"
    return _decide(  # the page count, the findings and the decision in one transaction
        store,
        index,
        settings,
        code,
        "correct",
        reason,
        user,
        close_as,
        {"page_count_before": old, "page_count_after": pages},
        page_count=pages,
        findings=remaining,
    )


def load_record(settings: Settings, code: str) -> dict[str, Any]:
    layout = ArchiveLayout(settings.archive_dir)
    if not layout.record(code).exists():
        raise QaError(f"{code} has no package in the archive ({layout.folder(code)})")
    return layout.read_record(code)
