"""SQL state through SQLAlchemy 2: catalogue, batches, items, packages, findings, QA, audit log.

SQLite in CAPTURE_HOME by default; PostgreSQL (or any SQLAlchemy URL) through
`state.url`. The schema is created and upgraded by Alembic migrations
(pipeline/migrations), so an office upgrades without losing its data. Writes are keyed so
that re-running a batch updates rows instead of duplicating them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pipeline.models import CatalogueEntry, ItemResult, Severity

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class CatalogueRow(Base):
    __tablename__ = "catalogue"
    archive_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    page_count: Mapped[int] = mapped_column(Integer)
    policy_number: Mapped[str] = mapped_column(String(100), default="")
    policyholder: Mapped[str] = mapped_column(String(200), default="")
    job_serial: Mapped[str] = mapped_column(String(100), default="")
    year: Mapped[str] = mapped_column(String(20), default="")
    stage: Mapped[str] = mapped_column(String(50), default="")
    retention: Mapped[str] = mapped_column(String(50), default="")
    security_level: Mapped[str] = mapped_column(String(50), default="")
    box: Mapped[str] = mapped_column(String(50), default="")
    remarks: Mapped[str] = mapped_column(Text, default="")
    title: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(Text, default="")
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)

    def to_entry(self) -> CatalogueEntry:
        return CatalogueEntry(
            archive_code=self.archive_code,
            page_count=self.page_count,
            policy_number=self.policy_number,
            policyholder=self.policyholder,
            job_serial=self.job_serial,
            year=self.year,
            stage=self.stage,
            retention=self.retention,
            security_level=self.security_level,
            box=self.box,
            remarks=self.remarks,
            title=self.title,
        )


class BatchRow(Base):
    __tablename__ = "batches"
    batch_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="processing")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    report_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ItemRow(Base):
    """The current state of an item (its latest package)."""

    __tablename__ = "items"
    archive_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(120), index=True)
    verdict: Mapped[str] = mapped_column(String(20))
    qa_status: Mapped[str] = mapped_column(String(20), default="none")  # none/open/approved/rescan/corrected
    visible: Mapped[bool] = mapped_column(Boolean, default=False)
    pages: Mapped[int] = mapped_column(Integer)
    blank_pages: Mapped[int] = mapped_column(Integer, default=0)
    pdf_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    record_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pdfa_valid: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class PackageRow(Base):
    """Every package ever made of an item; a rescan supersedes the current one and keeps it."""

    __tablename__ = "packages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    archive_code: Mapped[str] = mapped_column(String(100), index=True)
    batch_id: Mapped[str] = mapped_column(String(120))
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="current")  # current / superseded
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FindingRow(Base):
    __tablename__ = "findings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    archive_code: Mapped[str] = mapped_column(String(100), index=True)
    batch_id: Mapped[str] = mapped_column(String(120))
    code: Mapped[str] = mapped_column(String(50))
    severity: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    file: Mapped[str | None] = mapped_column(Text, nullable=True)


class QaCaseRow(Base):
    __tablename__ = "qa_cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    archive_code: Mapped[str] = mapped_column(String(100), index=True)
    batch_id: Mapped[str] = mapped_column(String(120), index=True)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(
        String(20), default="open"
    )  # open/approved/rescan/corrected/superseded
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DecisionRow(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(Integer, index=True)
    archive_code: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(20))  # approve / rescan / correct
    reason: Mapped[str] = mapped_column(Text)
    user: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class AuditRow(Base):
    """Append-only: who did what, when (searches, views, decisions)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, index=True)
    user: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(30))
    target: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class UserRow(Base):
    """A person who searches or decides: role searcher / qa / admin, clearance 0-4, fonds."""

    __tablename__ = "users"
    username: Mapped[str] = mapped_column(String(100), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    clearance: Mapped[int] = mapped_column(Integer)
    fonds: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every fonds
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class TokenRow(Base):
    """An API token: only its SHA-256 is kept; the token itself is shown once, when made."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(100), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IndexPendingRow(Base):
    """An archived item whose indexing failed; `capture reindex --pending` (and the watcher) retry it."""

    __tablename__ = "index_pending"
    archive_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    attempts: Mapped[int] = mapped_column(Integer, default=1)


def database_url(url_or_path: str | Path) -> str:
    url = str(url_or_path)
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{url}"
    return url


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest migration (creates it on first use)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Store:
    def __init__(self, url_or_path: str | Path) -> None:
        url = database_url(url_or_path)
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        upgrade_schema(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    # ---------------------------------------------------------------- catalogue
    def import_catalogue(self, entries: Iterable[CatalogueEntry], source: str) -> int:
        count = 0
        with self.session() as session:
            for entry in entries:
                session.merge(CatalogueRow(**entry.to_dict(), source=source, imported_at=now()))
                count += 1
        return count

    def catalogue(self) -> dict[str, CatalogueEntry]:
        with self.session() as session:
            return {row.archive_code: row.to_entry() for row in session.scalars(select(CatalogueRow))}

    def catalogue_entry(self, archive_code: str) -> CatalogueEntry | None:
        with self.session() as session:
            row = session.get(CatalogueRow, archive_code)
            return row.to_entry() if row else None

    def set_page_count(self, archive_code: str, pages: int) -> None:
        with self.session() as session:
            session.execute(
                update(CatalogueRow).where(CatalogueRow.archive_code == archive_code).values(page_count=pages)
            )

    # ---------------------------------------------------------------- batches
    def start_batch(self, batch_id: str, path: str, manifest: dict[str, Any] | None = None) -> None:
        with self.session() as session:
            row = session.get(BatchRow, batch_id)
            if row is None:
                session.add(BatchRow(batch_id=batch_id, path=path, status="processing", manifest=manifest))
            else:
                row.path, row.status, row.finished_at = path, "processing", None
                row.manifest = manifest or row.manifest

    def finish_batch(
        self,
        batch_id: str,
        status: str,
        report_path: str | None,
        summary: dict[str, Any] | None,
        reason: str = "",
    ) -> None:
        with self.session() as session:
            row = session.get(BatchRow, batch_id)
            if row is None:
                row = BatchRow(batch_id=batch_id, path="", started_at=now())
                session.add(row)
            row.status, row.finished_at = status, now()
            row.report_path, row.summary, row.reason = report_path, summary, reason or None

    def batch(self, batch_id: str) -> BatchRow | None:
        with self.session() as session:
            return session.get(BatchRow, batch_id)

    def batches(self) -> list[BatchRow]:
        with self.session() as session:
            return list(session.scalars(select(BatchRow).order_by(BatchRow.started_at.desc())))

    # ---------------------------------------------------------------- items
    def record_item(self, batch_id: str, item: ItemResult) -> ItemRow:
        """Upsert the item, its package history, findings and QA case; returns the item row.

        Idempotent for the same package (same PDF SHA-256): re-running never duplicates a
        package, a finding or a case. A new package supersedes the current one.
        """
        flags = [f.to_dict() for f in item.findings if f.severity != Severity.INFO]
        with self.session() as session:
            current = session.scalars(
                select(PackageRow).where(
                    PackageRow.archive_code == item.archive_code, PackageRow.status == "current"
                )
            ).first()
            new_package = item.pdf_sha256 is not None and (
                current is None or current.pdf_sha256 != item.pdf_sha256
            )
            open_case = _open_case(session, item.archive_code)
            if new_package:
                if current is not None:
                    current.status, current.superseded_at = "superseded", now()
                    if open_case is not None:
                        open_case.status, open_case.closed_at = "superseded", now()
                        open_case = None
                session.add(
                    PackageRow(
                        archive_code=item.archive_code,
                        batch_id=batch_id,
                        pdf_sha256=item.pdf_sha256 or "",
                        location=str(Path(item.pdf_path).parent) if item.pdf_path else "",
                    )
                )
            row = session.get(ItemRow, item.archive_code)
            if flags and open_case is None and (new_package or row is None or row.qa_status == "none"):
                session.add(
                    QaCaseRow(
                        archive_code=item.archive_code,
                        batch_id=batch_id,
                        pdf_sha256=item.pdf_sha256,
                        findings=flags,
                    )
                )
                qa_status = "open"
            elif new_package or row is None:
                qa_status = "open" if flags else "none"
            else:
                qa_status = row.qa_status  # the same package again: QA decisions stand
            values = {
                "batch_id": batch_id,
                "verdict": str(item.verdict),
                "qa_status": qa_status,
                "visible": _visible(qa_status, item.pdf_sha256),
                "pages": item.page_count,
                "blank_pages": item.blank_pages,
                "pdf_path": item.pdf_path,
                "record_path": item.record_path,
                "pdf_sha256": item.pdf_sha256,
                "pdfa_valid": item.pdfa_valid,
                "updated_at": now(),
            }
            if row is None:
                row = ItemRow(archive_code=item.archive_code, **values)
                session.add(row)
            else:
                for key, value in values.items():
                    setattr(row, key, value)
            session.execute(delete(FindingRow).where(FindingRow.archive_code == item.archive_code))
            for f in item.findings:
                session.add(
                    FindingRow(
                        archive_code=item.archive_code,
                        batch_id=batch_id,
                        code=f.code,
                        severity=str(f.severity),
                        message=f.message,
                        page=f.page,
                        file=f.file,
                    )
                )
            session.flush()
            return row

    def item(self, archive_code: str) -> ItemRow | None:
        with self.session() as session:
            return session.get(ItemRow, archive_code)

    def items(self) -> list[ItemRow]:
        with self.session() as session:
            return list(session.scalars(select(ItemRow).order_by(ItemRow.archive_code)))

    def items_changed_since(self, when: datetime) -> list[str]:
        """Archive codes whose item row (package, verdict, visibility) changed at or after `when`."""
        with self.session() as session:
            return list(session.scalars(select(ItemRow.archive_code).where(ItemRow.updated_at >= when)))

    def findings(self, archive_code: str) -> list[FindingRow]:
        with self.session() as session:
            return list(session.scalars(select(FindingRow).where(FindingRow.archive_code == archive_code)))

    def packages(self, archive_code: str) -> list[PackageRow]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(PackageRow).where(PackageRow.archive_code == archive_code).order_by(PackageRow.id)
                )
            )

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
            return _open_case(session, archive_code)

    def decide(
        self,
        archive_code: str,
        action: str,
        reason: str,
        user: str,
        *,
        close_as: str | None,
        details: dict[str, Any] | None = None,
    ) -> DecisionRow:
        """Record a decision on the item's open case; close it as `close_as` (None keeps it open)."""
        with self.session() as session:
            case = _open_case(session, archive_code)
            if case is None:
                raise LookupError(f"{archive_code} has no open QA case")
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
                    item.visible = _visible(close_as, item.pdf_sha256)
                    item.updated_at = now()
            session.add(
                AuditRow(
                    user=user,
                    action=f"qa.{action}",
                    target=archive_code,
                    details={"reason": reason, "case": case.id, **(details or {})},
                )
            )
            session.flush()
            return decision

    def update_case_findings(self, archive_code: str, findings: list[dict[str, Any]]) -> None:
        with self.session() as session:
            case = _open_case(session, archive_code)
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

    # ---------------------------------------------------------------- index retries
    def mark_index_pending(self, archive_code: str, reason: str) -> None:
        with self.session() as session:
            row = session.get(IndexPendingRow, archive_code)
            if row is None:
                session.add(IndexPendingRow(archive_code=archive_code, reason=reason))
            else:
                row.reason = reason
                row.attempts += 1

    def index_pending(self) -> list[IndexPendingRow]:
        with self.session() as session:
            return list(session.scalars(select(IndexPendingRow).order_by(IndexPendingRow.since)))

    def clear_index_pending(self, archive_code: str) -> None:
        with self.session() as session:
            session.execute(delete(IndexPendingRow).where(IndexPendingRow.archive_code == archive_code))

    # ---------------------------------------------------------------- users and tokens
    def put_user(self, row: UserRow) -> None:
        with self.session() as session:
            session.merge(row)

    def user(self, username: str) -> UserRow | None:
        with self.session() as session:
            return session.get(UserRow, username)

    def users(self) -> list[UserRow]:
        with self.session() as session:
            return list(session.scalars(select(UserRow).order_by(UserRow.username)))

    def add_token(self, username: str, token_sha256: str, label: str) -> None:
        with self.session() as session:
            session.add(TokenRow(username=username, token_sha256=token_sha256, label=label))

    def token_user(self, token_sha256: str) -> UserRow | None:
        """The enabled user a live token belongs to (and note that it was used)."""
        with self.session() as session:
            token = session.scalars(
                select(TokenRow).where(TokenRow.token_sha256 == token_sha256, TokenRow.revoked_at.is_(None))
            ).first()
            if token is None:
                return None
            token.last_used_at = now()
            user = session.get(UserRow, token.username)
            return user if user is not None and not user.disabled else None

    def revoke_tokens(self, username: str) -> int:
        with self.session() as session:
            result = session.execute(
                update(TokenRow)
                .where(TokenRow.username == username, TokenRow.revoked_at.is_(None))
                .values(revoked_at=now())
            )
            return int(getattr(result, "rowcount", 0) or 0)

    # ---------------------------------------------------------------- audit
    def audit(self, user: str, action: str, target: str = "", details: dict[str, Any] | None = None) -> None:
        with self.session() as session:
            session.add(AuditRow(user=user, action=action, target=target, details=details))

    def failed_logins(self, username: str, since: datetime) -> int:
        """Failed log-ins of a user since `since` and since their last log-in, unlock or new password."""
        resets = or_(
            and_(AuditRow.user == username, AuditRow.action.in_(("login", "password.changed"))),
            and_(AuditRow.target == username, AuditRow.action.in_(("user.save", "user.unlock"))),
        )
        with self.session() as session:
            last_reset = session.scalar(select(func.max(AuditRow.id)).where(resets)) or 0
            failed = select(func.count()).where(
                AuditRow.user == username,
                AuditRow.action == "login.failed",
                AuditRow.at >= since,
                AuditRow.id > last_reset,
            )
            return int(session.scalar(failed) or 0)

    def audit_log(self, action: str | None = None) -> list[AuditRow]:
        query = select(AuditRow).order_by(AuditRow.id)
        if action:
            query = query.where(AuditRow.action == action)
        with self.session() as session:
            return list(session.scalars(query))


def _open_case(session: Session, archive_code: str) -> QaCaseRow | None:
    query = select(QaCaseRow).where(QaCaseRow.archive_code == archive_code, QaCaseRow.status == "open")
    return session.scalars(query).first()


def _visible(qa_status: str, pdf_sha256: str | None) -> bool:
    """Searchers see an item once it passed QA (straight through, approved or corrected)."""
    return pdf_sha256 is not None and qa_status in ("none", "approved", "corrected")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
