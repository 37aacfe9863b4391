"""`capture disposal list|show|decide|approve|execute`: appraisal (鉴定) and disposal (销毁)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.access import Principal
from pipeline.cli.common import acting_user, console, disposal_app, err_console
from pipeline.cli.lifecycle import lifecycle_store
from pipeline.errors import AccessDenied, NotFound
from pipeline.store import Store

UserOption = Annotated[str | None, typer.Option("--user", help="The account acting (else CAPTURE_USER)")]


def account(store: Store, name: str | None) -> Principal:
    """The active account named by --user (or CAPTURE_USER / USER): its role decides what it may do."""
    from pipeline.users import principal_of

    username = acting_user(name)
    row = store.user(username)
    if row is None or row.disabled:
        store.audit(acting_user(), "cli.refused", username[:100], {"why": "no active account"})
        raise AccessDenied(
            f"no active user {username!r}: this is done by an account (see `capture user list`)"
        )
    return principal_of(row)


@disposal_app.command("list")
def disposal_list(
    due_by: Annotated[int, typer.Option("--due-by", help="Items due on or before the end of this year")],
    out: Annotated[Path | None, typer.Option(help="Where to write the XLSX (default: reports/)")] = None,
) -> None:
    """Make a disposal list of the archived items due for appraisal, saved with an id and written as
    XLSX; items whose due date cannot be computed are reported (and on the XLSX), never listed."""
    from pipeline.disposal import create_list

    with lifecycle_store(write=True) as (config, store):
        made = create_list(config, store, due_by, user=acting_user(), out=out)
    for due in made.missing:
        err_console.print(f"  no due date: {due.archive_code}: {due.problem}", markup=False, soft_wrap=True)
    if made.row is None:
        console.print(f"no archived item is due by the end of {due_by}", markup=False, soft_wrap=True)
        return
    console.print(
        f"disposal list {made.row.id}: {len(made.listed)} items due by the end of {due_by}; "
        f"written to {made.xlsx}",
        markup=False,
        soft_wrap=True,
        highlight=False,
    )


@disposal_app.command("show")
def disposal_show(
    list_id: Annotated[int | None, typer.Argument(help="A list's id (none: every list)")] = None,
    xlsx: Annotated[
        Path | None, typer.Option(help="Also write the list, with its decisions, as XLSX")
    ] = None,
) -> None:
    """Every list with its state, or one list's items with their decisions."""
    from pipeline.disposal import DECISIONS, latest_decisions, write_xlsx

    with lifecycle_store() as (_, store):
        if list_id is None:
            table = Table(title="disposal lists")
            for column in ("id", "due by", "created", "status", "approved by", "executed", "witness"):
                table.add_column(column)
            for row in store.disposal_lists():
                executed = f"{row.executed_by} {row.executed_at:%Y-%m-%d}" if row.executed_at else ""
                created = f"{row.created_by} {row.created_at:%Y-%m-%d}"
                table.add_row(
                    str(row.id),
                    str(row.due_by),
                    created,
                    row.status,
                    row.approved_by or "",
                    executed,
                    row.witness or "",
                )
            console.print(table)
            return
        listed = store.disposal_list(list_id)
        if listed is None:
            raise NotFound(f"no disposal list {list_id}")
        latest = latest_decisions(store.disposal_decisions(list_id))
        items = store.disposal_items(list_id)
        if xlsx is not None:
            write_xlsx(store, list_id, xlsx)
    table = Table(title=f"disposal list {list_id} ({listed.status})")
    for column in ("archive code", "title", "retention", "due", "decision", "reason", "by"):
        table.add_column(column)
    for item in items:
        d = latest.get(item.archive_code)
        verdict = (DECISIONS[d.decision] + (f" {d.keep_years}y" if d.keep_years else "")) if d else ""
        title = str(item.catalogue.get("title", ""))
        table.add_row(
            item.archive_code,
            title,
            item.retention,
            item.due_date,
            verdict,
            d.reason if d else "",
            d.user if d else "",
        )
    console.print(table)


@disposal_app.command("decide")
def disposal_decide(
    list_id: int,
    archive_code: str,
    decision: Annotated[str, typer.Option(help="destroy, keep (with --years) or permanent")],
    reason: Annotated[str, typer.Option(help="Why (required)")],
    years: Annotated[int | None, typer.Option(help="keep: how many more years")] = None,
    user: UserOption = None,
) -> None:
    """An appraiser's decision on one listed item (a later one replaces it until the list is approved)."""
    from pipeline.disposal import decide

    with lifecycle_store() as (_, store):
        who = account(store, user)
        decide(store, who, list_id, archive_code, decision, reason, years)
    console.print(
        f"list {list_id}: {archive_code} -> {decision} (by {who.username})", markup=False, soft_wrap=True
    )


@disposal_app.command("approve")
def disposal_approve(list_id: int, user: UserOption = None) -> None:
    """Approve a list whose every item has a decision; the approver must have decided none of them."""
    from pipeline.disposal import approve

    with lifecycle_store() as (_, store):
        row = approve(store, account(store, user), list_id)
    console.print(f"disposal list {list_id} approved by {row.approved_by}", markup=False, soft_wrap=True)


@disposal_app.command("execute")
def disposal_execute(
    list_id: int,
    witness: Annotated[str, typer.Option(help="Who witnessed the destruction (监销人)")],
) -> None:
    """Destroy the approved list's 'destroy' items in the archive and every registered copy, keep
    their tombstones, take them out of search and close the list. An executed list changes nothing."""
    from pipeline.disposal import execute

    with lifecycle_store(write=True) as (config, store):
        done = execute(config, store, list_id, user=acting_user(), witness=witness)
    if done.already:
        console.print(
            f"disposal list {list_id} was executed before; nothing was changed", markup=False, soft_wrap=True
        )
        return
    console.print(
        f"disposal list {list_id} executed: {len(done.destroyed)} items destroyed ({done.files} files), "
        f"{len(done.kept)} kept; tombstones kept",
        markup=False,
        soft_wrap=True,
        highlight=False,
    )
