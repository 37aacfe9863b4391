"""What searchers and QA staff can do: one service for the CLI, the web pages and the HTTP API.

Every request names who asks (a Principal) and goes through pipeline.access: the search
backend applies the person's filter inside its query; items, PDFs, page images, thumbnails,
QA cases and decisions are checked with `access.permits`. An item outside a person's reach
is answered exactly like one that does not exist (NotFound), and the refusal is audited.
Every search, view, download, page image, decision and refusal is written to the audit log.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.access import Action, ItemFacts, Principal, item_facts, permits, search_access
from pipeline.archive import ArchiveLayout
from pipeline.errors import CaptureError, Forbidden, NotFound, QaError, UnsafeNameError
from pipeline.index import SearchQuery, open_backend
from pipeline.index.analysis import join_lines
from pipeline.index.base import SearchBackend, SearchResult
from pipeline.intake import validate_archive_code
from pipeline.models import CatalogueEntry
from pipeline.pageimages import Size, packaged_pages
from pipeline.security import HIGHEST
from pipeline.settings import Settings
from pipeline.store import BatchRow, DecisionRow, QaCaseRow, Store

if TYPE_CHECKING:
    from pipeline.qa import Outcome

MAX_AGE_DAYS = 36500
QA_ACTIONS = ("approve", "rescan", "correct")


@dataclass(frozen=True)
class ItemView:
    archive_code: str
    title: str
    catalogue: dict[str, Any]
    pages: list[dict[str, Any]]
    qa_status: str
    visible: bool
    pdf_sha256: str | None
    record: dict[str, Any]

    def to_dict(self, *, for_qa: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "archive_code": self.archive_code,
            "title": self.title,
            "catalogue": self.catalogue,
            "pages": self.pages,
            "pdf_sha256": self.pdf_sha256,
        }
        if for_qa:
            data.update(qa_status=self.qa_status, visible=self.visible)
        return data


@dataclass(frozen=True)
class QueueRow:
    case: QaCaseRow
    days: int
    codes: list[str]


@dataclass(frozen=True)
class Queue:
    rows: list[QueueRow]  # after the filters
    total: int  # cases within reach, before the filters
    kinds: list[tuple[str, int]]  # finding codes over the cases within reach
    batches: list[str]


@dataclass(frozen=True)
class CaseView:
    view: ItemView
    case: QaCaseRow | None
    entry: CatalogueEntry | None
    decisions: list[DecisionRow]


@dataclass(frozen=True)
class BatchLine:
    row: BatchRow
    totals: dict[str, Any]


@dataclass(frozen=True)
class BatchOverview:
    rows: list[BatchLine]
    waiting: list[str] = field(default_factory=list)


class ArchiveService:
    def __init__(
        self, settings: Settings, store: Store | None = None, index: SearchBackend | None = None
    ) -> None:
        self.settings = settings
        self.store = store or Store(settings.state_url)
        self.index = index or open_backend(settings)
        self.layout = ArchiveLayout(settings.archive_dir)

    def close(self) -> None:
        self.index.close()
        self.store.close()

    def refuse(self, who: Principal, action: str, target: str, why: str, via: str) -> None:
        self.store.audit(who.username, f"{action}.refused", target[:200], {"why": why[:500], "via": via})

    # -- search ---------------------------------------------------------------------------

    def search(
        self,
        who: Principal,
        text: str,
        filters: dict[str, str],
        *,
        limit: int = 10,
        offset: int = 0,
        cursor: str | None = None,
        facets: bool = True,
        include_held: bool = False,
        via: str = "api",
    ) -> SearchResult:
        try:
            access = search_access(who, include_held=include_held)
            query = SearchQuery(
                text, filters, access, limit=limit, offset=offset, cursor=cursor, facets=facets
            )
            result = self.index.search(query)
        except CaptureError as exc:
            self.store.audit(
                who.username,
                "search.refused",
                text[:500],
                {"filters": filters, "why": str(exc)[:500], "via": via, "include_held": include_held},
            )
            raise
        self.store.audit(
            who.username,
            "search",
            text,
            {
                "filters": filters,
                "hits": result.total,
                "offset": offset,
                "cursor": bool(cursor),
                "include_held": include_held,
                "backend": self.index.name,
                "via": via,
            },
        )
        return result

    # -- the access check -----------------------------------------------------------------

    def _reach(self, who: Principal, archive_code: str, action: Action, via: str) -> ItemFacts:
        """The item's facts if `who` may do `action` on it; NotFound (audited) otherwise."""
        shown = archive_code[:100]
        try:
            validate_archive_code(archive_code)
        except UnsafeNameError:
            self.refuse(who, str(action), shown, "not an archive code", via)
            raise NotFound(f"no item {shown!r}") from None
        facts = item_facts(self.store, archive_code)
        if facts is None or not self.layout.record(archive_code).is_file():
            self.refuse(who, str(action), shown, "no such item", via)
            raise NotFound(f"no item {shown!r}")
        if not permits(who, facts, action):
            self.refuse(who, str(action), shown, "not permitted", via)
            raise NotFound(f"no item {shown!r}")
        return facts

    def _record(self, archive_code: str) -> dict[str, Any]:
        return self.layout.read_record(archive_code)

    # -- items ----------------------------------------------------------------------------

    def open_item(self, who: Principal, archive_code: str, via: str = "api") -> ItemView:
        self._reach(who, archive_code, Action.VIEW, via)
        view = self._item_view(archive_code)
        self.store.audit(who.username, "view", archive_code, {"via": via})
        return view

    def _item_view(self, archive_code: str) -> ItemView:
        record = self._record(archive_code)
        row = self.store.item(archive_code)
        assert row is not None
        entry = self.store.catalogue_entry(archive_code)
        catalogue = entry.to_dict() if entry else dict(record.get("catalogue") or {})
        in_pdf = set(packaged_pages(record))
        pages = [
            {
                "page": p["page"],
                "text": join_lines([ln["text"] for ln in p.get("lines", [])]),
                "lines": p.get("lines", []),
                "blank": p.get("blank", False),
                "confidence": p.get("confidence"),
                "rotation": p.get("rotation"),
                "skew_deg": p.get("skew_deg"),
                "width": p.get("width"),
                "height": p.get("height"),
                "source": p.get("source"),
                "dpi": p.get("dpi"),
                "packaged": p["page"] in in_pdf,
                "error": p.get("error"),
            }
            for p in record["pages"]
        ]
        return ItemView(
            archive_code,
            catalogue.get("title") or archive_code,
            catalogue,
            pages,
            row.qa_status,
            row.visible,
            row.pdf_sha256,
            record,
        )

    def pdf(self, who: Principal, archive_code: str, via: str = "api") -> Path:
        self._reach(who, archive_code, Action.DOWNLOAD, via)
        path = self.layout.pdf(archive_code)
        if not path.is_file():
            self.refuse(who, "download", archive_code, "the PDF is missing from the archive", via)
            raise NotFound(f"the PDF of {archive_code} is missing from the archive")
        self.store.audit(who.username, "download", archive_code, {"via": via})
        return path

    def page_image(self, who: Principal, archive_code: str, page: int, size: Size, via: str = "api") -> Path:
        self._reach(who, archive_code, Action.PAGE, via)
        from pipeline.pageimages import page_png

        record = self._record(archive_code)
        path = self.layout.pdf(archive_code)
        try:
            png = page_png(self.settings.work_dir, record, path, page, size)
        except CaptureError as exc:
            self.refuse(who, "page", archive_code, str(exc), via)
            raise NotFound(str(exc)) from exc
        self.store.audit(who.username, "page", archive_code, {"page": page, "size": size, "via": via})
        return png

    # -- QA -------------------------------------------------------------------------------

    def _require_qa(self, who: Principal, what: str, via: str) -> None:
        if not who.is_qa:
            self.refuse(who, what, "", "QA staff only", via)
            raise Forbidden("only QA staff may do this")

    def qa_queue(
        self,
        who: Principal,
        *,
        status: str | None = "open",
        batch: str = "",
        finding: str = "",
        older_days: int = 0,
        via: str = "api",
    ) -> Queue:
        """The cases of items `who` may act on; the filters, counts and batch names only from those."""
        self._require_qa(who, "qa.queue", via)
        if not 0 <= older_days <= MAX_AGE_DAYS:
            raise QaError(f"'older than' must be between 0 and {MAX_AGE_DAYS} days")
        cases = self.store.cases(status)
        levels = self.store.catalogue_entries(c.archive_code for c in cases)
        reachable = []
        for case in cases:
            entry = levels.get(case.archive_code)
            facts = item_facts_for(case.archive_code, entry)
            if permits(who, facts, Action.QA_VIEW):
                reachable.append(case)
        now = datetime.now(UTC)
        rows = []
        for case in reachable:
            opened = case.opened_at if case.opened_at.tzinfo else case.opened_at.replace(tzinfo=UTC)
            age = now - opened
            codes = sorted({f["code"] for f in case.findings})
            if batch and case.batch_id != batch:
                continue
            if finding and finding not in codes:
                continue
            if older_days and age < timedelta(days=older_days):
                continue
            rows.append(QueueRow(case, age.days, codes))
        kinds = Counter(f["code"] for c in reachable for f in c.findings)
        self.store.audit(
            who.username,
            "qa.queue",
            "",
            {"status": status, "batch": batch, "finding": finding, "shown": len(rows), "via": via},
        )
        return Queue(rows, len(reachable), sorted(kinds.items()), sorted({c.batch_id for c in reachable}))

    def qa_case(self, who: Principal, archive_code: str, via: str = "api") -> CaseView:
        self._require_qa(who, "qa.view", via)
        self._reach(who, archive_code, Action.QA_VIEW, via)
        view = self._item_view(archive_code)
        self.store.audit(who.username, "qa.view", archive_code, {"via": via})
        return CaseView(
            view,
            self.store.open_case(archive_code),
            self.store.catalogue_entry(archive_code),
            self.store.decisions(archive_code),
        )

    def decide(
        self,
        who: Principal,
        archive_code: str,
        action: str,
        reason: str,
        *,
        pages: int | None = None,
        via: str = "api",
    ) -> Outcome:
        """Approve, send for rescanning or correct the page count, within `who`'s reach."""
        self._require_qa(who, "qa.decide", via)
        self._reach(who, archive_code, Action.QA_DECIDE, via)
        from pipeline import qa

        if action == "approve":
            return qa.approve(self.store, self.index, self.settings, archive_code, reason, who.username)
        if action == "rescan":
            return qa.rescan(self.store, self.index, self.settings, archive_code, reason, who.username)
        if action == "correct":
            if pages is None:
                raise QaError("a page count is required for a correction (--pages)")
            return qa.correct(
                self.store, self.index, self.settings, archive_code, pages, reason, who.username
            )
        raise QaError(f"unknown QA action {action[:20]!r}; use {', '.join(QA_ACTIONS)}")

    def next_case(self, who: Principal, after: str) -> str | None:
        """The next open case `who` may act on (for 'decide, then the next one')."""
        for row in self.qa_queue(who, via="internal").rows:
            if row.case.archive_code != after:
                return row.case.archive_code
        return None

    # -- batches --------------------------------------------------------------------------

    def batch_overview(self, who: Principal, *, everything: bool, via: str = "api") -> BatchOverview:
        """Batches (today's, or all): everything for unrestricted staff; for a person limited by
        clearance or fonds, only batches holding items within reach, counted over those items."""
        self._require_qa(who, "batches", via)
        today = datetime.now(UTC).date()
        unrestricted = who.clearance >= HIGHEST and not who.fonds
        items_by_batch: dict[str, list[Any]] = {}
        if not unrestricted:
            rows = self.store.items()
            entries = self.store.catalogue_entries(r.archive_code for r in rows)
            for item in rows:
                facts = item_facts_for(item.archive_code, entries.get(item.archive_code), item.visible)
                if permits(who, facts, Action.QA_VIEW):
                    items_by_batch.setdefault(item.batch_id, []).append(item)
        lines = []
        for row in sorted(self.store.batches(), key=lambda b: b.started_at, reverse=True):
            started = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
            if not everything and started.date() != today:
                continue
            if unrestricted:
                lines.append(BatchLine(row, row.summary or {}))
                continue
            mine = items_by_batch.get(row.batch_id)
            if not mine:
                continue
            totals = {
                "items": len(mine),
                "pages": sum(i.pages for i in mine),
                "straight_through": sum(1 for i in mine if i.verdict == "passed"),
                "waiting_for_qa": sum(1 for i in mine if i.verdict != "passed"),
                "pages_per_minute": (row.summary or {}).get("pages_per_minute"),
            }
            lines.append(BatchLine(row, totals))
        waiting: list[str] = []
        if unrestricted:
            from pipeline import watch

            areas = watch.Areas(self.settings.watch_dir)
            if areas.incoming.is_dir():
                waiting = [p.name for p in watch.candidates(areas)]
        self.store.audit(who.username, "batches", "", {"all": everything, "via": via})
        return BatchOverview(lines, waiting)


def item_facts_for(archive_code: str, entry: CatalogueEntry | None, visible: bool = False) -> ItemFacts:
    """Facts from an entry already read (the queue reads all entries at once)."""
    from pipeline.security import fonds_of, rank

    return ItemFacts(
        archive_code, rank(entry.security_level if entry else ""), fonds_of(archive_code), visible
    )
