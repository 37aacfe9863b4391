"""Batch layout: find the item folders of a batch and refuse names that could escape it.

Names from outside (folder names, archive codes) are never trusted as paths: an archive code
must match a strict pattern before it is joined to any path we write.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import BatchBusy, BatchError, UnsafeNameError

# Letters (Latin or CJK), digits, and . _ - inside; no leading dot, no "..", at most 100 chars.
# Always matched whole (re.fullmatch): `$` would also match before a trailing newline.
_ARCHIVE_CODE = re.compile(r"[0-9A-Za-z\u4e00-\u9fff][0-9A-Za-z\u4e00-\u9fff._\-]{0,99}")
ARCHIVE_CODE_MAX_CHARS = 100


# Unicode's control characters (category Cc: C0, DEL, C1) and line/paragraph separators (Zl, Zp).
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def invisible_character(text: str) -> str | None:
    """The first control character or Unicode line/paragraph separator in `text`, as U+XXXX."""
    found = _INVISIBLE.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def validate_archive_code(code: str) -> str:
    """Return the code if it is safe to use as a file name; UnsafeNameError says why not."""
    if not code:
        raise UnsafeNameError("empty archive code")
    shown = repr(code[:120])  # repr: a newline or an escape sequence is shown, never acted on
    bad = invisible_character(code)
    if bad:
        raise UnsafeNameError(f"archive code {shown} contains a control character or line break ({bad})")
    if ".." in code or "/" in code or "\\" in code:
        raise UnsafeNameError(f"archive code {shown} contains a path separator or '..'")
    if len(code) > ARCHIVE_CODE_MAX_CHARS:
        raise UnsafeNameError(
            f"archive code {shown} is {len(code)} characters long; at most {ARCHIVE_CODE_MAX_CHARS}"
        )
    if not _ARCHIVE_CODE.fullmatch(code):
        raise UnsafeNameError(
            f"archive code {shown} has characters outside letters, digits, '.', '_' and '-'"
        )
    return code


@dataclass(frozen=True)
class RejectedFolder:
    name: str
    reason: str


@dataclass(frozen=True)
class BatchLayout:
    batch_id: str
    root: Path
    items: tuple[tuple[str, Path], ...]  # (archive code, item folder)
    rejected: tuple[RejectedFolder, ...] = field(default_factory=tuple)
    loose_files: tuple[str, ...] = field(default_factory=tuple)


def batch_id_for(root: Path) -> str:
    """A readable, filesystem-safe id: the folder name cleaned, plus a short hash of its path."""
    resolved = root.resolve()  # `.`, a link or a relative path: the folder's own name and path
    cleaned = re.sub(r"[^0-9A-Za-z\u4e00-\u9fff_-]+", "_", resolved.name).strip("_")[:60] or "batch"
    digest = hashlib.sha256(str(resolved).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


@contextmanager
def batch_lock(work_dir: Path, batch_dir: Path, batch_id: str) -> Iterator[None]:
    """One process at a time on a batch in this home: a second `capture run` of the same batch,
    started while the first one runs, stops at once (BatchBusy, naming the process that holds
    it) instead of reading and packaging every item again beside it. The lock is the kernel's
    (flock on a file in the work folder): it ends with its process, killed or not, so a batch
    whose process died is never left locked. Keyed by the folder itself (its resolved path:
    a link to it, `.` or a relative path name the same batch). Processes of one machine only
    (a cluster's workers share no work folder)."""
    folder = work_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    key = str(batch_dir.resolve()).encode("utf-8", "surrogateescape")
    name = hashlib.sha256(key).hexdigest()[:24]
    fd = os.open(folder / f"batch-{name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise BatchBusy(
                f"batch {batch_id} is being processed already ({holder}); run it again once that has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC".encode(), 0)
        yield
    finally:
        os.close(fd)


MARKER_FILES = {"ready", "batch.json", "batch.csv", "readme.txt", "readme.md", "reason.txt"}


def read_layout(root: Path) -> BatchLayout:
    """One subfolder per item, named by its archive code; anything else is reported, not read."""
    if not root.exists():
        raise BatchError(f"{root}: batch folder does not exist")
    if not root.is_dir():
        raise BatchError(f"{root}: is a file, not a batch folder (one subfolder per item expected)")
    items: list[tuple[str, Path]] = []
    rejected: list[RejectedFolder] = []
    loose: list[str] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name.startswith(".") or name.lower() in {"thumbs.db", "desktop.ini"}:
            continue
        if entry.is_symlink():
            rejected.append(RejectedFolder(name, "is a symbolic link; links are not followed"))
            continue
        if not entry.is_dir():
            if name.lower() not in MARKER_FILES:
                loose.append(name)
            continue
        try:
            validate_archive_code(name)
        except UnsafeNameError as exc:
            rejected.append(RejectedFolder(name, f"folder name is not a valid archive code: {exc}"))
            continue
        items.append((name, entry))
    if not items and not rejected:
        raise BatchError(f"{root}: the batch is empty (no item folders named by archive code)")
    return BatchLayout(batch_id_for(root), root, tuple(items), tuple(rejected), tuple(loose))
