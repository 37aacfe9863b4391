"""Security levels (密级), clearances and fonds: the facts every search and view is filtered by.

Levels are ordered; a user cleared up to a level sees items at that level and below. The
names are the ones catalogues use (Chinese or English). An empty level counts as the
configured default; a level nobody recognises counts as the highest, so a typo in the
catalogue hides an item rather than exposing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LEVELS: tuple[str, ...] = ("公开", "内部", "秘密", "机密", "绝密")
_ALIASES: dict[str, int] = {
    "公开": 0,
    "公開": 0,
    "public": 0,
    "内部": 1,
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
DEFAULT_LEVEL = "内部"


def rank(level: str, *, default: str = DEFAULT_LEVEL) -> int:
    """The numeric rank of a level name (0 = 公开 ... 4 = 绝密)."""
    name = level.strip().lower()
    if not name:
        name = default.strip().lower()
    if name.isdigit():
        return min(int(name), HIGHEST)
    return _ALIASES.get(name, HIGHEST)


def parse_clearance(value: str) -> int:
    """A clearance given by a person (name or 0-4); unknown names are an error, not a guess."""
    name = value.strip().lower()
    if name.isdigit() and int(name) <= HIGHEST:
        return int(name)
    if name in _ALIASES:
        return _ALIASES[name]
    raise ValueError(f"unknown security level {value!r}; use one of {', '.join(LEVELS)} (or 0-{HIGHEST})")


def level_name(rank_value: int) -> str:
    return LEVELS[max(0, min(rank_value, HIGHEST))]


def fonds_of(archive_code: str) -> str:
    """The fonds (全宗号) is the first part of the archive code: BX01 in BX01-2012-CB-D10-0001."""
    return archive_code.split("-", 1)[0]


@dataclass(frozen=True)
class Access:
    """What one searcher may reach: a clearance, optionally some fonds only, QA-held items or not."""

    clearance: int = HIGHEST
    fonds: tuple[str, ...] = field(default_factory=tuple)  # empty: every fonds
    see_held: bool = False  # QA staff see items waiting for a QA decision

    def allows(self, security_rank: int, fonds: str, visible: bool) -> bool:
        if security_rank > self.clearance:
            return False
        if self.fonds and fonds not in self.fonds:
            return False
        return visible or self.see_held


FULL_ACCESS = Access(HIGHEST, (), True)
