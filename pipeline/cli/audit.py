"""`capture audit-log verify|show`: the audit log's hash chain."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from pipeline.cli.common import acting_user, audit_app, console, err_console, settings
from pipeline.errors import AuditChainBroken


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the chain of every audit row: exit 0 when intact, 10 naming each changed or missing row."""
    from pipeline.store import open_store

    config = settings()
    store = open_store(config)
    try:
        check = store.verify_audit_chain()
        store.audit(acting_user(), "audit.verify", "", {"rows": check.rows, "intact": check.intact})
    finally:
        store.close()
    for problem in check.problems:
        err_console.print(f"  [red]{problem}[/]", highlight=False)
    if not check.intact:
        raise AuditChainBroken(f"the audit log is not intact: {len(check.problems)} problems (listed above)")
    console.print(f"audit log intact: {check.rows} rows; last hash {check.last_hash}", highlight=False)


@audit_app.command("show")
def audit_show(
    limit: Annotated[int, typer.Option(min=1, max=100000, help="The last N rows")] = 50,
    action: Annotated[str | None, typer.Option(help="Only this action (search, view, login, ...)")] = None,
) -> None:
    """The last rows of the audit log as JSON lines (who, when, what)."""
    from pipeline.store import open_store

    config = settings()
    store = open_store(config)
    try:
        rows = store.audit_log(action, limit=limit)
    finally:
        store.close()
    for row in rows:
        line = {
            "id": row.id,
            "at": row.at.isoformat(),
            "user": row.user,
            "action": row.action,
            "target": row.target,
            "details": row.details,
        }
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
