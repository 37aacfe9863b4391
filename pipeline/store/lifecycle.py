"""Fixity checks (runs, per-package results and latest status, manifest baselines) and replicas."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from pipeline.store.audit import append_audit
from pipeline.store.base import StoreBase
from pipeline.store.schema import (
    FixityResultRow,
    FixityRunRow,
    FixityStatusRow,
    ItemRow,
    PackageBaselineRow,
    ReplicaCopyRow,
    ReplicaRow,
    now,
)


def aware(at: datetime) -> datetime:
    """A time from the database as UTC-aware (SQLite gives naive UTC back)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass
class PackageResult:
    """One package's outcome in a run, as the store records it."""

    archive_code: str
    ok: bool
    problems: list[dict[str, Any]] = field(default_factory=list)
    baseline: tuple[str, str] | None = None  # (pdf sha256, manifest sha256) to record when first clean


class LifecycleStore(StoreBase):
    # ---------------------------------------------------------------- packages
    def current_packages(self) -> dict[str, str]:
        """archive code -> PDF SHA-256 of every item with a package in the archive."""
        with self.session() as session:
            rows = session.execute(
                select(ItemRow.archive_code, ItemRow.pdf_sha256).where(ItemRow.pdf_sha256.is_not(None))
            )
            return {code: str(sha) for code, sha in rows}

    def baselines(self, codes: Iterable[str]) -> dict[tuple[str, str], str]:
        """(archive code, PDF SHA-256) -> the manifest's SHA-256 recorded at the first clean check."""
        wanted = list(set(codes))
        found: dict[tuple[str, str], str] = {}
        with self.session() as session:
            for start in range(0, len(wanted), 500):
                query = select(PackageBaselineRow).where(
                    PackageBaselineRow.archive_code.in_(wanted[start : start + 500])
                )
                for row in session.scalars(query):
                    found[(row.archive_code, row.pdf_sha256)] = row.manifest_sha256
        return found

    # ---------------------------------------------------------------- fixity runs
    def record_fixity(
        self,
        run: dict[str, Any],
        results: list[PackageResult],
        user: str,
    ) -> int:
        """One run, its per-package results, the latest status per package, new baselines and an
        audit row, in one transaction; returns the run's id."""
        with self.session() as session:
            row = FixityRunRow(user=user[:100], **run)
            session.add(row)
            session.flush()
            for result in results:
                at = now()
                session.add(
                    FixityResultRow(
                        run_id=row.id,
                        root=row.root,
                        archive_code=result.archive_code,
                        checked_at=at,
                        ok=result.ok,
                        problems=result.problems,
                    )
                )
                status = session.get(FixityStatusRow, (row.root, result.archive_code))
                if status is None:
                    status = FixityStatusRow(root=row.root, archive_code=result.archive_code)
                    session.add(status)
                status.checked_at, status.ok, status.problems, status.run_id = (
                    at,
                    result.ok,
                    result.problems,
                    row.id,
                )
                if result.baseline is not None:
                    pdf, manifest = result.baseline
                    if session.get(PackageBaselineRow, (result.archive_code, pdf)) is None:
                        session.add(
                            PackageBaselineRow(
                                archive_code=result.archive_code, pdf_sha256=pdf, manifest_sha256=manifest
                            )
                        )
            append_audit(
                session,
                user,
                "fixity.check",
                row.root[:500],
                {
                    "run": row.id,
                    "scope": row.scope,
                    "packages": row.packages,
                    "files": row.files,
                    "problems": row.problems,
                },
            )
            return row.id

    def fixity_runs(self, limit: int = 20, scope: str | None = None) -> list[FixityRunRow]:
        query = select(FixityRunRow).order_by(FixityRunRow.id.desc()).limit(limit)
        if scope:
            query = query.where(FixityRunRow.scope == scope)
        with self.session() as session:
            return list(session.scalars(query))

    def fixity_status(self, root: str | None = None, *, damaged_only: bool = False) -> list[FixityStatusRow]:
        query = select(FixityStatusRow).order_by(FixityStatusRow.root, FixityStatusRow.archive_code)
        if root is not None:
            query = query.where(FixityStatusRow.root == root)
        if damaged_only:
            query = query.where(FixityStatusRow.ok.is_(False))
        with self.session() as session:
            return list(session.scalars(query))

    def fixity_history(self, archive_code: str) -> list[FixityResultRow]:
        with self.session() as session:
            query = select(FixityResultRow).where(FixityResultRow.archive_code == archive_code)
            return list(session.scalars(query.order_by(FixityResultRow.id)))

    def least_recently_checked(self, root: str, limit: int) -> list[str]:
        """Archive codes of current packages, never-checked first, then the longest unchecked."""
        status = (
            select(FixityStatusRow.archive_code, FixityStatusRow.checked_at)
            .where(FixityStatusRow.root == root)
            .subquery()
        )
        query = (
            select(ItemRow.archive_code)
            .outerjoin(status, status.c.archive_code == ItemRow.archive_code)
            .where(ItemRow.pdf_sha256.is_not(None))
            .order_by(status.c.checked_at.asc().nulls_first(), ItemRow.archive_code)
            .limit(limit)
        )
        with self.session() as session:
            return list(session.scalars(query))

    def checked_since(self, root: str, since: datetime) -> int:
        """How many current packages of `root` were last checked at or after `since`."""
        query = (
            select(func.count())
            .select_from(FixityStatusRow)
            .join(ItemRow, ItemRow.archive_code == FixityStatusRow.archive_code)
            .where(
                FixityStatusRow.root == root,
                FixityStatusRow.checked_at >= since,
                ItemRow.pdf_sha256.is_not(None),
            )
        )
        with self.session() as session:
            return int(session.scalar(query) or 0)

    # ---------------------------------------------------------------- replicas
    def register_replica(self, root: str, user: str) -> bool:
        """Register a copy's root (True when it is new)."""
        with self.session() as session:
            if session.get(ReplicaRow, root) is not None:
                return False
            session.add(ReplicaRow(root=root, registered_by=user[:100]))
            append_audit(session, user, "replica.register", root[:500])
            return True

    def replicas(self) -> list[ReplicaRow]:
        with self.session() as session:
            return list(session.scalars(select(ReplicaRow).order_by(ReplicaRow.root)))

    def replica_copies(self, root: str) -> dict[str, ReplicaCopyRow]:
        with self.session() as session:
            rows = session.scalars(select(ReplicaCopyRow).where(ReplicaCopyRow.root == root))
            return {row.archive_code: row for row in rows}

    def record_replica_copy(
        self, root: str, archive_code: str, pdf_sha256: str, manifest_sha256: str
    ) -> None:
        with self.session() as session:
            row = session.get(ReplicaCopyRow, (root, archive_code))
            if row is None:
                row = ReplicaCopyRow(root=root, archive_code=archive_code)
                session.add(row)
            row.pdf_sha256, row.manifest_sha256, row.verified_at = pdf_sha256, manifest_sha256, now()

    def forget_replica_copy(self, root: str, archive_code: str) -> None:
        with self.session() as session:
            row = session.get(ReplicaCopyRow, (root, archive_code))
            if row is not None:
                session.delete(row)

    def finish_replication(self, root: str, user: str, details: dict[str, Any]) -> None:
        with self.session() as session:
            row = session.get(ReplicaRow, root)
            if row is not None:
                row.last_sync_at = now()
            append_audit(session, user, "replicate", root[:500], details)
