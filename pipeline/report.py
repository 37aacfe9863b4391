"""The batch report: what happened to every item, as JSON for machines and counts for people."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass
class BatchReport:
    batch_id: str
    batch_dir: str
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    finished_at: str = ""
    items: list[dict[str, Any]] = field(default_factory=list)  # ItemResult.summary() of each item
    workers: dict[str, str] = field(default_factory=dict)  # archive code -> worker (server mode)
    rejected: list[dict[str, str]] = field(default_factory=list)  # folders not taken as items
    loose_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    manifest: dict[str, Any] | None = None
    batch_findings: list[dict[str, str]] = field(default_factory=list)  # e.g. an expected item missing
    not_indexed: list[dict[str, str]] = field(default_factory=list)  # packaged, search index unreachable

    def totals(self) -> dict[str, Any]:
        verdicts = Counter(i["verdict"] for i in self.items)
        pages = sum(i["pages"] for i in self.items)
        flags = sum(1 for i in self.items for f in i["findings"] if f["severity"] != "info")
        return {
            "items": len(self.items),
            "pages": pages,
            "blank_pages": sum(i["blank_pages"] for i in self.items),
            "passed": verdicts.get("passed", 0),
            "needs_qa": verdicts.get("needs_qa", 0),
            "failed": verdicts.get("failed", 0),
            "flags": flags,
            "rejected_folders": len(self.rejected),
            "reused": sum(1 for i in self.items if i["reused"]),
            "straight_through": verdicts.get("passed", 0),
            "waiting_for_qa": verdicts.get("needs_qa", 0) + verdicts.get("failed", 0),
            "batch_findings": len(self.batch_findings),
            "not_indexed": len(self.not_indexed),
            "workers": len(set(self.workers.values())),
            "seconds": round(self.seconds, 1),
            "pages_per_minute": round(pages / self.seconds * 60, 1) if self.seconds else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "batch_dir": self.batch_dir,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "totals": self.totals(),
            "items": self.items,
            "workers": self.workers,
            "rejected_folders": self.rejected,
            "loose_files": self.loose_files,
            "manifest": self.manifest,
            "batch_findings": self.batch_findings,
            "not_indexed": self.not_indexed,
        }

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.batch_id}.json"
        tmp = folder / f".{path.name}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(tmp, path)
        return path
