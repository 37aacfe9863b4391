"""Appraisal and disposal (鉴定, 销毁): lists of items due, decisions, a second person's approval,
and destruction that leaves a tombstone.

A list holds the archived items due by the end of a year (pipeline.retention) that are on no
other live list; it is saved in the state store and written as XLSX for the appraisal
committee. Each item gets a decision (destroy, keep N more years, keep permanently) with a
reason from an appraiser; a second, different appraiser approves the whole list (nobody who
decided anything on it may). Executing an approved list destroys its "destroy" items: out of
search first (the configured backend, and the embedded index file if one is left), then a
tombstone (catalogue entry, decisions, approvers, witness, the SHA-256 of every file destroyed
and where it was), then the files (the package, its superseded packages, the same on every
registered copy, and the cleaned page images in the work cache), then the list is closed. An
interrupted execution is finished by running it again; an executed list changes nothing more.
Nothing is touched on a list that is not approved, and lists and tombstones are never changed or
deleted (the store checks it, and the database refuses it by trigger).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.access import Principal
from pipeline.archive import RECORD_NAME, ArchiveLayout, remove_tree, sha256_of, write_read_only
from pipeline.errors import DisposalError, Forbidden, NotFound
from pipeline.fixity import primary_root
from pipeline.index.base import SearchBackend
from pipeline.retention import Due, archived_dues
from pipeline.settings import Settings
from pipeline.store import Store
from pipeline.store.schema import DisposalDecisionRow, DisposalItemRow, DisposalListRow

DECISIONS = {"destroy": "销毁", "keep": "延长保管", "permanent": "永久保存"}
MAX_KEEP_YEARS = 100
COLUMNS = (
    ("archive_code", "档号"),
    ("title", "题名"),
    ("policy_number", "保险合同号"),
    ("policyholder", "投保人"),
    ("job_serial", "作业流水号"),
    ("year", "年度"),
    ("stage", "业务环节"),
    ("retention", "保管期限"),
    ("start_date", "起算日期"),
    ("due_date", "到期日期"),
    ("security_level", "密级"),
    ("box", "盒号"),
    ("page_count", "页数"),
    ("remarks", "备注"),
)
VERDICT_COLUMNS = ("鉴定意见", "延长年限", "鉴定理由", "鉴定人", "鉴定时间")


@dataclass
class NewList:
    row: DisposalListRow | None  # None: nothing was due
    listed: list[Due]
    missing: list[Due]  # no due date can be computed: reported, never listed
    xlsx: Path | None = None


@dataclass
class Executed:
    list_id: int
    destroyed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    files: int = 0
    already: bool = False  # the list was executed before: nothing changed


def _appraiser(who: Principal, store: Store, what: str, target: str) -> None:
    if not who.can_appraise:
        store.audit(who.username, f"{what}.refused", target, {"why": "appraisers only"})
        raise Forbidden("only appraisers (or admins) make and approve appraisal decisions")


def create_list(
    settings: Settings, store: Store, due_by: int, *, user: str, out: Path | None = None
) -> NewList:
    if not 1900 <= due_by <= 9999:
        raise DisposalError(f"--due-by {due_by} is not a year")
    end = date(due_by, 12, 31)
    dues = archived_dues(store, settings.retention)
    busy = store.codes_on_live_lists()
    listed = [d for d in dues if d.is_due_by(end) and d.archive_code not in busy]
    missing = [d for d in dues if d.problem]
    if not listed:
        store.audit(user, "disposal.list", "", {"due_by": due_by, "items": 0, "missing": len(missing)})
        return NewList(None, [], missing)
    entries = store.catalogue_entries(d.archive_code for d in listed)
    rows = [
        {
            "archive_code": d.archive_code,
            "retention": d.retention[:50],
            "start_date": d.start.isoformat() if d.start else "",
            "due_date": d.due.isoformat() if d.due else "",
            "catalogue": entries[d.archive_code].to_dict(),
        }
        for d in listed
    ]
    row = store.create_disposal_list(due_by, user, rows)
    path = out or settings.reports_dir / f"disposal-list-{row.id}.xlsx"
    write_xlsx(store, row.id, path, missing)
    return NewList(row, listed, missing, path)


def write_xlsx(store: Store, list_id: int, path: Path, missing: list[Due] | None = None) -> Path:
    """The list as the appraisal committee reads it (catalogue fields, due dates, decisions)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    listed = store.disposal_list(list_id)
    if listed is None:
        raise NotFound(f"no disposal list {list_id}")
    latest = latest_decisions(store.disposal_decisions(list_id))
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "鉴定清册"
    sheet.append(["序号", *(label for _, label in COLUMNS), *VERDICT_COLUMNS])
    for number, item in enumerate(store.disposal_items(list_id), start=1):
        values = {**item.catalogue, "start_date": item.start_date, "due_date": item.due_date}
        decision = latest.get(item.archive_code)
        verdict: list[Any] = ["", "", "", "", ""]
        if decision is not None:
            verdict = [
                DECISIONS[decision.decision],
                decision.keep_years or "",
                decision.reason,
                decision.user,
                f"{decision.at:%Y-%m-%d %H:%M}",
            ]
        sheet.append([number, *(values.get(key, "") for key, _ in COLUMNS), *verdict])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    if missing:
        gaps = book.create_sheet("无法计算到期日")
        gaps.append(["档号", "保管期限", "原因"])
        for due in missing:
            gaps.append([due.archive_code, due.retention, due.problem])
    info = book.create_sheet("清册信息")
    for label, value in (
        ("清册编号 list", listed.id),
        ("到期截止 due by", f"{listed.due_by}-12-31"),
        ("编制 created by", f"{listed.created_by} {listed.created_at:%Y-%m-%d %H:%M}"),
        ("状态 status", listed.status),
        ("批准 approved by", f"{listed.approved_by or ''} {listed.approved_at or ''}".strip()),
        ("销毁执行 executed by", f"{listed.executed_by or ''} {listed.executed_at or ''}".strip()),
        ("监销 witness", listed.witness or ""),
    ):
        info.append([label, value])
    buffer = io.BytesIO()
    book.save(buffer)
    write_read_only(path, buffer.getvalue())
    return path


