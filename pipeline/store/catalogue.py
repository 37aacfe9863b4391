"""The catalogue (归档目录) as the state store keeps it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select, update

from pipeline.models import CatalogueEntry
from pipeline.store.base import StoreBase
from pipeline.store.schema import CatalogueRow, now


@dataclass(frozen=True)
class CatalogueImport:
    """How many rows were written, and which existing entries changed (and in which fields)."""

    count: int
    changed: dict[str, tuple[str, ...]] = field(default_factory=dict)


class CatalogueStore(StoreBase):
    def import_catalogue(self, entries: Iterable[CatalogueEntry], source: str) -> CatalogueImport:
        """Write every entry (insert or replace) in one transaction; say which existing ones changed."""
        count = 0
        changed: dict[str, tuple[str, ...]] = {}
        with self.session() as session:
            for entry in entries:
                old = session.get(CatalogueRow, entry.archive_code)
                if old is not None:
                    before, after = old.to_entry().to_dict(), entry.to_dict()
                    fields = tuple(k for k in after if before.get(k) != after[k])
                    if fields:
                        changed[entry.archive_code] = fields
                session.merge(CatalogueRow(**entry.to_dict(), source=source, imported_at=now()))
                count += 1
        return CatalogueImport(count, changed)

    def catalogue(self) -> dict[str, CatalogueEntry]:
        with self.session() as session:
            return {row.archive_code: row.to_entry() for row in session.scalars(select(CatalogueRow))}

    def catalogue_entry(self, archive_code: str) -> CatalogueEntry | None:
        with self.session() as session:
            row = session.get(CatalogueRow, archive_code)
            return row.to_entry() if row else None

    def catalogue_entries(self, codes: Iterable[str]) -> dict[str, CatalogueEntry]:
        wanted = list(set(codes))
        found: dict[str, CatalogueEntry] = {}
        with self.session() as session:
            for start in range(0, len(wanted), 500):
                query = select(CatalogueRow).where(CatalogueRow.archive_code.in_(wanted[start : start + 500]))
                found.update({row.archive_code: row.to_entry() for row in session.scalars(query)})
        return found

    def set_page_count(self, archive_code: str, pages: int) -> None:
        with self.session() as session:
            session.execute(
                update(CatalogueRow).where(CatalogueRow.archive_code == archive_code).values(page_count=pages)
            )
