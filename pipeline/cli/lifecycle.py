"""`capture fixity|replicate|repair|export|retention`: the archive after capture (operator commands)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import acting_user, app, console, err_console, fixity_app, retention_app, settings
from pipeline.errors import ConfigError, FixityFailed
from pipeline.fixity import Problem
from pipeline.settings import Settings
from pipeline.store import Store, open_store


@contextmanager
def lifecycle_store(write: bool = False) -> Iterator[tuple[Settings, Store]]:
    """Settings and the state store; `write`: the home folder made and temporary files kept in it."""
    from pipeline.cli.common import working_settings

    config = working_settings() if write else settings()
    store = open_store(config)
    try:
        yield config, store
    finally:
        store.close()


def parse_day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text[:40]!r} is not a date (YYYY-MM-DD)") from None


def print_problems(problems: list[Problem], title: str) -> None:
    """One line per problem (never cut short, so a script or a person can find the path)."""
    err_console.print(title, markup=False, soft_wrap=True)
    for p in problems[:1000]:
        err_console.print(
            f"  {p.kind:<10} {p.path}  (item {p.archive_code}): {p.detail}", markup=False, soft_wrap=True
        )


@fixity_app.command("check")
def fixity_check(
    code: Annotated[list[str] | None, typer.Option("--code", help="Only this item (repeatable)")] = None,
    sample: Annotated[int | None, typer.Option(min=1, help="Only N packages chosen at random")] = None,
    copy: Annotated[Path | None, typer.Option("--copy", help="Check the copy at this root instead")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recompute the SHA-256 of every file of every package (or some) against its manifest and the
    state store; exit 0 when all match, 11 naming each damaged, missing or unexpected file."""
    from pipeline.fixity import check_archive

    if code and sample:
        raise ConfigError("give --code or --sample, not both")
    with lifecycle_store() as (config, store):
        report = check_archive(config, store, user=acting_user(), codes=code or (), sample=sample, copy=copy)
    if as_json:
        data = {
            "run": report.run_id,
            "root": report.root,
            "packages": len(report.checks),
            "files": report.files,
            "bytes": report.bytes,
            "seconds": round(report.seconds, 3),
            "problems": [p.to_dict() for p in report.problems],
        }
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    else:
        console.print(
            f"checked {len(report.checks)} packages, {report.files} files, {report.bytes / 2**20:,.1f} MB "
            f"in {report.root} ({report.seconds:.1f} s; run {report.run_id})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if not report.ok:
        print_problems(report.problems, f"{len(report.problems)} fixity problems")
        raise FixityFailed(f"{len(report.problems)} damaged, missing or unexpected files (listed above)")


@fixity_app.command("report")
def fixity_report(
    since: Annotated[str | None, typer.Option(help="List packages not checked since this date")] = None,
) -> None:
    """The last runs, packages whose latest check found damage (exit 11 if any), and coverage."""
    from pipeline.fixity import primary_root

    with lifecycle_store() as (config, store):
        runs = store.fixity_runs(limit=10)
        damaged = store.fixity_status(damaged_only=True)
        packages = store.current_packages()
        root = str(primary_root(config))
        checked = {s.archive_code: s.checked_at for s in store.fixity_status(root)}
    table = Table(title="last fixity runs")
    for column in ("run", "started", "root", "scope", "user", "packages", "files", "problems"):
        table.add_column(column)
    for r in runs:
        started = f"{r.started_at:%Y-%m-%d %H:%M}"
        counts = (str(r.packages), str(r.files), str(r.problems))
        table.add_row(str(r.id), started, r.root, r.scope, r.user, *counts)
    console.print(table)
    if since:
        cut = datetime.combine(parse_day(since, "--since"), datetime.min.time(), UTC)
        stale = sorted(c for c in packages if c not in checked or _aware(checked[c]) < cut)
        console.print(f"{len(packages) - len(stale)} of {len(packages)} packages checked since {since}")
        for code in stale[:200]:
            console.print(f"  not checked since {since}: {code}", markup=False, soft_wrap=True)
    if damaged:
        for status in damaged:
            for p in status.problems:
                err_console.print(
                    f"  {status.root}: {p['kind']} {p['path']}: {p['detail']}", markup=False, soft_wrap=True
                )
        raise FixityFailed(f"{len(damaged)} packages were damaged at their latest check (listed above)")


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@app.command("replicate")
def replicate_command(
    to: Annotated[Path, typer.Option("--to", help="The second archive root (a disk, NAS mount, share)")],
) -> None:
    """Bring a copy of the archive up to date: new, rescanned and disposed packages, each written
    atomically and verified after writing; what is already there and verified is not copied."""
    from pipeline.replicate import replicate

    with lifecycle_store(write=True) as (config, store):
        outcome = replicate(config, store, to, user=acting_user())
    console.print(
        f"{outcome.root}: copied {len(outcome.copied)}, already there and verified {outcome.already}, "
        f"superseded packages copied {len(outcome.superseded)}, destroyed items removed "
        f"{len(outcome.removed)}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if outcome.problems:
        print_problems(outcome.problems, "not copied")
        raise FixityFailed(f"{len(outcome.problems)} problems: those packages were not copied (listed above)")


@app.command("repair")
def repair_command(
    archive_code: str,
    source: Annotated[Path, typer.Option("--from", help="The copy's root to restore from")],
) -> None:
    """Restore a damaged package from a copy, after checking the copy; refuses (exit 11) when the
    copy is damaged too. The damaged package is kept aside in .damaged/."""
    from pipeline.replicate import repair

    with lifecycle_store(write=True) as (config, store):
        outcome = repair(config, store, archive_code, source, user=acting_user())
    if not outcome.repaired:
        console.print(f"{archive_code} is intact; nothing to repair", markup=False, soft_wrap=True)
        return
    for p in outcome.problems_before:
        console.print(f"  was {p.kind}: {p.path} ({p.detail})", markup=False, highlight=False)
    console.print(f"{archive_code} restored from {source}; the damaged package is in {outcome.kept_aside}")


@app.command("export")
def export_command(
    dest: Path,
    year: Annotated[str | None, typer.Option(help="The catalogue year (年度) to hand over")] = None,
    fonds: Annotated[str, typer.Option(help="Only this fonds (全宗)")] = "",
    verify: Annotated[bool, typer.Option("--verify", help="Check an existing bag again instead")] = False,
) -> None:
    """Hand over (移交) the packages of a year as a BagIt bag with the catalogue as XLSX, GB18030 CSV
    and JSON; or, with --verify, validate a bag again (exit 11 if anything changed)."""
    from pipeline.handover import export, verify_bag

    if verify:
        files = verify_bag(dest)
        with lifecycle_store() as (_, store):
            store.audit(acting_user(), "export.verify", str(dest)[:500], {"files": files, "valid": True})
        console.print(
            f"{dest}: a valid bag, {files} payload files match their checksums", markup=False, soft_wrap=True
        )
        return
    if not year:
        raise ConfigError("--year is required (or --verify to check an existing bag)")
    with lifecycle_store(write=True) as (config, store):
        outcome = export(config, store, dest, year=year, fonds=fonds, user=acting_user())
    console.print(
        f"{dest}: {len(outcome.items)} items, {outcome.files} files, {outcome.bytes / 2**20:,.1f} MB; "
        "the bag validates",
        markup=False,
        soft_wrap=True,
        highlight=False,
    )
    if outcome.held:
        console.print(f"left out (held for QA): {', '.join(outcome.held)}", markup=False, soft_wrap=True)


@retention_app.command("due")
def retention_due(
    by: Annotated[int, typer.Option("--by", help="Items due on or before the end of this year")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Archived items due by a year, and every item whose due date cannot be computed (and why)."""
    from pipeline.retention import archived_dues

    end = date(by, 12, 31)
    with lifecycle_store() as (config, store):
        dues = archived_dues(store, config.retention)
        store.audit(acting_user(), "retention.due", str(by))
    due = [d for d in dues if d.is_due_by(end)]
    missing = [d for d in dues if d.problem]
    if as_json:
        data = {"due": [{"archive_code": d.archive_code, **d.to_dict()} for d in due]}
        data["missing"] = [{"archive_code": d.archive_code, **d.to_dict()} for d in missing]
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        return
    table = Table(title=f"due by {end}")
    for column in ("archive code", "class", "counts from", "due"):
        table.add_column(column)
    for d in due:
        table.add_row(d.archive_code, d.rule, str(d.start), str(d.due))
    console.print(table)
    for d in missing:
        err_console.print(f"  no due date: {d.archive_code}: {d.problem}", markup=False, soft_wrap=True)
