"""`capture qa list|show|approve|rescan|correct`: the QA queue through the archive service."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from pipeline.archive import ArchiveLayout
from pipeline.cli.common import AsUserOption, console, qa_app, settings
from pipeline.cli.session import archive_service, principal


@qa_app.command("list")
def qa_list(
    status: Annotated[
        str, typer.Option(help="open, approved, rescan, corrected, superseded or all")
    ] = "open",
    batch: Annotated[str | None, typer.Option(help="Only cases from this batch id")] = None,
    as_user: AsUserOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List QA cases (default: the open ones) of the items you may act on."""
    config = settings()
    with archive_service(config) as service:
        who = principal(service.store, as_user)
        queue = service.qa_queue(
            who, status=None if status == "all" else status, batch=batch or "", via="cli"
        )
    rows = [
        {
            "archive_code": r.case.archive_code,
            "batch": r.case.batch_id,
            "status": r.case.status,
            "opened_at": r.case.opened_at.isoformat(timespec="seconds"),
            "findings": [f["code"] for f in r.case.findings],
        }
        for r in queue.rows
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    table = Table(title=f"QA cases ({status})")
    for column in ("archive code", "batch", "status", "opened", "findings"):
        table.add_column(column)
    for r in rows:
        codes = ", ".join(sorted(set(r["findings"])))
        table.add_row(str(r["archive_code"]), str(r["batch"]), str(r["status"]), str(r["opened_at"]), codes)
    console.print(table)
    console.print(f"{len(rows)} cases")


@qa_app.command("show")
def qa_show(
    archive_code: str,
    as_user: AsUserOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The catalogue entry, findings, per-page facts, thumbnails and the PDF of an item."""
    config = settings()
    with archive_service(config) as service:
        who = principal(service.store, as_user)
        shown = service.qa_case(who, archive_code, via="cli")
        thumbs = {
            p["page"]: str(service.page_image(who, archive_code, p["page"], "thumb", via="cli"))
            for p in shown.view.pages
            if p["packaged"]
        }
    view, case, entry = shown.view, shown.case, shown.entry
    findings: list[dict[str, Any]] = case.findings if case else list(view.record.get("findings", []))
    decisions = [
        {"action": d.action, "reason": d.reason, "user": d.user, "at": d.at.isoformat()}
        for d in shown.decisions
    ]
    data: dict[str, Any] = {
        "archive_code": archive_code,
        "qa_status": view.qa_status,
        "visible": view.visible,
        "catalogue": entry.to_dict() if entry else None,
        "pdf": str(ArchiveLayout(config.archive_dir).pdf(archive_code)),
        "findings": findings,
        "pages": [
            {k: p.get(k) for k in ("page", "source", "dpi", "rotation", "skew_deg", "blank", "confidence")}
            for p in view.pages
        ],
        "thumbnails": list(thumbs.values()),
        "decisions": decisions,
    }
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        return
    console.print(
        f"[bold]{archive_code}[/]  QA: {view.qa_status}  searchable: {'yes' if view.visible else 'no'}",
        highlight=False,
    )
    if entry:
        console.print(
            "catalogue: " + ", ".join(f"{k}={v}" for k, v in entry.to_dict().items() if v not in ("", None)),
            highlight=False,
            markup=False,
        )
    else:
        console.print("[red]not in the catalogue[/]")
    for f in findings:
        console.print(f"  {f['code']}: {f['message']}", highlight=False, markup=False)
    pages = Table()
    for column in ("page", "source", "dpi", "rotation", "skew", "blank", "confidence", "thumbnail"):
        pages.add_column(column)
    for p in view.pages:
        pages.add_row(
            str(p["page"]),
            str(p.get("source") or ""),
            str(p.get("dpi")),
            str(p.get("rotation")),
            str(p.get("skew_deg")),
            "yes" if p.get("blank") else "",
            "" if p.get("confidence") is None else f"{p['confidence']:.3f}",
            thumbs.get(p["page"], ""),
        )
    console.print(pages)
    console.print(f"PDF: {data['pdf']}", highlight=False)
    for d in decisions:
        console.print(f"decision: {d['action']} by {d['user']} at {d['at']}: {d['reason']}", markup=False)


def _decide(
    action: str, archive_code: str, reason: str, as_user: str | None, pages: int | None = None
) -> None:
    config = settings()
    with archive_service(config) as service:
        who = principal(service.store, as_user, strict=False)
        outcome = service.decide(who, archive_code, action, reason, pages=pages, via="cli")
    state = "searchable" if outcome.visible else "held back from search"
    console.print(
        f"{archive_code}: {action} recorded; case {outcome.case_status}; item {state}.", highlight=False
    )
    for f in outcome.remaining:
        console.print(f"  still open: {f['code']} {f['message']}", markup=False, highlight=False)


ReasonOption = Annotated[str, typer.Option("--reason", help="Why (required)")]
DeciderOption = Annotated[
    str | None,
    typer.Option(
        "--user",
        "--as-user",
        help="Who decides (default CAPTURE_USER or USER); an account's clearance and fonds apply",
    ),
]


@qa_app.command("approve")
def qa_approve(archive_code: str, reason: ReasonOption, as_user: DeciderOption = None) -> None:
    """Accept the item as it is; it becomes searchable."""
    _decide("approve", archive_code, reason, as_user)


@qa_app.command("rescan")
def qa_rescan(archive_code: str, reason: ReasonOption, as_user: DeciderOption = None) -> None:
    """Send the item back for rescanning; it stays out of search until a rescan supersedes it."""
    _decide("rescan", archive_code, reason, as_user)


@qa_app.command("correct")
def qa_correct(
    archive_code: str,
    pages: Annotated[int, typer.Option("--pages", min=0, max=100000, help="The right page count (页数)")],
    reason: ReasonOption,
    as_user: DeciderOption = None,
) -> None:
    """Correct the catalogue's page count and verify the item again."""
    _decide("correct", archive_code, reason, as_user, pages)
