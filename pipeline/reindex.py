"""Rebuild the search index from the archive folder, the source of truth, or retry marked items.

Every package folder holds record.json (catalogue fields, per-page OCR lines); visibility to
searchers comes from the state store (an item waiting for QA stays hidden). A full rebuild
fills a new index and switches searchers to it in one step (`SearchBackend.rebuild`); a
batch or a QA decision that wrote through the alias while the new index was filling wrote into
the old one, so every item packaged or decided since the rebuild began is indexed once more
after the switch. Items whose indexing failed during a batch were marked in the state store;
`reindex_pending` indexes them again and clears the marks that succeed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pipeline.archive import RECORD_NAME
from pipeline.errors import IndexUnavailable
from pipeline.index.base import IndexItem, SearchBackend
from pipeline.models import Verdict
from pipeline.process import index_document, item_from_record
from pipeline.settings import Settings
from pipeline.store import Store, now


def index_or_mark(index: SearchBackend, store: Store, doc: IndexItem) -> str | None:
    """Index one item; when the index is unreachable, mark it for re-indexing and say why."""
    try:
        index.index_item(doc)
    except IndexUnavailable as exc:
        store.mark_index_pending(doc.archive_code, str(exc))
        return str(exc)
    store.clear_index_pending(doc.archive_code)
    return None


@dataclass
class ReindexOutcome:
    items: int = 0
    pages: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)
    still_pending: list[tuple[str, str]] = field(default_factory=list)  # (archive code, reason)
    caught_up: list[str] = field(default_factory=list)  # changed while a rebuild ran, indexed again


def package_folders(archive: Path) -> list[Path]:
    """Current package folders (staging and superseded packages live in dot-folders)."""
    if not archive.is_dir():
        return []
    return sorted(p for p in archive.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_item(folder: Path, store: Store) -> IndexItem:
    """The index document of one package folder; ValueError says what is wrong with it.

    The catalogue fields (security level, policy number, ...) are the catalogue's as it is
    now in the state store, not as they were when the item was packaged: a reclassified item
    is indexed at its new level. Visibility comes from the state store too."""
    path = folder / RECORD_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        item = item_from_record(record, folder)
    except FileNotFoundError as exc:
        raise ValueError(f"{path} is missing") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from exc
    current = store.catalogue_entry(item.archive_code)
    if current is not None:
        item.entry = current
    row = store.item(item.archive_code)
    visible = row.visible if row is not None else item.verdict == Verdict.PASSED
    return index_document(item, visible=visible)


def reindex_all(
    settings: Settings, index: SearchBackend, store: Store, tick: Callable[[str], None] | None = None
) -> ReindexOutcome:
    outcome = ReindexOutcome()
    started = now()

    def items() -> Iterator[IndexItem]:
        for folder in package_folders(settings.archive_dir):
            try:
                doc = load_item(folder, store)
            except ValueError as exc:
                outcome.skipped.append((folder.name, str(exc)))
                continue
            outcome.items += 1
            if tick:
                tick(doc.archive_code)
            yield doc

    outcome.pages = index.rebuild(items())
    for code in [p.archive_code for p in store.index_pending()]:
        store.clear_index_pending(code)  # everything in the archive is in the new index
    _catch_up(settings, index, store, outcome, started)
    return outcome


def _index_from_archive(
    settings: Settings, index: SearchBackend, store: Store, code: str, outcome: ReindexOutcome
) -> IndexItem | None:
    """Index one package folder again; None when it was skipped or the index is away (in `outcome`)."""
    try:
        doc = load_item(settings.archive_dir / code, store)
    except ValueError as exc:
        outcome.skipped.append((code, str(exc)))
        return None
    problem = index_or_mark(index, store, doc)
    if problem:
        outcome.still_pending.append((code, problem))
        return None
    return doc


def _catch_up(
    settings: Settings, index: SearchBackend, store: Store, outcome: ReindexOutcome, started: datetime
) -> None:
    """Index again what changed while the rebuild ran (those writes went to the replaced index)."""
    changed = set(store.items_changed_since(started))
    for folder in package_folders(settings.archive_dir):
        try:
            if (folder / RECORD_NAME).stat().st_mtime >= started.timestamp() - 1:
                changed.add(folder.name)
        except OSError:
            continue
    for code in sorted(changed):
        if (settings.archive_dir / code).is_dir() and _index_from_archive(
            settings, index, store, code, outcome
        ):
            outcome.caught_up.append(code)


def refresh_items(
    settings: Settings, index: SearchBackend, store: Store, codes: list[str]
) -> list[tuple[str, str]]:
    """Index these archived items again (their catalogue entry or state changed).

    Returns (archive code, reason) for each that could not be indexed; those are removed
    from the index where possible and marked for `capture reindex --pending`, so an item
    whose level was raised is never left findable at its old level."""
    problems: list[tuple[str, str]] = []

    def withdraw(code: str, reason: str) -> None:
        """Out of search until it can be indexed at its current level."""
        store.mark_index_pending(code, reason)
        try:
            index.delete_item(code)
        except IndexUnavailable:
            pass
        problems.append((code, reason))

    for code in codes:
        folder = settings.archive_dir / code
        try:
            doc = load_item(folder, store)
        except ValueError as exc:  # no readable record: whatever the index holds is out of date
            withdraw(code, str(exc))
            continue
        problem = index_or_mark(index, store, doc)
        if problem:
            withdraw(code, problem)
    return problems


def reindex_pending(
    settings: Settings, index: SearchBackend, store: Store, tick: Callable[[str], None] | None = None
) -> ReindexOutcome:
    outcome = ReindexOutcome()
    for pending in store.index_pending():
        code = pending.archive_code
        folder = settings.archive_dir / code
        if not folder.is_dir():
            index.delete_item(code)  # superseded or withdrawn meanwhile: nothing to show
            store.clear_index_pending(code)
            continue
        doc = _index_from_archive(settings, index, store, code, outcome)
        if doc is None:
            if outcome.still_pending:
                break  # the index is still away; the rest would fail the same way
            continue
        outcome.items += 1
        outcome.pages += len(doc.pages)
        if tick:
            tick(code)
    return outcome
