"""The engine and sessions every part of the state store shares; schema upgrades on open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.statedb import (
    MIGRATION_LOCK,
    MIGRATIONS,
    database_url,
    head_revision,
    owner_only,
    sqlite_pragmas,
)

__all__ = [
    "MIGRATIONS",
    "MIGRATION_LOCK",
    "StoreBase",
    "at_head",
    "database_url",
    "head_revision",
    "owner_only",
    "upgrade_schema",
]


def at_head(engine: Engine) -> bool:
    """Whether the database is already at the newest migration: one query, so opening the store
    (every `capture search`) does not pay for importing and running Alembic to learn that."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    # no version table yet: SQLite says OperationalError, PostgreSQL ProgrammingError (a server
    # that is away is an OperationalError there too, and is left to the upgrade to report)
    missing = (OperationalError,) if engine.dialect.name == "sqlite" else (ProgrammingError,)
    try:
        with engine.connect() as connection:
            versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    except missing:
        return False
    return list(versions) == [head_revision()]


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest migration (creates it on first use), in one transaction
    that one process at a time may hold: a process killed mid-migration leaves the database as
    it was, and processes starting together on a new database do not trip over each other."""
    if at_head(engine):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine.dialect.name == "sqlite":
        # pysqlite does not put DDL in a transaction by itself: a separate engine that does
        # (BEGIN IMMEDIATE also takes the write lock, so a second process waits its turn)
        migrating = create_engine(engine.url, connect_args={"isolation_level": None, "timeout": 60})
        event.listen(migrating, "connect", sqlite_pragmas)
        event.listen(migrating, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        try:
            with migrating.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        finally:
            migrating.dispose()
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class StoreBase:
    """Opens the database, upgrades its schema, and hands out transactions."""

    def __init__(self, url_or_path: str | Path, *, home: Path | None = None) -> None:
        """`home`: the home folder holding the audit key and the chain's anchor (for a SQLite
        file, its folder unless given; without one the chain is kept, unkeyed, unanchored)."""
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

        from pipeline.errors import ConfigError, StateUnavailable

        url = database_url(url_or_path)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        try:
            self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
            if self.is_sqlite:
                event.listen(self.engine, "connect", sqlite_pragmas)
            upgrade_schema(self.engine)
        except (ArgumentError, NoSuchModuleError, OperationalError) as exc:
            shown = make_url(url).render_as_string(hide_password=True) if "://" in url else url
            cause = getattr(exc, "orig", None) or exc
            message = f"the state database (state.url = {shown}) cannot be opened: {cause}"[:600]
            if isinstance(exc, OperationalError) and not self.is_sqlite:
                raise StateUnavailable(message) from exc  # a server that is away: try again later
            raise ConfigError(message) from exc
        if self.is_sqlite:
            owner_only(Path(url.removeprefix("sqlite:///")))
            home = home or Path(url.removeprefix("sqlite:///")).parent
        self.audit_key = b""
        self.anchor_path: Path | None = None
        if home is not None:
            from pipeline.keys import secret

            self.audit_key = secret(home, "audit")
            self.anchor_path = home / "audit-anchor.json"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.info["audit_key"] = self.audit_key
            session.info["audit_anchor"] = self.anchor_path
            yield session
