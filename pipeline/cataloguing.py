"""Importing a catalogue (归档目录), and carrying what changed into the search index.

A re-import can raise an item's security level or change the fields searchers see; every
archived item whose entry changed is indexed again before the import returns, on whichever
backend the settings name, so a reclassified item is never findable at its old level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.catalog import read_catalogue
from pipeline.models import CatalogueLoad
from pipeline.settings import Settings
from pipeline.store import Store, open_store


@dataclass
class ImportOutcome:
    loaded: CatalogueLoad
    written: int
    refreshed: list[str] = field(default_factory=list)  # archived items indexed again
    not_indexed: list[tuple[str, str]] = field(default_factory=list)  # (code, why): hidden until re-indexed


def import_catalogue(
    settings: Settings, path: Path, *, user: str, store: Store | None = None
) -> ImportOutcome:
    """Read, write and re-index what changed; rejected rows are in `loaded.problems`."""
    loaded = read_catalogue(path)
    own = store is None
    db = store or open_store(settings)
    try:
        result = db.import_catalogue(loaded.entries, str(path))
        outcome = ImportOutcome(loaded, result.count)
        archived = [code for code in sorted(result.changed) if _packaged(db, code)]
        if archived:
            from pipeline.index import open_backend
            from pipeline.reindex import refresh_items

            index = open_backend(settings)
            try:
                outcome.not_indexed = refresh_items(settings, index, db, archived)
            finally:
                index.close()
            failed = {code for code, _ in outcome.not_indexed}
            outcome.refreshed = [code for code in archived if code not in failed]
        db.audit(
            user,
            "catalogue.import",
            path.name[:200],
            {
                "rows": result.count,
                "rejected": len(loaded.problems),
                "changed": {code: list(fields) for code, fields in list(result.changed.items())[:200]},
                "reindexed": len(outcome.refreshed),
            },
        )
        return outcome
    finally:
        if own:
            db.close()


def _packaged(store: Store, code: str) -> bool:
    row = store.item(code)
    return row is not None and row.pdf_sha256 is not None
