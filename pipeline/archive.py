"""The archive package layout: where each item's files live, and reading its record.

    <archive>/<档号>/<档号>.pdf              the PDF/A
    <archive>/<档号>/record.json             the item record
    <archive>/<档号>/manifest-sha256.txt     checksums of the package files (sha256sum -c)
    <archive>/<档号>/decisions.jsonl         QA decisions, one JSON object per line
    <archive>/.staging/<档号>.<random>/      a package being written (renamed into place)
    <archive>/.superseded/<档号>.<time>/     earlier packages of an item, never deleted
    <archive>/.damaged/<档号>.<time>/        a damaged package set aside by `capture repair`
    <archive>/.disposed/<档号>.json          the tombstone of a destroyed item (read-only)

Package files are read-only once in place (decisions.jsonl, the append-only QA history beside
them, excepted); folders stay writable, so superseding, repair and disposal move or remove
whole packages. Every archive root (the primary and each registered copy) has this layout.
Archive codes are checked (pipeline.intake.validate_archive_code) before they become paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.intake import validate_archive_code

RECORD_NAME = "record.json"
MANIFEST_NAME = "manifest-sha256.txt"
DECISIONS_NAME = "decisions.jsonl"
STAGING = ".staging"
SUPERSEDED = ".superseded"
DAMAGED = ".damaged"
DISPOSED = ".disposed"
APPEND_ONLY = frozenset({DECISIONS_NAME})  # package files that stay writable (not in the manifest)


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

    @property
    def damaged(self) -> Path:
        return self.root / DAMAGED

    @property
    def disposed(self) -> Path:
        return self.root / DISPOSED

    def tombstone(self, archive_code: str) -> Path:
        return self.disposed / f"{validate_archive_code(archive_code)}.json"

    def superseded_of(self, archive_code: str) -> list[Path]:
        """The item's earlier packages kept in .superseded/, oldest first."""
        if not self.superseded.is_dir():
            return []
        prefix = validate_archive_code(archive_code) + "."
        return sorted(p for p in self.superseded.iterdir() if p.name.startswith(prefix) and p.is_dir())

    def package_codes(self) -> list[str]:
        """The names of the current package folders (dot-folders hold everything else)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def read_record(self, archive_code: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.record(archive_code).read_text(encoding="utf-8"))
        return data

    # -- writing a package: staged, checked, renamed into place -----------------------------

    def new_staging(self, archive_code: str) -> Path:
        """An empty folder to write a package into (renamed into place when it is complete)."""
        self.staging.mkdir(parents=True, exist_ok=True)
        folder = self.staging / f"{validate_archive_code(archive_code)}.{uuid.uuid4().hex}"
        folder.mkdir()
        return folder

    def write_record(self, staging: Path, record: dict[str, Any]) -> Path:
        path = staging / RECORD_NAME
        tmp = staging / f".{RECORD_NAME}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def write_manifest(self, staging: Path, archive_code: str) -> Path:
        """SHA-256 of the PDF and the record, in `sha256sum -c` form."""
        pdf, record = staging / pdf_name(archive_code), staging / RECORD_NAME
        lines = [f"{sha256_of(p)[0]}  {p.name}" for p in (pdf, record)]
        path = staging / MANIFEST_NAME
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def move_into_place(self, staging: Path, archive_code: str) -> Path:
        """Rename the finished staging folder into the archive; an older package is kept aside.

        The package's files are made read-only first, so no package is ever writable in place;
        its folder stays writable, which lets a later rescan move it aside (and repair or
        disposal replace or remove it)."""
        make_read_only(staging)
        final = self.folder(archive_code)
        if final.exists():
            kept = self.superseded / f"{archive_code}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.replace(final, kept)
        os.replace(staging, final)
        return final

    def sweep_staging(self, older_than_seconds: float = 6 * 3600) -> list[str]:
        """Remove packages left half-written by a process that was killed (none is that old)."""
        import time

        removed = []
        if self.staging.is_dir():
            for folder in self.staging.iterdir():
                try:
                    if time.time() - folder.stat().st_mtime > older_than_seconds:
                        remove_tree(folder)
                        removed.append(folder.name)
                except OSError:
                    continue
        return removed

    def append_decision(self, archive_code: str, data: dict[str, Any]) -> None:
        """One QA decision as a line of decisions.jsonl, so the package carries its history."""
        folder = self.folder(archive_code)
        if folder.is_dir():
            with self.decisions(archive_code).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(data, ensure_ascii=False) + "\n")


def read_manifest(path: Path) -> dict[str, str]:
    """file name -> SHA-256 from a manifest (`sha256sum` format); ValueError for a line that is not one."""
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        name = name.removeprefix("*")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"line {number} is not '<sha256>  <file>'")
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"line {number} names {name[:80]!r}, not a file of the package")
        entries[name] = digest
    return entries


def sha256_of(path: Path) -> tuple[str, int]:
    """The file's SHA-256 and size, read once."""
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return digest, handle.tell()


def make_read_only(folder: Path) -> None:
    """Take the write bits off every package file under `folder` (not off decisions.jsonl)."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name not in APPEND_ONLY:
            mode = stat.S_IMODE(path.stat().st_mode)
            os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def remove_tree(path: Path) -> None:
    """Remove a package folder whose files are read-only (a folder made read-only is opened up first)."""

    def retry(function: Any, name: str, _exc: Any) -> None:
        parent = Path(name).parent
        os.chmod(parent, stat.S_IMODE(parent.stat().st_mode) | stat.S_IWUSR | stat.S_IXUSR)
        function(name)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=retry)


def write_read_only(path: Path, data: bytes) -> None:
    """Write a file atomically (temporary name, fsync, rename) and make it read-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)
