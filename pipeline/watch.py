"""The watch folder: notice complete batches, claim them atomically, finish or quarantine them.

Layout inside the watch folder (all on one filesystem, so every move is an atomic rename):

    <watch>/<batch>/                 dropped by a scanning station
    <watch>/processing/<claim id>/   claimed: claim.json, heartbeat, and the batch folder
    <watch>/done/<batch>/            processed
    <watch>/quarantine/<batch>.<time>/  rejected: the original entry and REASON.txt

Polling, not inotify: SMB and NFS shares do not deliver inotify events. A batch is ready when
its station wrote the marker file (READY) or a manifest (batch.json / batch.csv) and nothing
changed since the previous look, or, with neither, when nothing in it changed (sizes and
modification times) for the quiet period. Two watchers on one folder race for the rename into
processing/: exactly one wins. A claim whose watcher stopped beating is taken over by renaming
its claim folder, which again exactly one watcher can do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.catalog import HEADERS, MAX_FILE_BYTES, TableSpec, cell_problem, read_table
from pipeline.errors import UnsafeNameError
from pipeline.intake import invisible_character, validate_archive_code

log = logging.getLogger(__name__)

RESERVED = {"processing", "done", "quarantine"}
MANIFEST_NAMES = ("batch.json", "batch.csv")
# Matched whole (re.fullmatch): `$` would also match before a trailing newline.
_SAFE_BATCH_NAME = re.compile(r"[0-9A-Za-z\u4e00-\u9fff][0-9A-Za-z\u4e00-\u9fff._\- ]{0,119}")


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class Areas:
    incoming: Path

    @property
    def processing(self) -> Path:
        return self.incoming / "processing"

    @property
    def done(self) -> Path:
        return self.incoming / "done"

    @property
    def quarantine(self) -> Path:
        return self.incoming / "quarantine"

    def ensure(self) -> None:
        for folder in (self.incoming, self.processing, self.done, self.quarantine):
            folder.mkdir(parents=True, exist_ok=True)


@dataclass
class Claim:
    folder: Path  # processing/<claim id>
    name: str  # the batch's own folder (or file) name
    batch_id: str
    owner: str

    @property
    def batch_dir(self) -> Path:
        return self.folder / self.name

    def beat(self) -> None:
        (self.folder / "heartbeat").write_text(datetime.now(UTC).isoformat(), encoding="utf-8")


def owner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def unsafe_name_reason(name: str) -> str | None:
    """Why a dropped batch's name cannot be used (None when it can); the name is shown with repr."""
    bad = invisible_character(name)
    if bad:
        return f"batch name {name[:140]!r} contains a control character or line break ({bad})"
    if ".." in name:
        return f"batch name {name!r} contains '..'"
    if not _SAFE_BATCH_NAME.fullmatch(name):
        return f"batch name {name!r} has characters outside letters, digits, space, '.', '_' and '-'"
    return None


# ------------------------------------------------------------------ readiness


def _snapshot(entry: Path) -> tuple[tuple[str, int, int], ...]:
    if not entry.is_dir() or entry.is_symlink():
        stat = entry.lstat()
        return ((entry.name, stat.st_size, stat.st_mtime_ns),)
    files = []
    for path in sorted(entry.rglob("*")):
        try:
            stat = path.lstat()
        except FileNotFoundError:  # removed while we looked: the batch is still changing
            return (("<changing>", -1, time.monotonic_ns()),)
        files.append((str(path.relative_to(entry)), stat.st_size, stat.st_mtime_ns))
    return tuple(files)


@dataclass
class StabilityTracker:
    """Remembers what each candidate looked like, and since when it has not changed."""

    quiet_seconds: float
    marker: str = "READY"
    _seen: dict[str, tuple[tuple[tuple[str, int, int], ...], float]] = field(default_factory=dict)

    def ready(self, entry: Path, now: float | None = None) -> str | None:
        """'marker', 'manifest' or 'quiet' when the batch may be taken; None while it may still change."""
        now = time.monotonic() if now is None else now
        snapshot = _snapshot(entry)
        previous = self._seen.get(entry.name)
        if previous is None or previous[0] != snapshot:
            self._seen[entry.name] = (snapshot, now)
            return None
        names = {item[0] for item in snapshot}
        if self.marker in names:
            return "marker"
        if any(name in names for name in MANIFEST_NAMES):
            return "manifest"
        if now - previous[1] >= self.quiet_seconds:
            return "quiet"
        return None

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)


