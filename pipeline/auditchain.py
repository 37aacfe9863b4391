"""The audit chain's one implementation: each row's hash, the append, and the anchor file.

Each row's hash covers its own fields and the previous row's hash (HMAC-SHA-256 when the home
folder holds the audit key); a one-row head table holds the number of rows and the last hash.
Appends are serialised by taking the head row's write lock first (an UPDATE before any read),
so two processes appending at once still build one chain, on SQLite and on PostgreSQL.

Everything here works on a DB-API connection (sqlite3, psycopg) and imports no SQLAlchemy:
the ORM store (`pipeline.store.audit.append_audit`, through its session's connection) and the
lean search path (`pipeline.statedb.LeanStore`) both append through `append`, so there is one
append and one hash, whichever way a process reached the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.keys import fingerprint

HEAD_ID = 1
GENESIS = "0" * 64
MAX_TARGET = 2000

# How SQLAlchemy's SQLite dialect stores a DateTime (text that sorts and compares as time);
# PostgreSQL takes the datetime itself. A test holds this to SQLAlchemy's own bind processor.
SQLITE_TIME = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


def utc_text(at: datetime) -> str:
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
        [prev_hash, row_id, utc_text(at), user, action, target, details],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    ).encode("utf-8", "surrogatepass")
    return hmac.new(key, payload, hashlib.sha256).hexdigest() if key else hashlib.sha256(payload).hexdigest()


def plain(details: dict[str, Any] | None) -> dict[str, Any] | None:
    """Details as they will come back from the JSON column (so the hash can be recomputed)."""
    if details is None:
        return None
    data: dict[str, Any] = json.loads(json.dumps(details, ensure_ascii=False, default=str))
    return data


def db_time(dialect: str, at: datetime) -> Any:
    """`at` as a bound parameter, exactly as SQLAlchemy binds a DateTime for this dialect."""
    if dialect != "sqlite":
        return at
    return SQLITE_TIME % {
        "year": at.year,
        "month": at.month,
        "day": at.day,
        "hour": at.hour,
        "minute": at.minute,
        "second": at.second,
        "microsecond": at.microsecond,
    }


def sql(dialect: str, statement: str) -> str:
    """A statement written with `?` placeholders in the driver's paramstyle."""
    return statement if dialect == "sqlite" else statement.replace("?", "%s")


def append(
    connection: Any,
    dialect: str,
    key: bytes,
    user: str,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one row inside the connection's open transaction (the caller commits); the head's
    new state (rows, last_id, last_hash), for the anchor once the transaction has committed."""
    cursor = connection.cursor()
    try:
        cursor.execute(sql(dialect, "UPDATE audit_head SET rows = rows + 1 WHERE id = ?"), (HEAD_ID,))
        if not cursor.rowcount:
            cursor.execute(
                sql(dialect, "INSERT INTO audit_head (id, rows, last_id, last_hash) VALUES (?, 1, 0, ?)"),
                (HEAD_ID, GENESIS),
            )
        cursor.execute(sql(dialect, "SELECT rows, last_hash FROM audit_head WHERE id = ?"), (HEAD_ID,))
        rows, last_hash = cursor.fetchone()
        at = datetime.now(UTC)
        user, action, target, details = user[:100], action[:30], target[:MAX_TARGET], plain(details)
        prev_hash = last_hash or GENESIS
        json_value = "?" if dialect == "sqlite" else "CAST(? AS JSON)"
        insert = (
            'INSERT INTO audit_log (at, "user", action, target, details, prev_hash, hash, key_id) '
            f"VALUES (?, ?, ?, ?, {json_value}, ?, '', ?)"
        )
        values = (
            db_time(dialect, at),
            user,
            action,
            target,
            json.dumps(details),
            prev_hash,
            fingerprint(key),
        )
        if dialect == "sqlite":
            cursor.execute(insert, values)
            row_id = int(cursor.lastrowid)
        else:
            cursor.execute(sql(dialect, insert + " RETURNING id"), values)
            row_id = int(cursor.fetchone()[0])
        digest = row_hash(prev_hash, row_id, at, user, action, target, details, key)
        cursor.execute(sql(dialect, "UPDATE audit_log SET hash = ? WHERE id = ?"), (digest, row_id))
        cursor.execute(
            sql(dialect, "UPDATE audit_head SET last_id = ?, last_hash = ? WHERE id = ?"),
            (row_id, digest, HEAD_ID),
        )
    finally:
        cursor.close()
    return {"rows": int(rows), "last_id": row_id, "last_hash": digest}


def write_anchor(path: Path, mark: dict[str, Any]) -> None:
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
