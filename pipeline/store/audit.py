"""The audit log: append-only rows chained by SHA-256, and the check that finds a broken chain.

Each row's hash covers its own fields and the previous row's hash; a one-row head table holds
the number of rows and the last hash. Deleting, changing or inserting a row anywhere, or
cutting rows off the end, therefore breaks a link that `verify_chain` names. Appends are
serialised by taking the head row's write lock first (an UPDATE before any read), so two
processes appending at once still build one chain, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from pipeline.keys import fingerprint
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
    prev_hash: str,
    row_id: int,
    at: datetime,
    user: str,
    action: str,
    target: str,
    details: Any,
    key: bytes = b"",
) -> str:
    """SHA-256 of the row and the hash before it; keyed (HMAC) when the home folder holds the
    audit key, so the chain cannot be recomputed by someone who can only reach the database."""
    payload = json.dumps(
        [prev_hash, row_id, _utc_text(at), user, action, target, details],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    ).encode("utf-8", "surrogatepass")
    return hmac.new(key, payload, hashlib.sha256).hexdigest() if key else hashlib.sha256(payload).hexdigest()


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
    key: bytes = session.info.get("audit_key", b"")
    row = AuditRow(
        at=now(),
        user=user[:100],
        action=action[:30],
        target=target[:_MAX_TARGET],
        details=_plain(details),
        prev_hash=head.last_hash or GENESIS,
        key_id=fingerprint(key),
    )
    session.add(row)
    session.flush()  # assigns the id the hash covers
    row.hash = row_hash(row.prev_hash, row.id, row.at, row.user, row.action, row.target, row.details, key)
    head.last_id, head.last_hash = row.id, row.hash
    session.flush()
    anchor: Path | None = session.info.get("audit_anchor")
    if anchor is not None:
        mark = {"rows": head.rows, "last_id": head.last_id, "last_hash": head.last_hash}
        event.listen(session, "after_commit", lambda _s: _write_anchor(anchor, mark), once=True)
    return row


def _write_anchor(path: Path, mark: dict[str, Any]) -> None:
    """The chain's newest link, outside the database: cutting rows off the end (or emptying the
    log) cannot go unnoticed. Concurrent writers may leave an older link: still a valid prefix."""
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
        if int(current.get("rows", 0)) > int(mark["rows"]):
            return
    except (OSError, ValueError):
        pass
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        tmp.write_text(json.dumps(mark), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # the record in the database stands; the next append writes the anchor again
        tmp.unlink(missing_ok=True)


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
