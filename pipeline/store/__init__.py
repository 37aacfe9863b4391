"""SQL state through SQLAlchemy 2: catalogue, batches, items, packages, findings, QA, accounts, audit.

SQLite in CAPTURE_HOME by default (owner-only file); PostgreSQL (or any SQLAlchemy URL) through
`state.url`. The schema is created and upgraded by Alembic migrations (pipeline/migrations),
so an office upgrades without losing its data. Writes are keyed so that re-running a batch
updates rows instead of duplicating them. One class per concern; `Store` is all of them.
"""

from __future__ import annotations

from typing import Any

from pipeline.store.accounts import AccountStore
from pipeline.store.audit import AuditStore, ChainCheck, append_audit
from pipeline.store.base import MIGRATIONS, database_url, owner_only, upgrade_schema
from pipeline.store.catalogue import CatalogueImport, CatalogueStore
from pipeline.store.disposal import DisposalStore
from pipeline.store.items import ItemStore
from pipeline.store.lifecycle import LifecycleStore, PackageResult, aware
from pipeline.store.lookups import LookupStore
from pipeline.store.qa import QaStore
from pipeline.store.schema import (
    AuditRow,
    Base,
    BatchRow,
    CatalogueRow,
    DecisionRow,
    FindingRow,
    IndexPendingRow,
    ItemRow,
    PackageRow,
    QaCaseRow,
    SessionRow,
    TokenRow,
    UserRow,
    now,
)


class Store(
    CatalogueStore, ItemStore, QaStore, AccountStore, AuditStore, LifecycleStore, DisposalStore, LookupStore
):
    """The whole state store."""


def open_store(settings: Any) -> Store:
    """The state store the settings name, keyed and anchored in their home folder."""
    return Store(settings.state_url, home=settings.home_dir)


__all__ = [
    "open_store",
    "MIGRATIONS",
    "AuditRow",
    "Base",
    "BatchRow",
    "CatalogueImport",
    "CatalogueRow",
    "ChainCheck",
    "DecisionRow",
    "FindingRow",
    "IndexPendingRow",
    "ItemRow",
    "PackageResult",
    "PackageRow",
    "QaCaseRow",
    "SessionRow",
    "Store",
    "TokenRow",
    "UserRow",
    "append_audit",
    "aware",
    "database_url",
    "now",
    "owner_only",
    "upgrade_schema",
]