def latest_decisions(decisions: list[DisposalDecisionRow]) -> dict[str, DisposalDecisionRow]:
    found: dict[str, DisposalDecisionRow] = {}
    for decision in decisions:  # oldest first: the last one per item wins
        found[decision.archive_code] = decision
    return found


def decide(
    store: Store,
    who: Principal,
    list_id: int,
    archive_code: str,
    decision: str,
    reason: str,
    keep_years: int | None = None,
) -> DisposalDecisionRow:
    _appraiser(who, store, "disposal.decide", archive_code)
    if decision not in DECISIONS:
        raise DisposalError(f"decision {decision[:20]!r} is not one of {', '.join(DECISIONS)}")
    if not reason.strip():
        raise DisposalError("every appraisal decision needs a reason (--reason)")
    if decision == "keep" and not (keep_years and 1 <= keep_years <= MAX_KEEP_YEARS):
        raise DisposalError(f"keeping an item needs --years between 1 and {MAX_KEEP_YEARS}")
    years = keep_years if decision == "keep" else None
    return store.add_disposal_decision(list_id, archive_code, decision, years, reason.strip(), who.username)


def approve(store: Store, who: Principal, list_id: int) -> DisposalListRow:
    _appraiser(who, store, "disposal.approve", str(list_id))
    try:
        return store.approve_disposal_list(list_id, who.username)
    except DisposalError as exc:
        store.audit(who.username, "disposal.approve.refused", str(list_id), {"why": str(exc)[:500]})
        raise


# ---------------------------------------------------------------- execution


def execute(settings: Settings, store: Store, list_id: int, *, user: str, witness: str) -> Executed:
    listed = store.disposal_list(list_id)
    if listed is None:
        raise NotFound(f"no disposal list {list_id}")
    if listed.status == "executed":
        store.audit(user, "disposal.execute", str(list_id), {"already": True})
        return Executed(list_id, already=True)
    if listed.status != "approved":
        raise DisposalError(f"disposal list {list_id} is {listed.status}, not approved; nothing was touched")
    if not witness.strip():
        raise DisposalError("destruction is witnessed: name the witness (--witness)")
    copies = [Path(r.root) for r in store.replicas()]
    away = [str(c) for c in copies if not c.is_dir()]
    if away:
        raise DisposalError(f"registered copies not reachable: {', '.join(away)}; nothing was touched")
    roots = [ArchiveLayout(primary_root(settings)), *(ArchiveLayout(c) for c in copies)]
    latest = latest_decisions(store.disposal_decisions(list_id))
    outcome = Executed(list_id)
    indexes = _search_indexes(settings)
    try:
        for item in store.disposal_items(list_id):
            decision = latest[item.archive_code]
            if decision.decision != "destroy":
                outcome.kept.append(item.archive_code)
                continue
            outcome.files += _destroy(settings, store, indexes, listed, item, roots, user, witness.strip())
            outcome.destroyed.append(item.archive_code)
    finally:
        for index in indexes:
            index.close()
    store.close_disposal_list(list_id, user, witness.strip(), len(outcome.destroyed))
    return outcome


