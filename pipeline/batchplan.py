"""A batch's plan and its items' outcomes, kept in the work folder where every worker can read them.

The batch flow plans once (snapshots of every source file, the catalogue entry, reuse of what
is already packaged) and writes the plan here; the runs that do the work on the items, in this
process or on other machines, read their share from it by item range. Each finished item
leaves its summary here too, so the batch report is assembled from files, never from Prefect
parameters or results (which must stay small).

    <work>/batches/<batch id>/plan.json           the plan (written once, atomically)
    <work>/batches/<batch id>/items/<档号>.json    one finished item's summary
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.models import CatalogueEntry, PlannedPage, SourceSnapshot
from pipeline.pages import FileProblem


@dataclass
class ItemPlan:
    archive_code: str
    entry: CatalogueEntry | None
    planned: list[PlannedPage]
    problems: list[FileProblem]
    input_key: str
    reusable: bool  # already packaged from the same input: nothing to do but record it
    expected: bool | None = None  # in the manifest? None: the batch has no manifest list

    @property
    def pages(self) -> int:
        return len(self.planned)


@dataclass
class BatchPlan:
    batch_id: str
    batch_dir: str
    items: list[ItemPlan]
    rejected: list[dict[str, str]] = field(default_factory=list)
    loose_files: list[str] = field(default_factory=list)
    batch_findings: list[dict[str, str]] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def pages(self) -> int:
        return sum(item.pages for item in self.items)

    def chunks(self, size: int) -> list[tuple[int, int]]:
        """Item ranges [first, last) of at most `size` items, in batch order."""
        step = max(1, size)
        return [(i, min(i + step, len(self.items))) for i in range(0, len(self.items), step)]


def batch_folder(work_dir: Path, batch_id: str) -> Path:
    from pipeline.intake import validate_archive_code

    validate_archive_code(batch_id)  # batch ids are made of the same safe characters
    return work_dir / "batches" / batch_id


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _snapshot_json(s: SourceSnapshot) -> dict[str, Any]:
    return {
        "original": str(s.original),
        "path": str(s.path),
        "sha256": s.sha256,
        "size": s.size,
        "mtime_ns": s.mtime_ns,
        "read_at": s.read_at,
        "holder": s.holder,
    }


def _snapshot_from(data: dict[str, Any]) -> SourceSnapshot:
    return SourceSnapshot(
        Path(data["original"]),
        Path(data["path"]),
        data["sha256"],
        int(data["size"]),
        int(data["mtime_ns"]),
        data["read_at"],
        data.get("holder", ""),
    )


def write_plan(work_dir: Path, plan: BatchPlan) -> Path:
    snapshots: dict[str, dict[str, Any]] = {}
    items = []
    for item in plan.items:
        pages = []
        for page in item.planned:
            key = str(page.snapshot.path)
            snapshots.setdefault(key, _snapshot_json(page.snapshot))
            pages.append({"snapshot": key, "frame": page.frame, "kind": page.kind})
        items.append(
            {
                "archive_code": item.archive_code,
                "entry": item.entry.to_dict() if item.entry else None,
                "pages": pages,
                "problems": [asdict(p) for p in item.problems],
                "input_key": item.input_key,
                "reusable": item.reusable,
                "expected": item.expected,
            }
        )
    data = {
        "batch_id": plan.batch_id,
        "batch_dir": plan.batch_dir,
        "items": items,
        "snapshots": snapshots,
        "rejected": plan.rejected,
        "loose_files": plan.loose_files,
        "batch_findings": plan.batch_findings,
        "manifest": plan.manifest,
    }
    path = batch_folder(work_dir, plan.batch_id) / "plan.json"
    _write_json(path, data)
    return path


def read_plan(work_dir: Path, batch_id: str) -> BatchPlan:
    data = json.loads((batch_folder(work_dir, batch_id) / "plan.json").read_text(encoding="utf-8"))
    snapshots = {key: _snapshot_from(value) for key, value in data["snapshots"].items()}
    items = [
        ItemPlan(
            archive_code=raw["archive_code"],
            entry=CatalogueEntry(**raw["entry"]) if raw["entry"] else None,
            planned=[PlannedPage(snapshots[p["snapshot"]], p["frame"], p["kind"]) for p in raw["pages"]],
            problems=[FileProblem(**p) for p in raw["problems"]],
            input_key=raw["input_key"],
            reusable=raw["reusable"],
            expected=raw["expected"],
        )
        for raw in data["items"]
    ]
    return BatchPlan(
        data["batch_id"],
        data["batch_dir"],
        items,
        data["rejected"],
        data["loose_files"],
        data["batch_findings"],
        data["manifest"],
    )


def write_outcome(work_dir: Path, batch_id: str, archive_code: str, outcome: dict[str, Any]) -> None:
    """One finished item: its summary, whether it could be indexed, who did the work."""
    _write_json(batch_folder(work_dir, batch_id) / "items" / f"{archive_code}.json", outcome)


def read_outcomes(work_dir: Path, batch_id: str) -> dict[str, dict[str, Any]]:
    folder = batch_folder(work_dir, batch_id) / "items"
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.glob("*.json"):
        try:
            found[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a half-written file cannot exist (atomic writes); a damaged one is redone
    return found
