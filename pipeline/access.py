"""The one access decision: may this person see, or act on, this item?

Every route asks here: search (as a filter the backend applies inside its own query), the
item record, the PDF, page images and thumbnails, the QA queue, case pages and decisions,
batch pages, the CLI, the web pages and the API. The facts it weighs are the item's security
level (from the catalogue as it is now), its fonds, whether QA holds it back, the person's
role, clearance and fonds, and whether the person holds a live access grant for exactly this
item (an approved access request, until it ends by itself; pipeline.lookups). An item outside
a person's reach is answered exactly like an item that does not exist.

    action       searcher        qa / admin
    view         passed QA       any state      } and always: level <= clearance and fonds
    download     passed QA       any state      }   allowed, or a live grant for this user
    page         passed QA       any state      }   and this item (a grant never lifts a QA hold)
    qa.view      never           any state      } level <= clearance, fonds allowed (no grants)
    qa.decide    never           any state      }

Roles: searcher; qa (QA queue and decisions); appraiser (disposal decisions and approvals,
pipeline.disposal); archivist (decides access requests, reads the lookup register); admin
(all of these). Appraisers and archivists search and view like searchers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from pipeline.errors import Forbidden
from pipeline.security import HIGHEST, Access, fonds_of, level_name, rank

if TYPE_CHECKING:  # the ORM store: a search decides access without importing it
    from pipeline.store import Store

ROLES = ("searcher", "qa", "appraiser", "archivist", "admin")


class Action(StrEnum):
    VIEW = "view"
    DOWNLOAD = "download"
    PAGE = "page"
    QA_VIEW = "qa.view"
    QA_DECIDE = "qa.decide"


QA_ACTIONS = frozenset({Action.QA_VIEW, Action.QA_DECIDE})
GRANTABLE = frozenset({Action.VIEW, Action.DOWNLOAD, Action.PAGE})


@dataclass(frozen=True)
class Principal:
    """Who is asking, and what they may reach."""

    username: str
    role: str
    clearance: int
    fonds: tuple[str, ...]
    display_name: str = ""
    user_id: str = ""

    @property
    def is_qa(self) -> bool:
        return self.role in ("qa", "admin")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_appraise(self) -> bool:
        """Decides and approves disposal lists (保管期限鉴定)."""
        return self.role in ("appraiser", "admin")

    @property
    def can_grant(self) -> bool:
        """Decides access requests and reads the lookup register."""
        return self.role in ("archivist", "admin")

    def describe(self) -> str:
        where = ", ".join(self.fonds) if self.fonds else "all fonds"
        return f"{self.username} ({self.role}, cleared to {level_name(self.clearance)}, {where})"


def operator(name: str) -> Principal:
    """The person at the server's own command line: an administrator with every level and fonds."""
    return Principal(name, "admin", HIGHEST, ())


@dataclass(frozen=True)
class ItemFacts:
    """What access to one item depends on."""

    archive_code: str
    security_rank: int
    fonds: str
    visible: bool  # passed QA: searchers may see it
    packaged: bool = True  # False: processed, but no package could be made (a failed item)


def item_facts(store: Store, archive_code: str) -> ItemFacts | None:
    """The facts of a processed item, from the state store as it is now; None if there is none."""
    row = store.item(archive_code)
    if row is None or row.qa_status == "disposed":  # destroyed (pipeline.disposal): only a tombstone left
        return None
    entry = store.catalogue_entry(archive_code)
    level = entry.security_level if entry is not None else ""  # unknown to the catalogue: highest
    return ItemFacts(
        archive_code, rank(level), fonds_of(archive_code), bool(row.visible), row.pdf_sha256 is not None
    )


def permits(who: Principal, facts: ItemFacts, action: Action, *, granted: bool = False) -> bool:
    """`granted`: `who` holds a live grant for exactly this item (the caller looked it up)."""
    if action in QA_ACTIONS and not who.is_qa:
        return False
    within = facts.security_rank <= who.clearance and (not who.fonds or facts.fonds in who.fonds)
    if not within and not (granted and action in GRANTABLE):
        return False
    if action in QA_ACTIONS:  # a failed item's case is QA's too: it can be sent for rescanning
        return True
    return facts.packaged and (facts.visible or who.is_qa)


def search_access(who: Principal, *, include_held: bool = False, granted: tuple[str, ...] = ()) -> Access:
    """The same rules as `permits`, as the filter a search backend applies inside its query;
    `granted`: the archive codes of `who`'s live grants."""
    if include_held and not who.is_qa:
        raise Forbidden("only QA staff may search items held for QA")
    return Access(who.clearance, who.fonds, see_held=include_held, granted=tuple(sorted(set(granted))))


def reaches_fonds(who: Principal, archive_code: str) -> bool:
    return not who.fonds or fonds_of(archive_code) in who.fonds
