"""Batches, items, their packages and findings, and items waiting to be indexed again."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from pipeline.models import ItemResult
from pipeline.qagate import flags_of, gate, searchable
from pipeline.store.base import StoreBase
from pipeline.store.qa import open_case_in
from pipeline.store.schema import (
    BatchRow,
    FindingRow,
    IndexPendingRow,
    ItemRow,
    PackageRow,
    QaCaseRow,
    now,
)
from pipeline.verify import not_packaged


class ItemStore(StoreBase):
    # ---------------------------------------------------------------- batches
    def start_batch(self, batch_id: str, path: str, manifest: dict[str, Any] | None = None) -> None:
        with self.session() as session:
            row = session.get(BatchRow, batch_id)
            if row is None:
                session.add(BatchRow(batch_id=batch_id, path=path, status="processing", manifest=manifest))
            else:
                row.path, row.status, row.finished_at = path, "processing", None
                row.manifest = manifest or row.manifest

    def count_attempt(self, batch_id: str, path: str) -> int:
        """Note that one more process starts on the batch; how many have, this one included."""
        with self.session() as session:
            row = session.get(BatchRow, batch_id)
            if row is None:
                row = BatchRow(batch_id=batch_id, path=path, status="processing", attempts=0)
                session.add(row)
            row.attempts = (row.attempts or 0) + 1
            return row.attempts

    def set_batch_plan(self, batch_id: str, items: int, pages: int) -> None:
        with self.session() as session:
            row = session.get(BatchRow, batch_id)
            if row is not None:
                row.items_planned, row.pages_planned = items, pages

    def set_batch_flow_run(self, batch_id: str, path: str, flow_run_id: str) -> None:
        """Remember the flow run processing the batch (server mode), so another watcher follows it."""
        with self.session() as session:
            row = session.get(BatchRow, batch_id)
            if row is None:
                row = BatchRow(batch_id=batch_id, path=path, status="processing", attempts=0)
                session.add(row)
            row.flow_run_id = flow_run_id

    def items_done(self, batch_id: str) -> int:
        """Items recorded by this batch so far (its progress)."""
        with self.session() as session:
            count = session.scalar(select(func.count()).where(ItemRow.batch_id == batch_id))
            return int(count or 0)

    def batch_attempts(self, batch_id: str) -> int:
        with self.session() as session:
            row = session.get(BatchRow, batch_id)
            return int(row.attempts or 0) if row is not None else 0

    def finish_batch(
        self,
        batch_id: str,
        status: str,
        report_path: str | None,
        summary: dict[str, Any] | None,
        reason: str = "",
    ) -> None:
        with self.session() as session:
            row = session.get(BatchRow, batch_id)
            if row is None:
                row = BatchRow(batch_id=batch_id, path="", started_at=now())
                session.add(row)
            row.status, row.finished_at = status, now()
            row.report_path, row.summary, row.reason = report_path, summary, reason or None

    def batch(self, batch_id: str) -> BatchRow | None:
        with self.session() as session:
            return session.get(BatchRow, batch_id)

    def batches(self) -> list[BatchRow]:
        with self.session() as session:
            return list(session.scalars(select(BatchRow).order_by(BatchRow.started_at.desc())))

    # ---------------------------------------------------------------- items
    def record_item(self, batch_id: str, item: ItemResult) -> ItemRow:
        """Upsert the item, its package history and findings, and apply the QA gate
        (pipeline.qagate) in the same transaction; returns the item row.

        Idempotent for the same package (same PDF SHA-256): re-running never duplicates a
        package, a finding or a case. A new package supersedes the current one.

        An item not packaged because a page failed in our hands (verify.PROCESSING_FAILED: the
        run, not the scan) opens no QA case and leaves the item's package, QA state and
        visibility as they were: an earlier package stays the archived one, found as before.
        """
        if item.pdf_sha256 is None and not_packaged(item.findings):
            return self._record_unprocessed(batch_id, item)
        flags = flags_of(item)
        with self.session() as session:
            current = session.scalars(
                select(PackageRow).where(
                    PackageRow.archive_code == item.archive_code, PackageRow.status == "current"
                )
            ).first()
            new_package = item.pdf_sha256 is not None and (
                current is None or current.pdf_sha256 != item.pdf_sha256
            )
            open_case = open_case_in(session, item.archive_code)
            if new_package:
                if current is not None:
                    current.status, current.superseded_at = "superseded", now()
                # the case was about an earlier package, or about a run that packaged nothing
                if open_case is not None:
                    open_case.status, open_case.closed_at = "superseded", now()
                    open_case = None
                session.add(
                    PackageRow(
                        archive_code=item.archive_code,
                        batch_id=batch_id,
                        pdf_sha256=item.pdf_sha256 or "",
                        location=str(Path(item.pdf_path).parent) if item.pdf_path else "",
                    )
                )
            row = session.get(ItemRow, item.archive_code)
            decided = gate(
                flags,
                new_package=new_package,
                known=row is not None,
                current_status=row.qa_status if row is not None else "none",
                case_open=open_case is not None,
            )
            if decided.open_case:
                session.add(
                    QaCaseRow(
                        archive_code=item.archive_code,
                        batch_id=batch_id,
                        pdf_sha256=item.pdf_sha256,
                        findings=flags,
                    )
                )
            values = {
                "batch_id": batch_id,
                "verdict": str(item.verdict),
                "qa_status": decided.qa_status,
                "visible": searchable(decided.qa_status, item.pdf_sha256),
                "pages": item.page_count,
                "blank_pages": item.blank_pages,
                "pdf_path": item.pdf_path,
                "record_path": item.record_path,
                "pdf_sha256": item.pdf_sha256,
                "pdfa_valid": item.pdfa_valid,
                "updated_at": now(),
            }
            if row is None:
                row = ItemRow(archive_code=item.archive_code, **values)
                session.add(row)
            else:
                for key, value in values.items():
                    setattr(row, key, value)
            self._replace_findings(session, batch_id, item)
            session.flush()
            return row

    def _record_unprocessed(self, batch_id: str, item: ItemResult) -> ItemRow:
        with self.session() as session:
            row = session.get(ItemRow, item.archive_code)
            if row is None:
                row = ItemRow(
                    archive_code=item.archive_code,
                    batch_id=batch_id,
                    verdict=str(item.verdict),
                    qa_status="none",
                    visible=False,
                    pages=item.page_count,
                    blank_pages=item.blank_pages,
                    updated_at=now(),
                )
                session.add(row)
            else:  # the verdict of this run; the package and its QA state are the earlier one's
                row.batch_id, row.verdict, row.updated_at = batch_id, str(item.verdict), now()
            self._replace_findings(session, batch_id, item)
            session.flush()
            return row

    def _replace_findings(self, session: Any, batch_id: str, item: ItemResult) -> None:
        session.execute(delete(FindingRow).where(FindingRow.archive_code == item.archive_code))
        for f in item.findings:
            session.add(
                FindingRow(
                    archive_code=item.archive_code,
                    batch_id=batch_id,
                    code=f.code,
                    severity=str(f.severity),
                    message=f.message,
                    page=f.page,
                    file=f.file,
                )
            )

    def item(self, archive_code: str) -> ItemRow | None:
        with self.session() as session:
            return session.get(ItemRow, archive_code)

    def items(self) -> list[ItemRow]:
        with self.session() as session:
            return list(session.scalars(select(ItemRow).order_by(ItemRow.archive_code)))

    def items_changed_since(self, when: datetime) -> list[str]:
        """Archive codes whose item row (package, verdict, visibility) changed at or after `when`."""
        with self.session() as session:
            return list(session.scalars(select(ItemRow.archive_code).where(ItemRow.updated_at >= when)))

    def findings(self, archive_code: str) -> list[FindingRow]:
        with self.session() as session:
            return list(session.scalars(select(FindingRow).where(FindingRow.archive_code == archive_code)))

    def packages(self, archive_code: str) -> list[PackageRow]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(PackageRow).where(PackageRow.archive_code == archive_code).order_by(PackageRow.id)
                )
            )

    # ---------------------------------------------------------------- index retries
    def mark_index_pending(self, archive_code: str, reason: str) -> None:
        with self.session() as session:
            row = session.get(IndexPendingRow, archive_code)
            if row is None:
                session.add(IndexPendingRow(archive_code=archive_code, reason=reason))
            else:
                row.reason = reason
                row.attempts += 1

    def index_pending(self) -> list[IndexPendingRow]:
        with self.session() as session:
            return list(session.scalars(select(IndexPendingRow).order_by(IndexPendingRow.since)))

    def clear_index_pending(self, archive_code: str) -> None:
        with self.session() as session:
            session.execute(delete(IndexPendingRow).where(IndexPendingRow.archive_code == archive_code))
