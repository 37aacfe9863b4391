"""The archive package layout: where each item's files live, and reading its record.

    <archive>/<档号>/<档号>.pdf              the PDF/A
    <archive>/<档号>/record.json             the item record
    <archive>/<档号>/manifest-sha256.txt     checksums of the package files (sha256sum -c)
    <archive>/<档号>/decisions.jsonl         QA decisions, one JSON object per line
    <archive>/.staging/<档号>.<random>/      a package being written (renamed into place)
    <archive>/.superseded/<档号>.<time>/     earlier packages of an item, never deleted

Archive codes are checked (pipeline.intake.validate_archive_code) before they become paths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.intake import validate_archive_code

RECORD_NAME = "record.json"
MANIFEST_NAME = "manifest-sha256.txt"
DECISIONS_NAME = "decisions.jsonl"
STAGING = ".staging"
SUPERSEDED = ".superseded"


def pdf_name(archive_code: str) -> str:
    return f"{archive_code}.pdf"


@dataclass(frozen=True)
class ArchiveLayout:
    root: Path

    def folder(self, archive_code: str) -> Path:
        return self.root / validate_archive_code(archive_code)

    def pdf(self, archive_code: str) -> Path:
        return self.folder(archive_code) / pdf_name(archive_code)

    def record(self, archive_code: str) -> Path:
        return self.folder(archive_code) / RECORD_NAME

    def manifest(self, archive_code: str) -> Path:
        return self.folder(archive_code) / MANIFEST_NAME

    def decisions(self, archive_code: str) -> Path:
        return self.folder(archive_code) / DECISIONS_NAME

    @property
    def staging(self) -> Path:
        return self.root / STAGING

    @property
    def superseded(self) -> Path:
        return self.root / SUPERSEDED

    def read_record(self, archive_code: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.record(archive_code).read_text(encoding="utf-8"))
        return data
