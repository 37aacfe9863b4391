"""Registered lookups (查档登记): access requests, time-limited grants, and the lookup register.

A person who needs an item above their clearance or outside their fonds (they know its 档号
from a paper register or a letter) asks for it with a purpose. An archivist (or an admin), who
may reach the item themselves and is not the person asking, approves it for a limited time or
refuses it, with a reason. While the grant lives, pipeline.access lets that person, and nobody
else, see that item and nothing more (search, view, PDF, page images); it ends by itself at
`granted_until` (or when revoked). Every view and download is written to the register with
who, when, which item, and the grant it used: its purpose and who approved it.
"""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from pipeline.access import Action, Principal, item_facts, permits
from pipeline.archive import write_read_only
from pipeline.errors import AccessRequestError, Forbidden, UnsafeNameError
from pipeline.intake import validate_archive_code
from pipeline.settings import Settings
from pipeline.store import Store
from pipeline.store.schema import AccessRequestRow

MAX_PURPOSE = 500
MAX_REASON = 2000
REGISTER_HEADERS = [
    "时间 (UTC)",
    "用户",
    "档号",
    "操作",
    "途径",
    "调阅目的",
    "批准人",
    "批准时间",
    "有效期至",
    "申请号",
]


@dataclass(frozen=True)
class RegisterLine:
    at: datetime
    username: str
    archive_code: str
    action: str
    via: str
    request_id: int | None
    purpose: str = ""
    approved_by: str = ""
    approved_at: datetime | None = None
    granted_until: datetime | None = None


@dataclass(frozen=True)
class AccessOverview:
    mine: list[AccessRequestRow]
    pending: list[AccessRequestRow]  # for archivists: what waits for a decision
    decided: list[AccessRequestRow]


def _text(value: str, what: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise AccessRequestError(f"a {what} is required")
    if len(text) > limit:
        raise AccessRequestError(f"the {what} is {len(text)} characters long; at most {limit}")
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n" for c in text):
        raise AccessRequestError(f"the {what} contains a control character")
    return text


def request_access(
    settings: Settings, store: Store, who: Principal, archive_code: str, purpose: str, days: int | None = None
) -> AccessRequestRow:
    """Ask for one item, with a purpose. Whether the item exists is not revealed here."""
    if not who.user_id:
        raise AccessRequestError("only accounts ask for access (log in, or --user NAME)")
    try:
        code = validate_archive_code(archive_code.strip())
    except UnsafeNameError:
        raise AccessRequestError(f"{archive_code[:100]!r} is not an archive code (档号)") from None
    wanted = days or settings.grants.default_days
    if not 1 <= wanted <= settings.grants.max_days:
        raise AccessRequestError(f"a grant lasts 1 to {settings.grants.max_days} days")
    why = _text(purpose, "purpose", MAX_PURPOSE)
    return store.add_access_request(who.user_id, who.username, code, why, wanted)


def decide_request(
    settings: Settings,
    store: Store,
    who: Principal,
    request_id: int,
    *,
    approve: bool,
    reason: str,
    days: int | None = None,
    hours: float | None = None,
) -> AccessRequestRow:
    """Approve (for `days`, or `hours`; default the days asked for) or refuse a pending request."""
    if not who.can_grant:
        store.audit(who.username, "access.decide.refused", str(request_id), {"why": "archivists only"})
        raise Forbidden("only archivists (or admins) decide access requests")
    row = store.access_request(request_id)
    if row is None or row.status != "pending":
        raise AccessRequestError(f"request {request_id} is not pending")
    if row.user_id == who.user_id or row.username == who.username:
        raise AccessRequestError("nobody decides their own access request")
    why = _text(reason, "reason", MAX_REASON)
    until = None
    if approve:
        facts = item_facts(store, row.archive_code)
        if facts is None or not permits(who, facts, Action.VIEW):
            raise AccessRequestError(f"{row.archive_code} is no archived item within your own reach")
        limit = settings.grants.max_days
        if hours is not None:
            if not 0 < hours <= limit * 24:
                raise AccessRequestError(f"a grant lasts more than 0 and at most {limit * 24} hours")
            length = timedelta(hours=hours)
        else:
            wanted = days or row.days
            if not 1 <= wanted <= limit:
                raise AccessRequestError(f"a grant lasts 1 to {limit} days")
            length = timedelta(days=wanted)
        until = datetime.now(UTC) + length
    return store.decide_access_request(request_id, approve=approve, by=who.username, reason=why, until=until)


def revoke(store: Store, who: Principal, request_id: int, reason: str) -> AccessRequestRow:
    if not who.can_grant:
        raise Forbidden("only archivists (or admins) revoke access grants")
    return store.revoke_access_grant(request_id, who.username, _text(reason, "reason", MAX_REASON))


def day_range(start: date, end: date) -> tuple[datetime, datetime]:
    """From the start of `start` to the end of `end`, in UTC."""
    if end < start:
        raise AccessRequestError(f"--to {end} is before --from {start}")
    return datetime.combine(start, time(), UTC), datetime.combine(end + timedelta(days=1), time(), UTC)


def register(
    store: Store, start: date, end: date, *, archive_code: str = "", username: str = "", limit: int = 0
) -> list[RegisterLine]:
    """The register between two dates (inclusive), each line with its grant's purpose and approval."""
    since, until = day_range(start, end)
    rows = store.lookups(since, until, archive_code=archive_code, username=username, limit=limit)
    grants = store.requests_by_id({r.request_id for r in rows if r.request_id is not None})
    lines = []
    for row in rows:
        grant = grants.get(row.request_id) if row.request_id is not None else None
        lines.append(
            RegisterLine(
                row.at,
                row.username,
                row.archive_code,
                row.action,
                row.via,
                row.request_id,
                grant.purpose if grant else "",
                grant.decided_by or "" if grant else "",
                grant.decided_at if grant else None,
                grant.granted_until if grant else None,
            )
        )
    return lines


def _when(at: datetime | None) -> str:
    if at is None:
        return ""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def export_register(store: Store, path: Path, start: date, end: date) -> int:
    """Write the register between two dates as XLSX; the number of lines written."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    lines = register(store, start, end)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "查档登记"
    sheet.append(REGISTER_HEADERS)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for line in lines:
        sheet.append(
            [
                _when(line.at),
                line.username,
                line.archive_code,
                {"view": "查看", "download": "下载"}.get(line.action, line.action),
                line.via,
                line.purpose,
                line.approved_by,
                _when(line.approved_at),
                _when(line.granted_until),
                line.request_id or "",
            ]
        )
    buffer = io.BytesIO()
    book.save(buffer)
    write_read_only(path, buffer.getvalue())
    return len(lines)