def _destroy(
    settings: Settings,
    store: Store,
    indexes: list[SearchBackend],
    listed: DisposalListRow,
    item: DisposalItemRow,
    roots: list[ArchiveLayout],
    user: str,
    witness: str,
) -> int:
    code = item.archive_code
    tomb = store.tombstone_of(code, listed.id)
    targets = _targets(settings, code, roots)
    if tomb is None:
        destroyed = [
            {"where": where, "path": rel, "sha256": digest, "bytes": size}
            for where, base, path in targets
            for rel, digest, size in _files_of(base, path)
        ]
        _unindex(store, indexes, code)
        decisions = [
            {
                "decision": d.decision,
                "keep_years": d.keep_years,
                "reason": d.reason,
                "user": d.user,
                "at": d.at.isoformat(timespec="seconds"),
            }
            for d in store.disposal_decisions(listed.id)
            if d.archive_code == code
        ]
        assert listed.approved_by is not None and listed.approved_at is not None
        tomb = store.record_tombstone(
            {
                "archive_code": code,
                "list_id": listed.id,
                "catalogue": item.catalogue,
                "decisions": decisions,
                "approved_by": listed.approved_by,
                "approved_at": listed.approved_at,
                "executed_by": user[:100],
                "witness": witness[:200],
                "destroyed": destroyed,
            },
            user,
        )
    else:
        _unindex(store, indexes, code)  # finishing an interrupted execution
    for _, _, path in targets:
        remove_tree(path)
    document = {
        "archive_code": code,
        "list": tomb.list_id,
        "catalogue": tomb.catalogue,
        "retention": {"class": item.retention, "start_date": item.start_date, "due_date": item.due_date},
        "decisions": tomb.decisions,
        "approved_by": tomb.approved_by,
        "approved_at": tomb.approved_at.isoformat(timespec="seconds"),
        "executed_by": tomb.executed_by,
        "witness": tomb.witness,
        "destroyed_at": tomb.destroyed_at.isoformat(timespec="seconds"),
        "destroyed": tomb.destroyed,
    }
    data = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
    for layout in roots:
        write_read_only(layout.tombstone(code), data)
    return len(tomb.destroyed)


def _targets(settings: Settings, code: str, roots: list[ArchiveLayout]) -> list[tuple[str, Path, Path]]:
    """(where, base, path) of everything of the item to destroy: its package and superseded
    packages on every root, and its cleaned page images and page results in the work cache."""
    found: list[tuple[str, Path, Path]] = []
    for number, layout in enumerate(roots):
        where = "archive" if number == 0 else f"copy {layout.root}"
        for path in (layout.folder(code), *layout.superseded_of(code)):
            if path.exists():
                found.append((where, layout.root, path))
    work = settings.work_dir.resolve()
    records = [p / RECORD_NAME for _, _, p in found]
    for record in records:
        try:
            pages = json.loads(record.read_text(encoding="utf-8")).get("pages", [])
        except (OSError, ValueError):
            continue
        for page in pages:
            image = Path(page.get("image_path") or "")
            if not image.name or not image.resolve().is_relative_to(work):
                continue
            key = image.stem.removesuffix("_clean")
            for path in (image, image.with_name(f"{key}_page.json")):
                if path.is_file() and all(path != p for _, _, p in found):
                    found.append(("work cache", work, path))
    return found


def _files_of(base: Path, path: Path) -> list[tuple[str, str, int]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [(f.relative_to(base).as_posix(), *sha256_of(f)) for f in files]


def _search_indexes(settings: Settings) -> list[SearchBackend]:
    """The configured search backend, and the embedded index file if one is left from before."""
    from pipeline.index import open_backend

    indexes = [open_backend(settings)]
    if settings.index.backend != "sqlite" and settings.index_path.is_file():
        indexes.append(open_backend(settings, "sqlite"))
    return indexes


def _unindex(store: Store, indexes: list[SearchBackend], code: str) -> None:
    """Out of search everywhere, before anything else of the item is touched."""
    for index in indexes:
        index.delete_item(code)
    store.clear_index_pending(code)
