"""The QA gate: which items wait for a person, and when searchers may see an item.

Only files that passed QA enter the archive's searchable part (DA/T 36-2007). An item with a
finding a person should look at (anything but INFO) is packaged and held back: a QA case is
opened and the item stays hidden until QA approves or corrects it. The state store applies
these rules when it records an item (in the same transaction that records the package).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.models import ItemResult, Severity

SEARCHABLE = ("none", "approved", "corrected")


def flags_of(item: ItemResult) -> list[dict[str, Any]]:
    """The findings a person must look at."""
    return [f.to_dict() for f in item.findings if f.severity != Severity.INFO]


@dataclass(frozen=True)
class Gate:
    open_case: bool  # open a new QA case for the item
    qa_status: str  # none / open / approved / rescan / corrected


def gate(
    flags: list[dict[str, Any]], *, new_package: bool, known: bool, current_status: str, case_open: bool
) -> Gate:
    """The item's QA state after recording it.

    A new package (or an item seen for the first time) with flags opens a case, unless one is
    open already; the same package recorded again keeps the decisions QA made on it."""
    if flags and not case_open and (new_package or not known or current_status == "none"):
        return Gate(True, "open")
    if new_package or not known:
        return Gate(False, "open" if flags else "none")
    return Gate(False, current_status)


def searchable(qa_status: str, pdf_sha256: str | None) -> bool:
    """Searchers see an item once it passed QA (straight through, approved or corrected)."""
    return pdf_sha256 is not None and qa_status in SEARCHABLE
