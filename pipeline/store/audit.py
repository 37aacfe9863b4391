"""The audit log: append-only rows chained by SHA-256, and the check that finds a broken chain.

Each row's hash covers its own fields and the previous row's hash; a one-row head table holds
the number of rows and the last hash. Deleting, changing or inserting a row anywhere, or
cutting rows off the end, therefore breaks a link that `verify_chain` names. Appends are
serialised by taking the head row's write lock first (an UPDATE before any read), so two
processes appending at once still build one chain, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pipeline.store.base import StoreBase
from pipeline.store.schema import AuditHeadRow, AuditRow, now

HEAD_ID = 1
GENESIS = "0" * 64
_MAX_TARGET = 2000


def _utc_text(at: datetime) -> str:
    """The same text for a time whether the database gave it back aware (PostgreSQL) or naive."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def row_hash(
    prev_hash: str, row_id: int, at: datetime, user: str, action: str, target: str, details: Any
) -> str:
    payload = json.dumps(
        [prev_hash, row_id, _utc_text(at), user, action, target, details],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def _plain(details: dict[str, Any] | None) -> dict[str, Any] | None:
    """Details as they will come back from the JSON column (so the hash can be recomputed)."""
    if details is None:
        return None
    data: dict[str, Any] = json.loads(json.dumps(details, ensure_ascii=False, default=str))
    return data


def append_audit(
    session: Session, user: str, action: str, target: str = "", details: dict[str, Any] | None = None
) -> AuditRow:
    """Append one row to the chain inside the caller's transaction."""
    locked = session.execute(
        update(AuditHeadRow).where(AuditHeadRow.id == HEAD_ID).values(rows=AuditHeadRow.rows + 1)
    )
    if not locked.rowcount:  # type: ignore[attr-defined]
        session.add(AuditHeadRow(id=HEAD_ID, rows=1, last_id=0, last_hash=GENESIS))
        session.flush()
    head = session.get(AuditHeadRow, HEAD_ID, populate_existing=True)
    assert head is not None
    row = AuditRow(
        at=now(),
        user=user[:100],
        action=action[:30],
        target=target[:_MAX_TARGET],
        details=_plain(details),
        prev_hash=head.last_hash or GENESIS,
    )
    session.add(row)
    session.flush()  # assigns the id the hash covers
    row.hash = row_hash(row.prev_hash, row.id, row.at, row.user, row.action, row.target, row.details)
    head.last_id, head.last_hash = row.id, row.hash
    session.flush()
    return row


@dataclass
class ChainCheck:
    rows: int = 0
    last_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


class AuditStore(StoreBase):
    def audit(self, user: str, action: str, target: str = "", details: dict[str, Any] | None = None) -> None:
        with self.session() as session:
            append_audit(session, user, action, target, details)

    def audit_log(self, action: str | None = None, limit: int | None = None) -> list[AuditRow]:
        query = select(AuditRow).order_by(AuditRow.id)
        if action:
            query = query.where(AuditRow.action == action)
        if limit:
            query = query.order_by(None).order_by(AuditRow.id.desc()).limit(limit)
        with self.session() as session:
            rows = list(session.scalars(query))
        return sorted(rows, key=lambda r: r.id)

    def verify_audit_chain(self, batch: int = 5000) -> ChainCheck:
        """Walk the whole log in order and recompute every link; name each break found."""
        check = ChainCheck()
        previous, previous_id = GENESIS, 0
        with self.session() as session:
            head = session.get(AuditHeadRow, HEAD_ID)
            after = 0
            while True:
                rows = list(
                    session.scalars(
                        select(AuditRow).where(AuditRow.id > after).order_by(AuditRow.id).limit(batch)
                    )
                )
                if not rows:
                    break
                for row in rows:
                    check.rows += 1
                    if row.prev_hash != previous:
                        gap = (
                            f" (rows {previous_id + 1}-{row.id - 1} are missing?)"
                            if row.id > previous_id + 1
                            else ""
                        )
                        check.problems.append(f"row {row.id}: the link to the row before does not match{gap}")
                    expected = row_hash(
                        row.prev_hash, row.id, row.at, row.user, row.action, row.target, row.details
                    )
                    if row.hash != expected:
                        check.problems.append(f"row {row.id}: its content does not match its hash (changed)")
                    previous, previous_id = row.hash, row.id
                after = rows[-1].id
            check.last_hash = previous
            if head is None:
                if check.rows:
                    check.problems.append("the chain's head record is missing")
            else:
                if head.rows != check.rows:
                    check.problems.append(
                        f"the head counts {head.rows} rows, the log holds {check.rows} "
                        "(rows removed or added)"
                    )
                if head.last_hash != previous or head.last_id != previous_id:
                    check.problems.append(
                        f"the head names row {head.last_id} as the last, the log ends at row {previous_id}"
                    )
        return check
