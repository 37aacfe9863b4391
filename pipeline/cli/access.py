"""`capture access ...` (requests and grants) and `capture lookups ...` (the lookup register)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import access_app, console, lookups_app
from pipeline.cli.disposal import UserOption, account
from pipeline.cli.lifecycle import lifecycle_store, parse_day

ReasonOption = Annotated[str, typer.Option(help="Why (required)")]


@access_app.command("request")
def access_request(
    archive_code: str,
    purpose: Annotated[str, typer.Option(help="What the item is needed for (required)")],
    days: Annotated[int | None, typer.Option(help="For how many days (default grants.default_days)")] = None,
    user: UserOption = None,
) -> None:
    """Ask for one item above your clearance or outside your fonds, with a purpose."""
    from pipeline.lookups import request_access

    with lifecycle_store() as (config, store):
        row = request_access(config, store, account(store, user), archive_code, purpose, days)
    console.print(
        f"request {row.id}: {row.archive_code} for {row.days} days, waiting for an archivist", markup=False
    )


@access_app.command("list")
def access_list(
    status: Annotated[str | None, typer.Option(help="pending, approved, refused or revoked")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Access requests, newest first."""
    with lifecycle_store() as (_, store):
        rows = store.access_requests(status=status)
    data = [
        {
            "id": r.id,
            "user": r.username,
            "archive_code": r.archive_code,
            "purpose": r.purpose,
            "status": r.status,
            "requested_at": r.requested_at.isoformat(timespec="seconds"),
            "decided_by": r.decided_by,
            "granted_until": r.granted_until.isoformat(timespec="seconds") if r.granted_until else None,
        }
        for r in rows
    ]
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        return
    table = Table(title="access requests")
    for column in ("id", "user", "archive code", "purpose", "status", "decided by", "until"):
        table.add_column(column)
    for d in data:
        table.add_row(
            *(
                str(d[k] or "")
                for k in ("id", "user", "archive_code", "purpose", "status", "decided_by", "granted_until")
            )
        )
    console.print(table)


@access_app.command("approve")
def access_approve(
    request_id: int,
    reason: ReasonOption,
    days: Annotated[int | None, typer.Option(help="Grant for this many days (default: as asked)")] = None,
    hours: Annotated[float | None, typer.Option(help="Or for this many hours")] = None,
    user: UserOption = None,
) -> None:
    """Approve a request: that user sees that item, and nothing more, until the grant ends by itself."""
    from pipeline.lookups import decide_request

    with lifecycle_store() as (config, store):
        row = decide_request(
            config,
            store,
            account(store, user),
            request_id,
            approve=True,
            reason=reason,
            days=days,
            hours=hours,
        )
    until = row.granted_until.isoformat(timespec="seconds") if row.granted_until else ""
    console.print(
        f"request {request_id} approved: {row.username} may see {row.archive_code} until {until}",
        markup=False,
        soft_wrap=True,
    )


@access_app.command("refuse")
def access_refuse(request_id: int, reason: ReasonOption, user: UserOption = None) -> None:
    """Refuse a request, with a reason."""
    from pipeline.lookups import decide_request

    with lifecycle_store() as (config, store):
        decide_request(config, store, account(store, user), request_id, approve=False, reason=reason)
    console.print(f"request {request_id} refused", markup=False, soft_wrap=True)


@access_app.command("revoke")
def access_revoke(request_id: int, reason: ReasonOption, user: UserOption = None) -> None:
    """End a live grant now."""
    from pipeline.lookups import revoke

    with lifecycle_store() as (_, store):
        revoke(store, account(store, user), request_id, reason)
    console.print(f"the grant of request {request_id} has ended", markup=False, soft_wrap=True)


@lookups_app.command("export")
def lookups_export(
    out: Path,
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD)")],
    end: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD), inclusive")],
) -> None:
    """Write the lookup register between two dates as XLSX: who, when, which item, view or download,
    the purpose and the approval where a grant was used."""
    from pipeline.cli.common import acting_user
    from pipeline.lookups import export_register

    first, last = parse_day(start, "--from"), parse_day(end, "--to")
    with lifecycle_store() as (_, store):
        lines = export_register(store, out, first, last)
        store.audit(
            acting_user(), "lookups.export", str(out)[:500], {"from": start, "to": end, "lines": lines}
        )
    console.print(f"{lines} lookups from {first} to {last} written to {out}", markup=False, soft_wrap=True)
