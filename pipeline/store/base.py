"""The engine and sessions every part of the state store shares; schema upgrades on open."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


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


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest migration (creates it on first use)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class StoreBase:
    """Opens the database, upgrades its schema, and hands out transactions."""

    def __init__(self, url_or_path: str | Path) -> None:
        url = database_url(url_or_path)
        self.url = url
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        upgrade_schema(self.engine)
        if self.is_sqlite:
            owner_only(Path(url.removeprefix("sqlite:///")))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session
