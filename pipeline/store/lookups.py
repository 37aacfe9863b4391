"""Access requests and the grants they become, and the lookup register (查档登记)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from pipeline.errors import AccessRequestError
from pipeline.statedb import grant_codes
from pipeline.store.audit import append_audit
from pipeline.store.base import StoreBase
from pipeline.store.schema import AccessRequestRow, LookupRow, now


class LookupStore(StoreBase):
    # ---------------------------------------------------------------- requests and grants
    def add_access_request(
        self, user_id: str, username: str, archive_code: str, purpose: str, days: int
    ) -> AccessRequestRow:
        with self.session() as session:
            pending = session.scalars(
                select(AccessRequestRow.id).where(
                    AccessRequestRow.user_id == user_id,
                    AccessRequestRow.archive_code == archive_code,
                    AccessRequestRow.status == "pending",
                )
            ).first()
            if pending is not None:
                raise AccessRequestError(f"you already asked for {archive_code} (request {pending}, pending)")
            row = AccessRequestRow(
                user_id=user_id,
                username=username[:100],
                archive_code=archive_code,
                purpose=purpose,
                days=days,
                requested_at=now(),
                status="pending",
            )
            session.add(row)
            session.flush()
            append_audit(
                session,
                username,
                "access.request",
                archive_code,
                {"request": row.id, "purpose": purpose[:500], "days": days},
            )
            return row

    def access_request(self, request_id: int) -> AccessRequestRow | None:
        with self.session() as session:
            return session.get(AccessRequestRow, request_id)

    def access_requests(
        self, *, status: str | None = None, user_id: str | None = None, limit: int = 500
    ) -> list[AccessRequestRow]:
        query = select(AccessRequestRow).order_by(AccessRequestRow.id.desc()).limit(limit)
        if status:
            query = query.where(AccessRequestRow.status == status)
        if user_id is not None:
            query = query.where(AccessRequestRow.user_id == user_id)
        with self.session() as session:
            return list(session.scalars(query))

    def decide_access_request(
        self, request_id: int, *, approve: bool, by: str, reason: str, until: datetime | None
    ) -> AccessRequestRow:
        """Approve (a grant until `until`) or refuse a pending request, once."""
        status = "approved" if approve else "refused"
        with self.session() as session:
            done = session.execute(
                update(AccessRequestRow)
                .where(AccessRequestRow.id == request_id, AccessRequestRow.status == "pending")
                .values(
                    status=status,
                    decided_by=by[:100],
                    decided_at=now(),
                    decision_reason=reason,
                    granted_until=until if approve else None,
                )
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                raise AccessRequestError(f"request {request_id} is not pending (already decided?)")
            session.expire_all()
            row = session.get(AccessRequestRow, request_id)
            assert row is not None
            details: dict[str, Any] = {"request": request_id, "user": row.username, "reason": reason[:500]}
            if until is not None and approve:
                details["until"] = until.isoformat(timespec="seconds")
            append_audit(
                session, by, f"access.{'approve' if approve else 'refuse'}", row.archive_code, details
            )
            return row

    def revoke_access_grant(self, request_id: int, by: str, reason: str) -> AccessRequestRow:
        """End an approved grant now."""
        with self.session() as session:
            at = now()
            done = session.execute(
                update(AccessRequestRow)
                .where(
                    AccessRequestRow.id == request_id,
                    AccessRequestRow.status == "approved",
                    AccessRequestRow.granted_until > at,
                )
                .values(status="revoked", granted_until=at)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                raise AccessRequestError(f"request {request_id} holds no live grant")
            session.expire_all()
            row = session.get(AccessRequestRow, request_id)
            assert row is not None
            append_audit(
                session,
                by,
                "access.revoke",
                row.archive_code,
                {"request": request_id, "reason": reason[:500]},
            )
            return row

    def live_grant(self, user_id: str, archive_code: str) -> AccessRequestRow | None:
        """The grant `user_id` holds for exactly this item right now, if any."""
        if not user_id:
            return None
        with self.session() as session:
            query = (
                select(AccessRequestRow)
                .where(
                    AccessRequestRow.user_id == user_id,
                    AccessRequestRow.archive_code == archive_code,
                    AccessRequestRow.status == "approved",
                    AccessRequestRow.granted_until > now(),
                )
                .order_by(AccessRequestRow.granted_until.desc())
            )
            return session.scalars(query).first()

    def live_grant_codes(self, user_id: str) -> tuple[str, ...]:
        """The archive codes `user_id` holds a live grant for right now."""
        if not user_id:
            return ()
        with self.session() as session:  # the lean search path's statement (pipeline.statedb)
            connection = session.connection()
            return grant_codes(connection.connection, connection.dialect.name, user_id)

    # ---------------------------------------------------------------- the register
    def register_lookup(
        self, username: str, user_id: str, archive_code: str, action: str, via: str, request_id: int | None
    ) -> None:
        """One view or download: the register row and its audit row, in one transaction."""
        with self.session() as session:
            session.add(
                LookupRow(
                    at=now(),
                    username=username[:100],
                    user_id=user_id,
                    archive_code=archive_code,
                    action=action,
                    via=via[:20],
                    request_id=request_id,
                )
            )
            details: dict[str, Any] = {"via": via}
            if request_id is not None:
                details["grant"] = request_id
            append_audit(session, username, action, archive_code, details)

    def lookups(
        self, start: datetime, end: datetime, *, archive_code: str = "", username: str = "", limit: int = 0
    ) -> list[LookupRow]:
        """Register rows with start <= at < end, oldest first (the newest `limit` if given)."""
        query = select(LookupRow).where(LookupRow.at >= start, LookupRow.at < end)
        if archive_code:
            query = query.where(LookupRow.archive_code == archive_code)
        if username:
            query = query.where(LookupRow.username == username)
        if limit:
            query = query.order_by(LookupRow.id.desc()).limit(limit)
        with self.session() as session:
            rows = list(session.scalars(query))
        return sorted(rows, key=lambda r: r.id)

    def requests_by_id(self, ids: set[int]) -> dict[int, AccessRequestRow]:
        if not ids:
            return {}
        with self.session() as session:
            query = select(AccessRequestRow).where(AccessRequestRow.id.in_(sorted(ids)))
            return {row.id: row for row in session.scalars(query)}
