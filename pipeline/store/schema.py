"""The state store's tables (SQLAlchemy 2 declarative); Alembic migrations keep databases in step."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.models import DATE_FIELDS, CatalogueEntry


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


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
    contract_end_date: Mapped[str] = mapped_column(String(10), default="")  # 合同终止日期, YYYY-MM-DD
    creation_date: Mapped[str] = mapped_column(String(10), default="")  # 形成日期, YYYY-MM-DD

    def __init__(self, **values: Any) -> None:
        # an entry without the dates (CatalogueEntry.to_dict leaves empty ones out) clears them
        # on merge instead of keeping the old ones
        for name in DATE_FIELDS:
            values.setdefault(name, "")
        super().__init__(**values)

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
            contract_end_date=self.contract_end_date or "",
            creation_date=self.creation_date or "",
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
    # how many processes have started on this batch (a process that died counts too)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # server mode
    items_planned: Mapped[int] = mapped_column(Integer, default=0)
    pages_planned: Mapped[int] = mapped_column(Integer, default=0)


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
    """Append-only: who did what, when. Each row carries the hash of the one before it."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, index=True)
    user: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(30))
    target: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64), default="")
    hash: Mapped[str] = mapped_column(String(64), default="")
    key_id: Mapped[str] = mapped_column(String(16), default="")  # fingerprint of the HMAC key, or ""


class AuditHeadRow(Base):
    """One row: the number of audit rows and the hash of the last one (the chain's anchor)."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default="")


class UserRow(Base):
    """A person who searches or decides: role searcher / qa / admin, clearance 0-4, fonds.

    `id` never changes and is never reused: tokens and sessions belong to it, so a user name
    deleted and created again is a new account with nothing of the old one.
    """

    __tablename__ = "users"
    username: Mapped[str] = mapped_column(String(100), primary_key=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    clearance: Mapped[int] = mapped_column(Integer)
    fonds: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every fonds
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    # password checks started in the current lock-out window (a check in flight counts)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    failed_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TokenRow(Base):
    """An API token: only its SHA-256 is kept; the token itself is shown once, when made."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(100), index=True)
    user_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SessionRow(Base):
    """A web session, kept on the server: the cookie holds a random token, this row its SHA-256."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    username: Mapped[str] = mapped_column(String(100))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)


class IndexPendingRow(Base):
    """An archived item whose indexing failed; `capture reindex --pending` (and the watcher) retry it."""

    __tablename__ = "index_pending"
    archive_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    attempts: Mapped[int] = mapped_column(Integer, default=1)


# ---------------------------------------------------------------- the archive after capture


class FixityRunRow(Base):
    """One fixity check of one archive root (the primary or a copy): when, what, the result."""

    __tablename__ = "fixity_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    root: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(20))  # all / sample / codes / rolling / repair
    user: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, index=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    packages: Mapped[int] = mapped_column(Integer, default=0)
    files: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    problems: Mapped[int] = mapped_column(Integer, default=0)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class FixityResultRow(Base):
    """One package's result in one run (the history an auditor reads)."""

    __tablename__ = "fixity_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    root: Mapped[str] = mapped_column(Text)
    archive_code: Mapped[str] = mapped_column(String(100), index=True)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    ok: Mapped[bool] = mapped_column(Boolean)
    problems: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class FixityStatusRow(Base):
    """The latest result per package and root: what the rolling check picks the oldest from."""

    __tablename__ = "fixity_status"
    root: Mapped[str] = mapped_column(String(1000), primary_key=True)
    archive_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, index=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    problems: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    run_id: Mapped[int] = mapped_column(Integer)


class PackageBaselineRow(Base):
    """The checksum of a package's manifest, recorded at its first clean check: a manifest rewritten
    to match changed files no longer matches this."""

    __tablename__ = "package_baselines"
    archive_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    pdf_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class ReplicaRow(Base):
    """A registered second archive root (another disk, a NAS, an off-site share)."""

    __tablename__ = "replicas"
    root: Mapped[str] = mapped_column(String(1000), primary_key=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    registered_by: Mapped[str] = mapped_column(String(100))
    last_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ReplicaCopyRow(Base):
    """One package as copied to a replica and verified there after writing."""

    __tablename__ = "replica_copies"
    root: Mapped[str] = mapped_column(String(1000), primary_key=True)
    archive_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class DisposalListRow(Base):
    """A disposal (销毁) list: open for appraisal, approved by a second person, executed. Never deleted."""

    __tablename__ = "disposal_lists"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    due_by: Mapped[int] = mapped_column(Integer)  # items due on or before the end of this year
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    created_by: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="open")  # open / approved / executed
    approved_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    executed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    executed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    witness: Mapped[str | None] = mapped_column(String(200), nullable=True)


class DisposalItemRow(Base):
    """An item on a disposal list, with the catalogue entry and due date as listed."""

    __tablename__ = "disposal_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    list_id: Mapped[int] = mapped_column(Integer, index=True)
    archive_code: Mapped[str] = mapped_column(String(100), index=True)
    retention: Mapped[str] = mapped_column(String(50), default="")
    start_date: Mapped[str] = mapped_column(String(10), default="")
    due_date: Mapped[str] = mapped_column(String(10), default="")
    catalogue: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DisposalDecisionRow(Base):
    """An appraiser's decision on one listed item; a later one replaces it until the list is approved."""

    __tablename__ = "disposal_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    list_id: Mapped[int] = mapped_column(Integer, index=True)
    archive_code: Mapped[str] = mapped_column(String(100))
    decision: Mapped[str] = mapped_column(String(20))  # destroy / keep / permanent
    keep_years: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    user: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class TombstoneRow(Base):
    """What is left of a destroyed item: its entry, decisions, approvers, and the checksums of
    every file destroyed, where and when. Never changed, never deleted."""

    __tablename__ = "tombstones"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    archive_code: Mapped[str] = mapped_column(String(100), index=True)
    list_id: Mapped[int] = mapped_column(Integer)
    catalogue: Mapped[dict[str, Any]] = mapped_column(JSON)
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    approved_by: Mapped[str] = mapped_column(String(100))
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    executed_by: Mapped[str] = mapped_column(String(100))
    witness: Mapped[str] = mapped_column(String(200))
    destroyed: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # root, path, sha256, bytes
    destroyed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class AccessRequestRow(Base):
    """A request to see one item above one's clearance or outside one's fonds; once approved, a
    grant for exactly that user and item until `granted_until`."""

    __tablename__ = "access_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    username: Mapped[str] = mapped_column(String(100))
    archive_code: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(Text)
    days: Mapped[int] = mapped_column(Integer)  # asked for
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending/approved/refused/revoked
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    granted_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LookupRow(Base):
    """The lookup register (查档登记): every view and download of an item, with the grant it used."""

    __tablename__ = "lookups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, index=True)
    username: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str] = mapped_column(String(32), default="")
    archive_code: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(20))  # view / download
    via: Mapped[str] = mapped_column(String(20), default="")
    request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
