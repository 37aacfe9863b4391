"""SQL state: the imported catalogue, batches, items and their findings (SQLAlchemy 2).

SQLite in CAPTURE_HOME by default. Writes are keyed so that re-running a batch updates rows
instead of duplicating them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pipeline.models import CatalogueEntry, ItemResult


def _now() -> datetime:
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
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

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
    batch_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="processing")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    report_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # type: ignore[type-arg]


class ItemRow(Base):
    __tablename__ = "items"
    archive_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.batch_id"))
    verdict: Mapped[str] = mapped_column(String(20))
    pages: Mapped[int] = mapped_column(Integer)
    blank_pages: Mapped[int] = mapped_column(Integer, default=0)
    pdf_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pdfa_valid: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class FindingRow(Base):
    __tablename__ = "findings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    archive_code: Mapped[str] = mapped_column(String(100), index=True)
    batch_id: Mapped[str] = mapped_column(String(100))
    code: Mapped[str] = mapped_column(String(50))
    severity: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    file: Mapped[str | None] = mapped_column(Text, nullable=True)


class Store:
    def __init__(self, url_or_path: str | Path) -> None:
        url = str(url_or_path)
        if "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{url}"
        self.engine: Engine = create_engine(url, future=True)
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # catalogue
    def import_catalogue(self, entries: Iterable[CatalogueEntry], source: str) -> int:
        count = 0
        with Session(self.engine) as session, session.begin():
            for entry in entries:
                session.merge(CatalogueRow(**entry.to_dict(), source=source, imported_at=_now()))
                count += 1
        return count

    def catalogue(self) -> dict[str, CatalogueEntry]:
        with Session(self.engine) as session:
            return {row.archive_code: row.to_entry() for row in session.scalars(select(CatalogueRow))}

    # batches and items
    def start_batch(self, batch_id: str, path: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.merge(
                BatchRow(
                    batch_id=batch_id, path=path, status="processing", started_at=_now(), finished_at=None
                )
            )

    def finish_batch(self, batch_id: str, status: str, report_path: str, summary: dict) -> None:  # type: ignore[type-arg]
        with Session(self.engine) as session, session.begin():
            row = session.get(BatchRow, batch_id)
            if row is not None:
                row.status, row.finished_at = status, _now()
                row.report_path, row.summary = report_path, summary

    def record_item(self, batch_id: str, item: ItemResult) -> None:
        """Upsert the item and replace its findings: re-running never duplicates them."""
        with Session(self.engine) as session, session.begin():
            session.merge(
                ItemRow(
                    archive_code=item.archive_code,
                    batch_id=batch_id,
                    verdict=str(item.verdict),
                    pages=item.page_count,
                    blank_pages=item.blank_pages,
                    pdf_path=item.pdf_path,
                    pdf_sha256=item.pdf_sha256,
                    pdfa_valid=item.pdfa_valid,
                    updated_at=_now(),
                )
            )
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

    def findings(self, archive_code: str) -> list[FindingRow]:
        with Session(self.engine) as session:
            return list(session.scalars(select(FindingRow).where(FindingRow.archive_code == archive_code)))

    def item(self, archive_code: str) -> ItemRow | None:
        with Session(self.engine) as session:
            return session.get(ItemRow, archive_code)