def candidates(areas: Areas) -> list[Path]:
    return [
        entry
        for entry in sorted(areas.incoming.iterdir(), key=lambda p: p.name)
        if entry.name not in RESERVED and not entry.name.startswith(".")
    ]


# ------------------------------------------------------------------ claims


def _batch_id(name: str, claimed_at: str) -> str:
    cleaned = re.sub(r"[^0-9A-Za-z\u4e00-\u9fff_-]+", "_", name).strip("_")[:60] or "batch"
    stamp = re.sub(r"[^0-9]", "", claimed_at)[:14]
    return f"{cleaned}-{stamp}-{uuid.uuid4().hex[:4]}"


def claim(entry: Path, areas: Areas, owner: str) -> Claim | None:
    """Rename the entry into a fresh claim folder; None if another watcher got there first."""
    folder = areas.processing / f"claim-{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        os.rename(entry, folder / entry.name)
    except FileNotFoundError:
        folder.rmdir()
        return None
    claimed_at = datetime.now(UTC).isoformat(timespec="seconds")
    taken = Claim(folder, entry.name, _batch_id(entry.name, claimed_at), owner)
    _write_claim(taken, claimed_at)
    taken.beat()
    return taken


def _write_claim(taken: Claim, claimed_at: str) -> None:
    data = {"name": taken.name, "batch_id": taken.batch_id, "owner": taken.owner, "claimed_at": claimed_at}
    tmp = taken.folder / f".claim.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, taken.folder / "claim.json")


