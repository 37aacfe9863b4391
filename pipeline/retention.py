"""Retention (保管期限): an item's class, the date it counts from, and when it falls due.

The classes are settings (`retention.classes`): each names the catalogue date it counts from
(合同终止日期 contract end, 形成日期 creation) and how many years it runs, or `never` for
permanent items. An item is due on the anniversary of its start date that many years on (29
February falls due on 28 February). An item whose start date is missing, or whose 保管期限
names no class, has no due date: it is reported, never treated as due. An appraisal decision
on an approved disposal list overrides the catalogue: "keep N more years" moves the due date to
N years after the list's approval, "keep permanently" makes the item permanent.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pipeline.models import CatalogueEntry
from pipeline.settings import RetentionClass, RetentionSettings
from pipeline.store import Store

START_FIELDS = {"contract_end": "contract_end_date", "created": "creation_date"}
START_NAMES = {"contract_end": "合同终止日期 (contract end date)", "created": "形成日期 (creation date)"}


@dataclass(frozen=True)
class Due:
    archive_code: str
    retention: str  # as catalogued
    rule: str = ""  # the class's name; "" when the value names no class
    start: date | None = None
    due: date | None = None  # None: permanent, or no due date can be computed (see problem)
    permanent: bool = False
    problem: str = ""  # why there is no due date
    extended: str = ""  # an appraisal decision that moved the due date

    def is_due_by(self, day: date) -> bool:
        return self.due is not None and not self.permanent and self.due <= day

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.rule,
            "start_date": self.start.isoformat() if self.start else "",
            "due_date": self.due.isoformat() if self.due else "",
            "permanent": self.permanent,
            "problem": self.problem,
            "extended": self.extended,
        }


def _key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).strip().lower().split())


def find_class(value: str, settings: RetentionSettings) -> RetentionClass | None:
    wanted = _key(value)
    for cls in settings.classes:
        if wanted in {_key(cls.name), *(_key(a) for a in cls.aliases)}:
            return cls
    return None


def add_years(start: date, years: int) -> date:
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # 29 February in a year that has none
        return start.replace(year=start.year + years, day=28)


def due_of(
    entry: CatalogueEntry,
    settings: RetentionSettings,
    decision: tuple[str, int | None, datetime] | None = None,
) -> Due:
    """The item's due date by its class and start date, and any appraisal decision since."""
    code, value = entry.archive_code, entry.retention
    cls = find_class(value, settings) if value else None
    if cls is None:
        why = (
            "no 保管期限 (retention) in the catalogue" if not value else f"保管期限 {value!r} names no class"
        )
        return Due(code, value, problem=why)
    if decision is not None and decision[0] == "permanent":
        return Due(
            code, value, cls.name, permanent=True, extended=f"kept permanently ({decision[2]:%Y-%m-%d})"
        )
    if cls.counts_from == "never":
        return Due(code, value, cls.name, permanent=True)
    raw = getattr(entry, START_FIELDS[cls.counts_from])
    if not raw:
        return Due(code, value, cls.name, problem=f"no {START_NAMES[cls.counts_from]} in the catalogue")
    start = date.fromisoformat(raw)
    due = add_years(start, cls.years)
    extended = ""
    if decision is not None and decision[0] == "keep" and decision[1]:
        kept = add_years(decision[2].date(), decision[1])
        if kept > due:
            due, extended = kept, f"kept {decision[1]} more years ({decision[2]:%Y-%m-%d})"
    return Due(code, value, cls.name, start, due, extended=extended)


def archived_dues(store: Store, settings: RetentionSettings) -> list[Due]:
    """The due state of every item with a package in the archive."""
    codes = sorted(store.current_packages())
    entries = store.catalogue_entries(codes)
    decisions = store.retention_decisions()
    found = []
    for code in codes:
        entry = entries.get(code)
        if entry is None:
            found.append(Due(code, "", problem="not in the catalogue"))
            continue
        found.append(due_of(entry, settings, decisions.get(code)))
    return found


def item_retention(store: Store, settings: RetentionSettings, entry: CatalogueEntry | None) -> dict[str, Any]:
    """What an item's record shows: its class, start date, due date (or why there is none)."""
    if entry is None:
        return Due("", "", problem="not in the catalogue").to_dict()
    return due_of(
        entry, settings, store.retention_decisions(entry.archive_code).get(entry.archive_code)
    ).to_dict()
