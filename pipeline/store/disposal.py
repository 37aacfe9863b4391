"""Disposal lists, appraisal decisions, approvals and tombstones; none of them is ever deleted.

Lists only move open -> approved -> executed; decisions are added while a list is open (the
latest per item counts); tombstones are written once. Every write here checks the list's state
inside its own transaction, and the database refuses anything else by trigger (migration 0004).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from pipeline.errors import DisposalError
from pipeline.store.audit import append_audit
from pipeline.store.base import StoreBase
from pipeline.store.schema import (
    DisposalDecisionRow,
    DisposalItemRow,
    DisposalListRow,
    ItemRow,
    PackageRow,
    QaCaseRow,
    TombstoneRow,
    now,
)

LIVE = ("open", "approved")


class DisposalStore(StoreBase):
    def create_disposal_list(self, due_by: int, user: str, items: list[dict[str, Any]]) -> DisposalListRow:
        """A new open list holding these items (archive_code, retention, start_date, due_date, catalogue)."""
        with self.session() as session:
            row = DisposalListRow(due_by=due_by, created_by=user[:100], status="open")
            session.add(row)
            session.flush()  # the list exists (and is open) before its items are added
            for item in items:
                session.add(DisposalItemRow(list_id=row.id, **item))
            session.flush()
            append_audit(session, user, "disposal.list", str(row.id), {"due_by": due_by, "items": len(items)})
            return row

    def disposal_list(self, list_id: int) -> DisposalListRow | None:
        with self.session() as session:
            return session.get(DisposalListRow, list_id)

    def disposal_lists(self) -> list[DisposalListRow]:
        with self.session() as session:
            return list(session.scalars(select(DisposalListRow).order_by(DisposalListRow.id)))

    def disposal_items(self, list_id: int) -> list[DisposalItemRow]:
        with self.session() as session:
            query = select(DisposalItemRow).where(DisposalItemRow.list_id == list_id)
            return list(session.scalars(query.order_by(DisposalItemRow.archive_code)))

    def disposal_decisions(self, list_id: int) -> list[DisposalDecisionRow]:
        """Every decision on the list, oldest first (the latest per item is the one that counts)."""
        with self.session() as session:
            query = select(DisposalDecisionRow).where(DisposalDecisionRow.list_id == list_id)
            return list(session.scalars(query.order_by(DisposalDecisionRow.id)))

    def codes_on_live_lists(self) -> set[str]:
        """Items on a list that is open or approved (not listed again until it is executed)."""
        with self.session() as session:
            query = (
                select(DisposalItemRow.archive_code)
                .join(DisposalListRow, DisposalListRow.id == DisposalItemRow.list_id)
                .where(DisposalListRow.status.in_(LIVE))
            )
            return set(session.scalars(query))

    def add_disposal_decision(
        self, list_id: int, archive_code: str, decision: str, keep_years: int | None, reason: str, user: str
    ) -> DisposalDecisionRow:
        with self.session() as session:
            listed = session.get(DisposalListRow, list_id, with_for_update=not self.is_sqlite)
            if listed is None:
                raise DisposalError(f"no disposal list {list_id}")
            if listed.status != "open":
                raise DisposalError(f"disposal list {list_id} is {listed.status}; its decisions are final")
            on_list = session.scalars(
                select(DisposalItemRow.id).where(
                    DisposalItemRow.list_id == list_id, DisposalItemRow.archive_code == archive_code
                )
            ).first()
            if on_list is None:
                raise DisposalError(f"{archive_code} is not on disposal list {list_id}")
            row = DisposalDecisionRow(
                list_id=list_id,
                archive_code=archive_code,
                decision=decision,
                keep_years=keep_years,
                reason=reason,
                user=user[:100],
                at=now(),
            )
            session.add(row)
            append_audit(
                session,
                user,
                "disposal.decide",
                archive_code,
                {"list": list_id, "decision": decision, "keep_years": keep_years, "reason": reason[:500]},
            )
            return row

    def approve_disposal_list(self, list_id: int, user: str) -> DisposalListRow:
        """Approve an open list whose every item has a decision, by someone who decided none of them."""
        with self.session() as session:
            listed = session.get(DisposalListRow, list_id, with_for_update=not self.is_sqlite)
            if listed is None:
                raise DisposalError(f"no disposal list {list_id}")
            if listed.status != "open":
                raise DisposalError(f"disposal list {list_id} is already {listed.status}")
            decisions = list(
                session.scalars(select(DisposalDecisionRow).where(DisposalDecisionRow.list_id == list_id))
            )
            deciders = {d.user for d in decisions}
            if user in deciders:
                raise DisposalError(
                    f"{user} made appraisal decisions on list {list_id}, so cannot approve it: a second, "
                    "different person must approve (two-person rule)"
                )
            listed_codes = set(
                session.scalars(
                    select(DisposalItemRow.archive_code).where(DisposalItemRow.list_id == list_id)
                )
            )
            undecided = sorted(listed_codes - {d.archive_code for d in decisions})
            if undecided:
                shown = ", ".join(undecided[:5]) + (" ..." if len(undecided) > 5 else "")
                raise DisposalError(
                    f"{len(undecided)} item(s) on list {list_id} have no decision yet: {shown}"
                )
            done = session.execute(
                update(DisposalListRow)
                .where(DisposalListRow.id == list_id, DisposalListRow.status == "open")
                .values(status="approved", approved_by=user[:100], approved_at=now())
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                raise DisposalError(f"disposal list {list_id} changed while it was being approved")
            append_audit(session, user, "disposal.approve", str(list_id), {"items": len(listed_codes)})
            session.expire_all()
            row = session.get(DisposalListRow, list_id)
            assert row is not None
            return row

    def tombstone_of(self, archive_code: str, list_id: int) -> TombstoneRow | None:
        with self.session() as session:
            query = select(TombstoneRow).where(
                TombstoneRow.archive_code == archive_code, TombstoneRow.list_id == list_id
            )
            return session.scalars(query).first()

    def tombstones(self, archive_code: str | None = None) -> list[TombstoneRow]:
        query = select(TombstoneRow).order_by(TombstoneRow.id)
        if archive_code:
            query = query.where(TombstoneRow.archive_code == archive_code)
        with self.session() as session:
            return list(session.scalars(query))

    def record_tombstone(self, values: dict[str, Any], user: str) -> TombstoneRow:
        """Write the tombstone and take the item out of the archive's current state, at once:
        no package, hidden, its packages marked disposed, an open QA case closed."""
        code = values["archive_code"]
        with self.session() as session:
            listed = session.get(DisposalListRow, values["list_id"])
            if listed is None or listed.status != "approved":
                raise DisposalError(f"disposal list {values['list_id']} is not approved; nothing was touched")
            row = TombstoneRow(**values)
            session.add(row)
            item = session.get(ItemRow, code)
            if item is not None:
                item.pdf_sha256, item.pdf_path, item.record_path = None, None, None
                item.visible, item.qa_status, item.updated_at = False, "disposed", now()
            session.execute(
                update(PackageRow).where(PackageRow.archive_code == code).values(status="disposed")
            )
            session.execute(
                update(QaCaseRow)
                .where(QaCaseRow.archive_code == code, QaCaseRow.status == "open")
                .values(status="disposed", closed_at=now())
            )
            session.flush()
            append_audit(
                session,
                user,
                "disposal.destroy",
                code,
                {"list": values["list_id"], "files": len(values["destroyed"]), "witness": values["witness"]},
            )
            return row

    def close_disposal_list(self, list_id: int, user: str, witness: str, destroyed: int) -> DisposalListRow:
        with self.session() as session:
            done = session.execute(
                update(DisposalListRow)
                .where(DisposalListRow.id == list_id, DisposalListRow.status == "approved")
                .values(status="executed", executed_by=user[:100], executed_at=now(), witness=witness[:200])
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                raise DisposalError(f"disposal list {list_id} is not approved")
            append_audit(
                session, user, "disposal.execute", str(list_id), {"destroyed": destroyed, "witness": witness}
            )
            session.expire_all()
            row = session.get(DisposalListRow, list_id)
            assert row is not None
            return row

    def retention_decisions(
        self, archive_code: str | None = None
    ) -> dict[str, tuple[str, int | None, datetime]]:
        """Per item, the decision that counts on its latest approved (or executed) list:
        (decision, keep_years, when the list was approved)."""
        query = (
            select(DisposalDecisionRow, DisposalListRow.approved_at)
            .join(DisposalListRow, DisposalListRow.id == DisposalDecisionRow.list_id)
            .where(DisposalListRow.status.in_(("approved", "executed")))
            .order_by(DisposalListRow.id, DisposalDecisionRow.id)
        )
        if archive_code is not None:
            query = query.where(DisposalDecisionRow.archive_code == archive_code)
        found: dict[str, tuple[str, int | None, datetime]] = {}
        with self.session() as session:
            for decision, approved_at in session.execute(query):
                at = approved_at or decision.at
                found[decision.archive_code] = (decision.decision, decision.keep_years, at)
        return found
