"""The state database without the ORM: what a search needs from it, on one DB-API connection.

`pipeline.store` (SQLAlchemy's ORM, Alembic migrations) is the state store; importing it and
configuring its mappers costs a cold `capture search` more than the search itself. A search
needs four things from the state database: that its schema is current, the account a name
means, the searcher's live access grants, and one audit row. `LeanStore` does those over a
plain sqlite3 connection (PostgreSQL: the driver's connection from a bare SQLAlchemy engine,
no ORM), with the same statements the ORM store runs for them:

- the audit row through `pipeline.auditchain.append`, which the ORM store appends with too;
- the live grants through `grant_codes`, which the ORM store's `live_grant_codes` calls too;
- the account rows through `account`/`accounts`; which account a name means, whether it is
  disabled and the Principal it acts as are decided by `pipeline.accounts`, for both stores.

A database that is not at the newest migration, or that cannot be opened, gets no LeanStore
(`LeanStore.open` returns None) and the caller opens the full store, which upgrades it or says
what is wrong. Also here, without SQLAlchemy: the SQLite file's permissions and the newest
migration's revision.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import auditchain
from pipeline.auditchain import db_time, sql

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x43415054  # PostgreSQL advisory lock key held while migrating ("CAPT")


def database_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL; a plain path is a SQLite file, created readable by its owner only."""
    url = str(url_or_path)
    if "://" not in url:
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        owner_only(path)
        url = f"sqlite:///{url}"
    return url


def owner_only(path: Path) -> None:
    """Create `path` if missing and make it (and SQLite's -wal/-shm companions) owner-only.

    An existing database file is never opened here: closing any descriptor of a file drops
    every POSIX lock this process holds on it, which would let another process think our
    connections are gone and delete the write-ahead log under them. chmod does not touch locks.
    """
    if not path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            os.chmod(candidate, 0o600)
        except FileNotFoundError:
            continue


def head_revision() -> str:
    """The newest migration's revision, from the file names (`NNNN_what.py` holds revision NNNN;
    a test holds this to Alembic's own answer), without importing Alembic."""
    return max(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def sqlite_pragmas(connection: Any, _record: Any = None) -> None:
    """What every connection to the SQLite state file sets (the ORM store's engine too)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# ------------------------------------------------------------------ the rows a search reads


@dataclass(frozen=True)
class Account:
    """The columns of an account (users) that say who it is and what it may reach."""

    username: str
    id: str
    display_name: str
    role: str
    clearance: int
    fonds: list[str]
    disabled: bool


_ACCOUNT = "SELECT username, id, display_name, role, clearance, fonds, disabled FROM users"


def _account(row: tuple[Any, ...]) -> Account:
    username, user_id, display_name, role, clearance, fonds, disabled = row
    if isinstance(fonds, str):  # SQLite hands JSON back as text, psycopg parsed
        fonds = json.loads(fonds)
    return Account(
        username, user_id, display_name or "", role, int(clearance), list(fonds or ()), bool(disabled)
    )


def account(connection: Any, dialect: str, username: str) -> Account | None:
    """The account called exactly `username`."""
    cursor = connection.cursor()
    try:
        cursor.execute(sql(dialect, _ACCOUNT + " WHERE username = ?"), (username,))
        row = cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None else _account(row)


def accounts(connection: Any, dialect: str) -> list[Account]:
    """Every account, by name."""
    cursor = connection.cursor()
    try:
        cursor.execute(_ACCOUNT + " ORDER BY username")
        return [_account(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def grant_codes(connection: Any, dialect: str, user_id: str, at: datetime | None = None) -> tuple[str, ...]:
    """The archive codes `user_id` holds a live (approved, unexpired) access grant for."""
    if not user_id:
        return ()
    cursor = connection.cursor()
    try:
        cursor.execute(
            sql(
                dialect,
                "SELECT archive_code FROM access_requests "
                "WHERE user_id = ? AND status = 'approved' AND granted_until > ?",
            ),
            (user_id, db_time(dialect, at or datetime.now(UTC))),
        )
        return tuple(sorted({code for (code,) in cursor.fetchall()}))
    finally:
        cursor.close()


# ------------------------------------------------------------------ the lean store


class LeanStore:
    """What a search needs of the state store, without the ORM (see the module's docstring)."""

    def __init__(
        self, connection: Any, dialect: str, *, home: Path | None, on_close: Callable[[], None] | None = None
    ) -> None:
        self.connection = connection
        self.dialect = dialect
        self._on_close = on_close
        self.audit_key = b""
        self.anchor_path: Path | None = None
        if home is not None:
            from pipeline.keys import secret

            self.audit_key = secret(home, "audit")
            self.anchor_path = home / "audit-anchor.json"

    @classmethod
    def open(cls, url_or_path: str | Path, *, home: Path | None = None) -> LeanStore | None:
        """The state database at `url_or_path` if it is at the newest migration, else None."""
        url = database_url(url_or_path)
        try:
            if url.startswith("sqlite:///") and "?" not in url and url != "sqlite:///:memory:":
                path = Path(url.removeprefix("sqlite:///"))
                connection: Any = sqlite3.connect(path, timeout=30)
                on_close: Callable[[], None] | None = None
                dialect = "sqlite"
                sqlite_pragmas(connection)
                owner_only(path)
                home = home or path.parent
            elif url.startswith("sqlite"):
                return None
            else:  # the driver's own connection, through SQLAlchemy's URL handling (no ORM)
                from sqlalchemy import create_engine
                from sqlalchemy.pool import NullPool

                engine = create_engine(url, poolclass=NullPool)
                dialect = engine.dialect.name
                proxied = engine.raw_connection()
                connection = proxied.dbapi_connection

                def on_close() -> None:
                    proxied.close()
                    engine.dispose()

        except Exception:  # noqa: BLE001 - the full store reports (or repairs) it
            return None
        store = cls(connection, dialect, home=home, on_close=on_close)
        try:
            current = store._at_head()
        except Exception:  # noqa: BLE001
            current = False
        if not current:
            store.close()
            return None
        return store

    def _at_head(self) -> bool:
        cursor = self.connection.cursor()
        try:
            cursor.execute("SELECT version_num FROM alembic_version")
            versions = [version for (version,) in cursor.fetchall()]
        finally:
            cursor.close()
            self.connection.rollback()
        return versions == [head_revision()]

    def _read(self, what: Any, *args: Any) -> Any:
        try:
            return what(self.connection, self.dialect, *args)
        finally:
            self.connection.rollback()  # a read holds no transaction open (PostgreSQL)

    def user(self, username: str) -> Account | None:
        result: Account | None = self._read(account, username)
        return result

    def users(self) -> list[Account]:
        result: list[Account] = self._read(accounts)
        return result

    def live_grant_codes(self, user_id: str) -> tuple[str, ...]:
        result: tuple[str, ...] = self._read(grant_codes, user_id)
        return result

    def audit(self, user: str, action: str, target: str = "", details: dict[str, Any] | None = None) -> None:
        """One audit row in its own transaction; the anchor once it has committed."""
        try:
            mark = auditchain.append(
                self.connection, self.dialect, self.audit_key, user, action, target, details
            )
            self.connection.commit()
        except BaseException:
            self.connection.rollback()
            raise
        if self.anchor_path is not None:
            auditchain.write_anchor(self.anchor_path, mark)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
        else:
            self.connection.close()