def take_over_stale(areas: Areas, owner: str, stale_seconds: float) -> list[Claim]:
    """Claims whose watcher stopped beating (killed, crashed): rename them to ourselves."""
    taken = []
    for folder in sorted(areas.processing.glob("claim-*")):
        heartbeat = folder / "heartbeat"
        try:
            age = time.time() - heartbeat.stat().st_mtime
            data = json.loads((folder / "claim.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            age = time.time() - folder.stat().st_mtime if folder.exists() else 0
            data = None
        if age < stale_seconds:
            continue
        if data is None:  # a claim that died between mkdir and writing claim.json
            entries = [
                p for p in folder.iterdir() if p.name not in ("heartbeat",) and not p.name.startswith(".")
            ]
            if not entries:
                continue
            data = {"name": entries[0].name, "batch_id": _batch_id(entries[0].name, "0"), "claimed_at": ""}
        new_folder = areas.processing / f"claim-{uuid.uuid4().hex}"
        try:
            os.rename(folder, new_folder)
        except FileNotFoundError:
            continue  # another watcher took it over first
        resumed = Claim(new_folder, data["name"], data["batch_id"], owner)
        _write_claim(resumed, data.get("claimed_at", ""))
        resumed.beat()
        log.warning("took over batch %s from a stopped watcher (%s)", data["name"], data.get("owner"))
        taken.append(resumed)
    return taken


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    if not target.exists():
        return target
    return folder / f"{name}.{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:4]}"


def finish(taken: Claim, areas: Areas) -> Path:
    target = _free_name(areas.done, taken.name)
    os.rename(taken.batch_dir, target)
    _remove_claim_folder(taken)
    return target


def quarantine(taken: Claim, areas: Areas, reason: str) -> Path:
    """Move the batch, untouched, into quarantine/ beside a REASON.txt; nothing is deleted."""
    safe = re.sub(r"[^0-9A-Za-z\u4e00-\u9fff_-]+", "_", taken.name).strip("_")[:60] or "batch"
    target = _free_name(areas.quarantine, f"{safe}.{datetime.now(UTC):%Y%m%dT%H%M%S}")
    target.mkdir()
    os.rename(taken.batch_dir, target / taken.name)
    (target / "REASON.txt").write_text(
        f"batch: {taken.name}\nbatch id: {taken.batch_id}\nquarantined: {datetime.now(UTC).isoformat()}\n"
        f"reason: {reason}\n",
        encoding="utf-8",
    )
    _remove_claim_folder(taken)
    return target


def _remove_claim_folder(taken: Claim) -> None:
    for name in ("claim.json", "heartbeat"):
        (taken.folder / name).unlink(missing_ok=True)
    try:
        taken.folder.rmdir()
    except OSError:
        log.warning("claim folder %s not empty; left in place", taken.folder)


# ------------------------------------------------------------------ manifests


# batch.csv: read by the catalogue's table reader, so it follows the same rules (any line
# endings, one column per field, cell limits), with ManifestError instead of CatalogueError.
MANIFEST_HEADERS: dict[str, tuple[str, ...]] = {
    "archive_code": HEADERS["archive_code"],
    "station": ("station", "扫描站"),
    "operator": ("operator", "操作员"),
    "scan_date": ("scan_date", "scan date", "扫描日期"),
}
MANIFEST_CSV = TableSpec(
    MANIFEST_HEADERS,
    required=("archive_code",),
    need="档号 (archive_code) and one row per item",
    error=ManifestError,
)


def read_manifest(batch_dir: Path) -> dict[str, Any] | None:
    """batch.json or batch.csv: station, operator, scan date and the archive codes expected.

    batch.json: {"station": ..., "operator": ..., "scan_date": ..., "items": ["档号", ...]}
    batch.csv: a header row with 档号/archive_code (and optionally station, operator, scan_date),
    then one row per expected item.

    Raises only ManifestError (the watcher quarantines the batch with its message): a file that
    cannot be read, a bad header, an unusable cell, a missing, unsafe or repeated archive code.
    """
    json_path, csv_path = batch_dir / "batch.json", batch_dir / "batch.csv"
    if json_path.exists():
        return _json_manifest(json_path)
    if csv_path.exists():
        return _csv_manifest(csv_path)
    return None


def _json_manifest(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ManifestError(f"batch.json is larger than {MAX_FILE_BYTES // 2**20} MB")
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise ManifestError(f"batch.json cannot be read ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"batch.json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError("batch.json must be a JSON object")
    items = data.get("items", [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ManifestError("batch.json 'items' must be a list of archive codes")
    info: dict[str, Any] = {}
    for key in ("station", "operator", "scan_date"):
        value = data.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ManifestError(f"batch.json '{key}' must be text")
        text = str(value).strip()
        why = cell_problem(text)
        if why:
            raise ManifestError(f"batch.json '{key}' {why}")
        info[key] = text
    seen: dict[str, int] = {}
    for number, code in enumerate(items, start=1):
        _check_code(code, f"batch.json item {number}", seen, number, "item")
    return {**info, "items": list(items)}


def _csv_manifest(path: Path) -> dict[str, Any]:
    table = read_table(path, MANIFEST_CSV)
    items: list[str] = []
    seen: dict[str, int] = {}
    for row in table.rows:
        where = f"batch.csv row {row.number}"
        if row.problem:
            raise ManifestError(f"{where}: {row.problem}")
        code = row.values.get("archive_code", "")
        _check_code(code, where, seen, row.number, "row")
        items.append(code)
    if not items:
        raise ManifestError("batch.csv needs a header row with 档号 or archive_code and one row per item")
    first = table.rows[0].values
    return {
        "station": first.get("station", ""),
        "operator": first.get("operator", ""),
        "scan_date": first.get("scan_date", ""),
        "items": items,
    }


def _check_code(code: str, where: str, seen: dict[str, int], number: int, unit: str) -> None:
    if not code:
        raise ManifestError(f"{where}: no archive code (档号)")
    try:
        validate_archive_code(code)
    except UnsafeNameError as exc:
        raise ManifestError(f"{where}: {exc}") from exc
    if code in seen:
        raise ManifestError(f"{where}: archive code {code} is already {unit} {seen[code]}")
    seen[code] = number
