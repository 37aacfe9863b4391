"""Security levels (密级), clearances and fonds: the facts every search and view is filtered by.

Levels are ordered; a user cleared up to a level sees items at that level and below. The
names are the ones catalogues use (Chinese, Traditional or English). A catalogue cell must
name a level: an unrecognised value is a rejected row at import (pipeline.catalog), and
whatever reaches `rank` without a recognised name (an empty cell, a value stored by an older
version) counts as the highest level, so a gap in the catalogue hides an item rather than
exposing it. Numbers are never levels in a catalogue.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

LEVELS: tuple[str, ...] = ("公开", "内部", "秘密", "机密", "绝密")
_ALIASES: dict[str, int] = {
    "公开": 0,
    "公開": 0,
    "public": 0,
    "内部": 1,
    "內部": 1,
    "internal": 1,
    "秘密": 2,
    "secret": 2,
    "confidential": 2,
    "机密": 3,
    "機密": 3,
    "classified": 3,
    "绝密": 4,
    "絕密": 4,
    "top secret": 4,
    "top-secret": 4,
}
HIGHEST = len(LEVELS) - 1
_CLEARANCE_DIGITS = {str(i): i for i in range(HIGHEST + 1)}


def _key(value: object) -> str:
    text = unicodedata.normalize("NFKC", str(value)).strip().lower()
    return " ".join(text.split())


def level_rank(value: object) -> int | None:
    """The rank of a recognised level name (0 = 公开 ... 4 = 绝密); None for anything else."""
    return _ALIASES.get(_key(value))


def canonical_level(value: object) -> str | None:
    """The level's own name (e.g. 'Secret' -> '秘密'); None when it is not a level."""
    found = level_rank(value)
    return None if found is None else LEVELS[found]


def rank(level: object) -> int:
    """The rank used for access: a recognised name's rank, otherwise the highest. Never raises."""
    found = level_rank(level)
    return HIGHEST if found is None else found


def parse_clearance(value: str) -> int:
    """A clearance given by an administrator (a name, or 0-4); anything else is an error."""
    plain = value.strip()
    if plain in _CLEARANCE_DIGITS:  # ASCII digits only: '²' or '０' are not clearances
        return _CLEARANCE_DIGITS[plain]
    found = _ALIASES.get(_key(value))
    if found is None:
        raise ValueError(
            f"unknown security level {value[:40]!r}; use one of {', '.join(LEVELS)} (or 0-{HIGHEST})"
        )
    return found


def level_name(rank_value: int) -> str:
    return LEVELS[max(0, min(rank_value, HIGHEST))]


def fonds_of(archive_code: str) -> str:
    """The fonds (全宗号) is the first part of the archive code: BX01 in BX01-2012-CB-D10-0001."""
    return archive_code.split("-", 1)[0]


@dataclass(frozen=True)
class Access:
    """The search filter for one person (made by pipeline.access.search_access): a clearance,
    optionally some fonds only, whether items held for QA are included, and the archive codes
    of the person's live access grants (each reachable whatever its level and fonds; a grant
    never lifts a QA hold)."""

    clearance: int = HIGHEST
    fonds: tuple[str, ...] = field(default_factory=tuple)  # empty: every fonds
    see_held: bool = False
    granted: tuple[str, ...] = field(default_factory=tuple)


FULL_ACCESS = Access(HIGHEST, (), True)
