"""What searchers and QA staff can do: one service for the CLI, the web pages and the HTTP API.

Every request names who asks (a Principal) and goes through pipeline.access: the search
backend applies the person's filter inside its query; items, PDFs, page images, thumbnails,
QA cases and decisions are checked with `access.permits`. An item outside a person's reach
is answered exactly like one that does not exist (NotFound), and the refusal is audited.
A live access grant (pipeline.lookups) lets its holder reach exactly its item: the search filter
carries the person's granted codes, and the item routes look the grant up. Every search, view,
download, page image, decision and refusal is written to the audit log; every view and download
also to the lookup register (查档登记) with the grant it used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.access import (
    GRANTABLE,
    Action,
    ItemFacts,
    Principal,
    item_facts,
    permits,
    reaches_fonds,
)
from pipeline.archive import ArchiveLayout
from pipeline.errors import CaptureError, Forbidden, NotFound, QaError, UnsafeNameError
from pipeline.index import open_backend
from pipeline.index.analysis import join_lines
from pipeline.index.base import SearchBackend, SearchResult
from pipeline.intake import validate_archive_code
from pipeline.models import CatalogueEntry
from pipeline.pageimages import Size, packaged_pages
from pipeline.retention import item_retention
from pipeline.searching import audited_search
from pipeline.security import HIGHEST
from pipeline.settings import Settings
from pipeline.store import BatchRow, DecisionRow, QaCaseRow, Store, open_store
from pipeline.store.schema import AccessRequestRow

if TYPE_CHECKING:
    from pipeline.fixity import FixityOverview
    from pipeline.lookups import AccessOverview, RegisterLine
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
    retention: dict[str, Any] = field(default_factory=dict)  # class, start and due date (pipeline.retention)

    def to_dict(self, *, for_qa: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "archive_code": self.archive_code,
            "title": self.title,
            "catalogue": self.catalogue,
            "retention": self.retention,
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
    done: int = 0  # items finished so far (a batch still running, here or on the cluster)


@dataclass(frozen=True)
class BatchOverview:
    rows: list[BatchLine]
    waiting: list[str] = field(default_factory=list)


class ArchiveService:
    def __init__(
        self, settings: Settings, store: Store | None = None, index: SearchBackend | None = None
    ) -> None:
        self.settings = settings
        self.store = store or open_store(settings)
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
        return audited_search(
            self.store,
            self.index,
            who,
            text,
            filters,
            limit=limit,
            offset=offset,
            cursor=cursor,
            facets=facets,
            include_held=include_held,
            via=via,
        )

    # -- the access check -----------------------------------------------------------------

    def _reach(self, who: Principal, archive_code: str, action: Action, via: str) -> ItemFacts:
        """The item's facts if `who` may do `action` on it; NotFound (audited) otherwise."""
        return self._reach_granted(who, archive_code, action, via)[0]

    def _reach_granted(
        self, who: Principal, archive_code: str, action: Action, via: str
    ) -> tuple[ItemFacts, int | None]:
        """As `_reach`, and the id of the live grant it took to reach the item (None if none did)."""
        shown = archive_code[:100]
        try:
            validate_archive_code(archive_code)
        except UnsafeNameError:
            self.refuse(who, str(action), shown, "not an archive code", via)
            raise NotFound(f"no item {shown!r}") from None
        facts = item_facts(self.store, archive_code)
        if facts is None or (facts.packaged and not self.layout.record(archive_code).is_file()):
            self.refuse(who, str(action), shown, "no such item", via)
            raise NotFound(f"no item {shown!r}")
        if permits(who, facts, action):
            return facts, None
        grant = self.store.live_grant(who.user_id, archive_code) if action in GRANTABLE else None
        if grant is not None and permits(who, facts, action, granted=True):
            return facts, grant.id
        self.refuse(who, str(action), shown, "not permitted", via)
        raise NotFound(f"no item {shown!r}")

    def _record(self, archive_code: str) -> dict[str, Any]:
        return self.layout.read_record(archive_code)

    # -- items ----------------------------------------------------------------------------

    def open_item(self, who: Principal, archive_code: str, via: str = "api") -> ItemView:
        _, grant = self._reach_granted(who, archive_code, Action.VIEW, via)
        view = self._item_view(archive_code)
        self.store.register_lookup(who.username, who.user_id, archive_code, "view", via, grant)
        return view

    def _item_view(self, archive_code: str) -> ItemView:
        row = self.store.item(archive_code)
        if row is not None and row.pdf_sha256 is None:  # a failed item: what the state store knows
            record: dict[str, Any] = {
                "archive_code": archive_code,
                "pages": [],
                "findings": [
                    {
                        "code": f.code,
                        "message": f.message,
                        "severity": f.severity,
                        "page": f.page,
                        "file": f.file,
                    }
                    for f in self.store.findings(archive_code)
                ],
            }
        else:
            record = self._record(archive_code)
        assert row is not None
        entry = self.store.catalogue_entry(archive_code)
        catalogue = entry.to_dict() if entry else dict(record.get("catalogue") or {})
        in_pdf = set(packaged_pages(record))
        retention = item_retention(self.store, self.settings.retention, entry)
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
            retention,
        )

    def pdf(self, who: Principal, archive_code: str, via: str = "api") -> Path:
        _, grant = self._reach_granted(who, archive_code, Action.DOWNLOAD, via)
        path = self.layout.pdf(archive_code)
        if not path.is_file():
            self.refuse(who, "download", archive_code, "the PDF is missing from the archive", via)
            raise NotFound(f"the PDF of {archive_code} is missing from the archive")
        self.store.register_lookup(who.username, who.user_id, archive_code, "download", via, grant)
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

        try:
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
        except QaError as exc:  # a decision that could not be made is on record too
            self.refuse(who, "qa.decide", archive_code, str(exc), via)
            raise

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
                running = row.status == "processing"
                lines.append(
                    BatchLine(row, row.summary or {}, self.store.items_done(row.batch_id) if running else 0)
                )
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

    # -- access requests, the lookup register, fixity -----------------------------------------

    def request_access(
        self, who: Principal, archive_code: str, purpose: str, days: int | None = None
    ) -> AccessRequestRow:
        from pipeline.lookups import request_access

        return request_access(self.settings, self.store, who, archive_code, purpose, days)

    def access_requests(self, who: Principal, via: str = "api") -> AccessOverview:
        """`who`'s own requests; for archivists also the pending ones they may decide, and decisions."""
        from pipeline.lookups import AccessOverview

        mine = self.store.access_requests(user_id=who.user_id) if who.user_id else []
        pending: list[AccessRequestRow] = []
        decided: list[AccessRequestRow] = []
        if who.can_grant:
            rows = [r for r in self.store.access_requests(limit=300) if reaches_fonds(who, r.archive_code)]
            pending = [r for r in rows if r.status == "pending"]
            decided = [r for r in rows if r.status != "pending"][:50]
        self.store.audit(who.username, "access.list", "", {"pending": len(pending), "via": via})
        return AccessOverview(mine, pending, decided)

    def decide_access(
        self, who: Principal, request_id: int, *, approve: bool, reason: str, days: int | None = None
    ) -> AccessRequestRow:
        from pipeline.lookups import decide_request

        return decide_request(
            self.settings, self.store, who, request_id, approve=approve, reason=reason, days=days
        )

    def lookup_register(
        self, who: Principal, start: date, end: date, *, archive_code: str = "", via: str = "api"
    ) -> list[RegisterLine]:
        from pipeline.lookups import register

        if not who.can_grant:
            self.refuse(who, "lookups", "", "archivists only", via)
            raise Forbidden("only archivists (or admins) read the lookup register")
        lines = register(self.store, start, end, archive_code=archive_code, limit=1000)
        self.store.audit(
            who.username, "lookups", archive_code, {"from": str(start), "to": str(end), "via": via}
        )
        return lines

    def fixity_overview(self, who: Principal, via: str = "api") -> FixityOverview:
        """The last fixity runs, every package whose latest check found damage, and coverage."""
        if not who.is_admin:
            self.refuse(who, "fixity", "", "admins only", via)
            raise Forbidden("only admins see the fixity results")
        from pipeline.fixity import FixityOverview, primary_root

        root = str(primary_root(self.settings))
        since = datetime.now(UTC) - timedelta(days=self.settings.fixity.cycle_days)
        overview = FixityOverview(
            self.store.fixity_runs(limit=20),
            self.store.fixity_status(damaged_only=True),
            len(self.store.current_packages()),
            self.store.checked_since(root, since),
            self.settings.fixity.cycle_days,
        )
        self.store.audit(who.username, "fixity.view", "", {"damaged": len(overview.damaged), "via": via})
        return overview


def item_facts_for(archive_code: str, entry: CatalogueEntry | None, visible: bool = False) -> ItemFacts:
    """Facts from an entry already read (the queue reads all entries at once)."""
    from pipeline.security import fonds_of, rank

    return ItemFacts(
        archive_code, rank(entry.security_level if entry else ""), fonds_of(archive_code), visible
    )
