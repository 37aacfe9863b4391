"""The audit log: the ORM store's side of the chain (pipeline/auditchain.py holds the chain itself).

Each row's hash covers its own fields and the previous row's hash; a one-row head table holds
the number of rows and the last hash. Deleting, changing or inserting a row anywhere, or
cutting rows off the end, therefore breaks a link that `verify_chain` names. Rows are appended
by `pipeline.auditchain.append` on the session's own connection, the same code the lean search
path appends with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from pipeline import auditchain
from pipeline.auditchain import GENESIS, HEAD_ID, row_hash
from pipeline.keys import fingerprint
from pipeline.store.base import StoreBase
from pipeline.store.schema import AuditHeadRow, AuditRow

__all__ = ["GENESIS", "HEAD_ID", "AuditStore", "ChainCheck", "append_audit", "row_hash"]


def append_audit(
    session: Session, user: str, action: str, target: str = "", details: dict[str, Any] | None = None
) -> int:
    """Append one row to the chain inside the caller's transaction; the new row's id."""
    session.flush()  # the caller's pending rows are written first, in the order they were made
    connection = session.connection()
    key: bytes = session.info.get("audit_key", b"")
    mark = auditchain.append(
        connection.connection, connection.dialect.name, key, user, action, target, details
    )
    anchor: Path | None = session.info.get("audit_anchor")
    if anchor is not None:
        event.listen(session, "after_commit", lambda _s: auditchain.write_anchor(anchor, mark), once=True)
    row_id: int = mark["last_id"]
    return row_id


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
        key: bytes = getattr(self, "audit_key", b"")
        keyed_since: int | None = None
        hashes: dict[int, str] = {}
        anchor = self._anchor()
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
                    if row.key_id:
                        keyed_since = row.id if keyed_since is None else keyed_since
                        if row.key_id != fingerprint(key):
                            check.problems.append(f"row {row.id}: hashed with a key this home does not hold")
                    elif keyed_since is not None:
                        check.problems.append(
                            f"row {row.id}: not keyed, though rows from {keyed_since} on are (rewritten?)"
                        )
                    expected = row_hash(
                        row.prev_hash,
                        row.id,
                        row.at,
                        row.user,
                        row.action,
                        row.target,
                        row.details,
                        key if row.key_id else b"",
                    )
                    if row.hash != expected:
                        check.problems.append(f"row {row.id}: its content does not match its hash (changed)")
                    if anchor is not None and row.id == anchor.get("last_id"):
                        hashes[row.id] = row.hash
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
        if anchor is not None:
            last_id, last_hash = int(anchor.get("last_id", 0)), str(anchor.get("last_hash", ""))
            if check.rows < int(anchor.get("rows", 0)) or hashes.get(last_id) != last_hash:
                check.problems.append(
                    f"the anchor outside the database ({self.anchor_path}) names row {last_id} "
                    f"of {anchor.get('rows')} with another hash: rows were removed or rewritten"
                )
        return check

    def _anchor(self) -> dict[str, Any] | None:
        path: Path | None = getattr(self, "anchor_path", None)
        if path is None or not path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
        except (OSError, ValueError):
            return {"rows": -1, "last_id": -1, "last_hash": "unreadable"}
