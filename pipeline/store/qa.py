"""QA cases and decisions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pipeline.qagate import searchable
from pipeline.store.audit import append_audit
from pipeline.store.base import StoreBase
from pipeline.store.schema import CatalogueRow, DecisionRow, ItemRow, QaCaseRow, now


class QaStore(StoreBase):
    # ---------------------------------------------------------------- QA
    def cases(self, status: str | None = "open", batch_id: str | None = None) -> list[QaCaseRow]:
        query = select(QaCaseRow).order_by(QaCaseRow.opened_at, QaCaseRow.id)
        if status:
            query = query.where(QaCaseRow.status == status)
        if batch_id:
            query = query.where(QaCaseRow.batch_id == batch_id)
        with self.session() as session:
            return list(session.scalars(query))

    def open_case(self, archive_code: str) -> QaCaseRow | None:
        with self.session() as session:
            return open_case_in(session, archive_code)

    def decide(
        self,
        archive_code: str,
        action: str,
        reason: str,
        user: str,
        *,
        close_as: str | None,
        details: dict[str, Any] | None = None,
        page_count: int | None = None,
        findings: list[dict[str, Any]] | None = None,
    ) -> DecisionRow:
        """Record a decision on the item's open case; close it as `close_as` (None keeps it open).

        One transaction that first takes the case's write lock: of two decisions sent at once,
        one is recorded and the other finds no open case. A correction's new page count and
        the case's remaining findings are written in the same transaction."""
        with self.session() as session:
            session.execute(  # the lock first (SQLite: the database's; PostgreSQL: the row's)
                update(QaCaseRow)
                .where(QaCaseRow.archive_code == archive_code, QaCaseRow.status == "open")
                .values(status="open")
            )
            case = open_case_in(session, archive_code)
            if case is None:
                raise LookupError(f"{archive_code} has no open QA case (decided meanwhile?)")
            if page_count is not None:
                session.execute(
                    update(CatalogueRow)
                    .where(CatalogueRow.archive_code == archive_code)
                    .values(page_count=page_count)
                )
            if findings is not None:
                case.findings = findings
            decision = DecisionRow(
                case_id=case.id,
                archive_code=archive_code,
                action=action,
                reason=reason,
                user=user,
                details=details,
            )
            session.add(decision)
            item = session.get(ItemRow, archive_code)
            if close_as is not None:
                case.status, case.closed_at = close_as, now()
                if item is not None:
                    item.qa_status = close_as
                    item.visible = searchable(close_as, item.pdf_sha256)
                    item.updated_at = now()
            session.flush()
            append_audit(
                session,
                user,
                f"qa.{action}",
                archive_code,
                {"reason": reason, "case": case.id, **(details or {})},
            )
            return decision

    def update_case_findings(self, archive_code: str, findings: list[dict[str, Any]]) -> None:
        with self.session() as session:
            case = open_case_in(session, archive_code)
            if case is not None:
                case.findings = findings

    def decisions(self, archive_code: str) -> list[DecisionRow]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(DecisionRow)
                    .where(DecisionRow.archive_code == archive_code)
                    .order_by(DecisionRow.id)
                )
            )


def open_case_in(session: Session, archive_code: str) -> QaCaseRow | None:
    query = select(QaCaseRow).where(QaCaseRow.archive_code == archive_code, QaCaseRow.status == "open")
    return session.scalars(query).first()
