"""Read page files: list an item folder, copy each file once into a private snapshot, decode pages.

The one rule here: the bytes decoded are exactly the bytes hashed. Planning copies every source
file into this process's snapshot area (`<work>/sources/run-<id>/<sha256>`), hashing the bytes as
they are copied; frames are counted and pages decoded from that copy only, so a file replaced in
the batch folder after planning cannot change what is archived under its hash (the package step
reports the change as a finding instead).

The other rule: one page never takes more than bounded memory. A page's pixel count is read
from its header (image size, each TIFF frame's size, a PDF page's box at the rendering DPI) and
checked against `imaging.max_page_pixels` before anything is decoded or rendered.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, cast

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import CaptureError, PageNotRead, PageReadError, PageTooLarge, PageTooSmall
from pipeline.models import PageSource, PlannedPage, SourceSnapshot
from pipeline.settings import ImagingSettings

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
PDF_SUFFIXES = {".pdf"}
# Files scanner software and desktops leave behind; never pages, never reported.
IGNORED_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}

# Pillow's own decompression-bomb guard, behind ours (the header check against
# imaging.max_page_pixels): Pillow refuses to open an image of more than twice this many pixels,
# i.e. 2,000,000,000, the largest value the setting accepts, so it is never looser than any setting.
Image.MAX_IMAGE_PIXELS = 1_000_000_000
DEFAULT_MAX_PAGE_PIXELS = ImagingSettings().max_page_pixels
MAX_PIXELS_SETTING = "imaging.max_page_pixels"
MAX_FILE_SETTING = "imaging.max_file_mb"

_BLOCK = 1 << 20  # bytes per read when copying and hashing
_PDF_RENDER_TIMEOUT = 600  # seconds for pdftoppm on one page
# Signals that stop pdftoppm from outside (a batch being stopped, the out-of-memory killer): the
# page is not the reason. A crash of its own (SIGSEGV, SIGABRT...) is the file's, like an error.
_STOPPED_FROM_OUTSIDE = frozenset(
    int(s) for s in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
)


@dataclass(frozen=True)
class LoadedPage:
    pixels: np.ndarray  # grey (H, W) uint8 or RGB (H, W, 3) uint8; may be read-only
    dpi: int | None  # None when the file does not say
    source_format: str  # "jpeg", "png", "tiff", "pdf"
    bilevel: bool


@dataclass(frozen=True)
class FileProblem:
    file: str
    reason: str


def natural_key(name: str) -> list[object]:
    """Sort key for scanner file names: 2.tif before 10.tif."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _too_big(size: int, max_bytes: int) -> str:
    return (
        f"is {size:,} bytes, larger than the {max_bytes // (1 << 20):,} MB allowed "
        f"({MAX_FILE_SETTING}); not read"
    )


# ---------------------------------------------------------------- listing


def list_files(item_dir: Path, max_bytes: int) -> tuple[list[Path], list[FileProblem]]:
    """The item folder's candidate page files in scanner order, and every other file as a problem."""
    files: list[Path] = []
    problems: list[FileProblem] = []
    for path in sorted(item_dir.iterdir(), key=lambda p: natural_key(p.name)):
        name = path.name
        if name.lower() in IGNORED_NAMES or name.startswith("."):
            continue
        try:
            st = path.lstat()
        except OSError as exc:
            problems.append(FileProblem(name, f"cannot be read ({exc.strerror or exc.__class__.__name__})"))
            continue
        if stat.S_ISLNK(st.st_mode):
            problems.append(FileProblem(name, "is a symbolic link; links are not followed"))
            continue
        if stat.S_ISDIR(st.st_mode):
            problems.append(FileProblem(name, "is a folder inside an item folder; not read"))
            continue
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES | PDF_SUFFIXES:
            problems.append(FileProblem(name, f"is not a page image (unsupported type '{suffix or name}')"))
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(FileProblem(name, "is not a regular file; not read"))
            continue
        if st.st_size == 0:
            problems.append(FileProblem(name, "is empty (0 bytes)"))
            continue
        if st.st_size > max_bytes:
            problems.append(FileProblem(name, _too_big(st.st_size, max_bytes)))
            continue
        files.append(path)
    return files, problems


def expand(snapshot: SourceSnapshot) -> list[PlannedPage]:
    """One page per TIFF frame or PDF page, counted from the snapshot (headers only)."""
    suffix = snapshot.original.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return [PlannedPage(snapshot, i, "pdf") for i in range(_pdf_page_count(snapshot.path))]
    kind = "tiff" if suffix in {".tif", ".tiff"} else "image"
    try:
        with Image.open(snapshot.path) as img:
            frames = getattr(img, "n_frames", 1)
    except Image.DecompressionBombError:
        frames = 1  # reading it is refused as page_too_large, with its size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PageReadError(f"cannot be read as an image ({exc.__class__.__name__})") from exc
    return [PlannedPage(snapshot, i, kind) for i in range(frames)]


def _pdf_page_count(path: Path) -> int:
    import pikepdf

    try:
        with pikepdf.open(path) as pdf:
            return len(pdf.pages)
    except pikepdf.PasswordError as exc:
        raise PageReadError("is a password-protected PDF") from exc
    except pikepdf.PdfError as exc:
        raise PageReadError(f"is not a readable PDF ({exc})") from exc


# ---------------------------------------------------------------- snapshots


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def copy_snapshot(path: Path, folder: Path, max_bytes: int, holder: str = "") -> SourceSnapshot:
    """Copy one source file to `folder/<sha256>`, hashing exactly the bytes copied.

    The file is opened once, without following a link and without blocking on a FIFO; it is
    read in blocks of 1 MB, never more than `max_bytes` in all. A file that changed while it was
    copied (size or modification time moved) is copied again, at most three times.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        src = os.open(path, flags)
    except OSError as exc:
        reason = "is a symbolic link; links are not followed" if exc.errno == errno.ELOOP else None
        raise PageReadError(reason or f"cannot be opened ({exc.strerror})") from exc
    try:
        for attempt in range(3):
            before = os.fstat(src)
            if not stat.S_ISREG(before.st_mode):
                raise PageReadError("is not a regular file; not read")
            if before.st_size > max_bytes:
                raise PageReadError(_too_big(before.st_size, max_bytes))
            read_at = _now()
            os.lseek(src, 0, os.SEEK_SET)
            tmp, sha, copied = _copy_hashing(src, folder, max_bytes)
            after = os.fstat(src)
            steady = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
            if steady or attempt == 2:
                break
            tmp.unlink(missing_ok=True)
    finally:
        os.close(src)
    if copied == 0:
        tmp.unlink(missing_ok=True)
        raise PageReadError("is empty (0 bytes)")
    final = folder / sha
    os.replace(tmp, final)
    return SourceSnapshot(path, final, sha, before.st_size, before.st_mtime_ns, read_at, holder)


def _copy_hashing(src: int, folder: Path, max_bytes: int) -> tuple[Path, str, int]:
    tmp = folder / f".{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    copied = 0
    dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        while block := os.read(src, _BLOCK):
            copied += len(block)
            if copied > max_bytes:
                raise PageReadError(_too_big(copied, max_bytes).replace("; not read", " (it grew); not read"))
            digest.update(block)
            view = memoryview(block)
            while view:
                view = view[os.write(dst, view) :]
        os.fchmod(dst, 0o400)
    except BaseException:
        os.close(dst)
        tmp.unlink(missing_ok=True)
        raise
    os.close(dst)
    return tmp, digest.hexdigest(), copied


class SnapshotArea:
    """This process's private copies of source files: `<work>/sources/run-<id>/<sha256>`.

    The process holds an exclusive lock on `<work>/sources/run-<id>.lock` while it lives (the
    kernel drops it when the process ends, however it ends). Opening an area removes every other
    run folder whose lock is free: the copies of a killed run are cleaned by the next one.
    Identical bytes are copied to one file; each plan that uses a copy holds it, and the file is
    removed when its last holder releases it.
    """

    def __init__(self, work_dir: Path) -> None:
        self.root = work_dir / "sources"
        self._lock = threading.Lock()
        self._holders: dict[Path, set[str]] = {}
        self._fd = -1
        self._open()

    def _open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            run = f"run-{uuid.uuid4().hex}"
            lock_path = self.root / f"{run}.lock"
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # a sweeper may have taken and removed the fresh lock file before we locked it
                if os.lstat(lock_path).st_ino == os.fstat(fd).st_ino:
                    break
            except OSError:
                pass
            os.close(fd)
        self._fd, self._pid, self.lock_path = fd, os.getpid(), lock_path
        self.folder = self.root / run
        self.folder.mkdir(mode=0o700)
        self._holders = {}
        self.sweep()

    def _valid(self) -> bool:
        try:
            return (
                self._pid == os.getpid()
                and os.lstat(self.lock_path).st_ino == os.fstat(self._fd).st_ino
                and self.folder.is_dir()
            )
        except OSError:
            return False

    def sweep(self) -> list[str]:
        """Remove the run folders of processes that ended; return their names."""
        removed = []
        for entry in sorted(self.root.iterdir()):
            run = entry.name.removesuffix(".lock")
            if not run.startswith("run-") or run == self.folder.name:
                continue
            lock_path = self.root / f"{run}.lock"
            if entry.name.endswith(".lock"):
                try:
                    fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue  # its process is alive
                shutil.rmtree(self.root / run, ignore_errors=True)
                lock_path.unlink(missing_ok=True)
                os.close(fd)
                removed.append(run)
            elif not os.path.lexists(lock_path):  # a folder whose lock was already taken away
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(run)
        return removed

    def add(self, path: Path, max_bytes: int, holder: str) -> SourceSnapshot:
        with self._lock:
            if not self._valid():
                self._open()
            folder = self.folder
        snapshot = copy_snapshot(path, folder, max_bytes, holder)
        with self._lock:
            if not snapshot.path.exists():  # the area was reopened meanwhile: copy again
                return self.add(path, max_bytes, holder)
            self._holders.setdefault(snapshot.path, set()).add(holder)
        return snapshot

    def release(self, snapshots: Iterable[SourceSnapshot]) -> int:
        """Drop these holds; remove each copy no plan holds any more. Returns the files removed."""
        removed = 0
        with self._lock:
            for snap in snapshots:
                holders = self._holders.get(snap.path)
                if holders is None:
                    continue
                holders.discard(snap.holder)
                if not holders:
                    del self._holders[snap.path]
                    snap.path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def close(self) -> None:
        """Remove every copy and the run folder, and give up the lock."""
        with self._lock:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._holders.clear()
            if self._fd >= 0 and self._pid == os.getpid():
                self.lock_path.unlink(missing_ok=True)
                os.close(self._fd)
            self._fd = -1


_AREAS: dict[Path, SnapshotArea] = {}
_AREAS_LOCK = threading.Lock()


def snapshot_area(work_dir: Path) -> SnapshotArea:
    """The snapshot area of this process for a work folder (opened on first use)."""
    key = work_dir.resolve()
    with _AREAS_LOCK:
        area = _AREAS.get(key)
        if area is None or area._fd < 0:
            area = _AREAS[key] = SnapshotArea(key)
        return area


def release_snapshots(pages: Iterable[PlannedPage | SourceSnapshot]) -> int:
    """Release the snapshots of these pages (an item done); copies no other plan holds are removed."""
    snaps = [p.snapshot if isinstance(p, PlannedPage) else p for p in pages]
    with _AREAS_LOCK:
        areas = list(_AREAS.values())
    removed = 0
    for area in areas:
        removed += area.release(s for s in snaps if s.path.parent == area.folder)
    return removed


def source_change(snapshot: SourceSnapshot) -> str | None:
    """How the original changed since it was read (None: it did not); hashes only when it must."""
    try:
        st = snapshot.original.lstat()
    except FileNotFoundError:
        return "it was removed or renamed"
    except OSError as exc:
        return f"it can no longer be read ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "it was replaced by something that is not a regular file"
    if st.st_size != snapshot.size:
        return f"its size is now {st.st_size:,} bytes, was {snapshot.size:,}"
    if st.st_mtime_ns == snapshot.mtime_ns:
        return None
    try:
        current = sha256_file(snapshot.original)
    except OSError as exc:
        return f"it can no longer be read ({exc.strerror})"
    return None if current == snapshot.sha256 else f"its content now has SHA-256 {current}"


# ---------------------------------------------------------------- decoding


def _pdf_native_dpi(path: Path, page: int) -> int | None:
    """Resolution of the largest image on a scanner PDF page, from `pdfimages -list`."""
    try:
        out = subprocess.run(
            ["pdfimages", "-list", "-f", str(page + 1), "-l", str(page + 1), str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    best: tuple[int, int] | None = None
    for line in out.splitlines()[2:]:
        cols = line.split()
        if len(cols) >= 14 and cols[3].isdigit() and cols[4].isdigit() and cols[12].isdigit():
            pixels = int(cols[3]) * int(cols[4])
            if best is None or pixels > best[0]:
                best = (pixels, int(cols[12]))
    return best[1] if best else None


def _refuse(what: str, width: int, height: int, limit: int) -> PageTooLarge:
    return PageTooLarge(
        f"{what} {width:,} x {height:,} pixels ({width * height:,}), more than the {limit:,} "
        f"allowed ({MAX_PIXELS_SETTING}); refused before decoding"
    )


def _check_size(size: tuple[int, int], limit: int, what: str) -> None:
    width, height = size
    if width * height > limit:
        raise _refuse(what, width, height, limit)


MIN_PAGE_POINTS = 3.0  # PDF/A-2's smallest page box side (ISO 19005-2, 6.1.13; PDF 1.7 annex C)


def _check_not_tiny(width_pt: float, height_pt: float, described: str) -> None:
    """A page under 3 points (about 1 mm) on a side is no scan (a stray icon, a broken export)
    and cannot be a PDF/A page: refused as such, so that the rest of its item is packaged."""
    if min(width_pt, height_pt) < MIN_PAGE_POINTS:
        raise PageTooSmall(
            f"{described} ({width_pt:.2f} x {height_pt:.2f} pt), under the {MIN_PAGE_POINTS:g} pt "
            "(about 1 mm) a side a PDF/A page needs: not a scanned page"
        )


def _pixels(img: Image.Image) -> tuple[np.ndarray, bool]:
    """The decoded frame as a (read-only) array: one copy of the pixels, no more."""
    bilevel = img.mode == "1"
    if img.mode in ("1", "I;16", "I;16B", "I;16L", "I", "F", "LA"):
        img = img.convert("L")
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img), bilevel


def _dpi_of(img: Image.Image) -> int | None:
    dpi = img.info.get("dpi")
    if not dpi:
        return None
    value = float(dpi[0])
    return int(round(value)) if value >= 10 else None


def read_page(
    source: PageSource, *, max_pixels: int = DEFAULT_MAX_PAGE_PIXELS, default_dpi: int = 300
) -> LoadedPage:
    """Decode the page at `source.path` (in the pipeline: a snapshot); PageReadError says what is wrong.

    PageTooLarge is raised from the header, before any pixel is decoded or rendered, when the page
    has more than `max_pixels` pixels. A PDF page without images is rendered at `default_dpi`.
    """
    if source.kind == "pdf":
        return _read_pdf_page(source, max_pixels, default_dpi)
    what = f"frame {source.frame + 1} is" if source.kind == "tiff" else "the image is"
    try:
        with Image.open(source.path) as img:
            if source.kind != "tiff":  # the canvas every frame is drawn on
                _check_size(img.size, max_pixels, what)
            if source.frame:
                img.seek(source.frame)  # a TIFF reads only that frame's header (IFD) here
            _check_size(img.size, max_pixels, what)
            width, height = img.size
            dpi = _dpi_of(img)  # from the header (PNG's pHYs precedes its pixels, TIFF's IFD holds it)
            at = dpi or default_dpi
            _check_not_tiny(
                width * 72 / at, height * 72 / at, f"{what} {width} x {height} pixels at {at} dpi"
            )
            img.load()
            fmt = (img.format or "").lower()
            pixels, bilevel = _pixels(img)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow accepts"
        raise PageTooLarge(
            f"the image header promises {count}, more than the {max_pixels:,} allowed "
            f"({MAX_PIXELS_SETTING}); refused before decoding"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, IndexError, EOFError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the system's (EIO...), not the file's
            raise PageNotRead(f"could not be read: {exc.strerror or exc}") from exc
        raise PageReadError(f"cannot be decoded ({exc.__class__.__name__}: {exc})") from exc
    return LoadedPage(pixels, dpi, "jpeg" if fmt in ("jpeg", "mpo") else fmt, bilevel)


def pdf_page_points(path: Path, page: int) -> tuple[float, float]:
    """Width and height in points of the area pdftoppm renders (the larger of MediaBox and
    CropBox, times /UserUnit): the page's pixel count at a DPI follows from it."""
    import pikepdf

    try:
        with pikepdf.open(path) as pdf:
            obj = pdf.pages[page]
            unit = float(obj.obj.get("/UserUnit", 1))
            boxes = [[float(v) for v in box] for box in (obj.mediabox, obj.cropbox)]
    except (pikepdf.PdfError, IndexError, ValueError, TypeError) as exc:
        raise PageReadError(f"page {page + 1} has no usable page size ({exc})") from exc
    width = max(abs(b[2] - b[0]) for b in boxes) * max(unit, 1.0)
    height = max(abs(b[3] - b[1]) for b in boxes) * max(unit, 1.0)
    return width, height


def _read_pdf_page(source: PageSource, max_pixels: int, default_dpi: int) -> LoadedPage:
    native = _pdf_native_dpi(source.path, source.frame)
    dpi = native or default_dpi
    width_pt, height_pt = pdf_page_points(source.path, source.frame)
    what = f"page {source.frame + 1} at {dpi} dpi would be"
    if not (math.isfinite(width_pt) and math.isfinite(height_pt)):
        raise PageTooLarge(f"page {source.frame + 1} has an unbounded size; refused before rendering")
    _check_not_tiny(width_pt, height_pt, f"page {source.frame + 1}")
    width, height = math.ceil(width_pt * dpi / 72), math.ceil(height_pt * dpi / 72)
    if width * height > max_pixels:
        raise _refuse(what, width, height, max_pixels)
    pixels = _render_pdf_page(source.path, source.frame, dpi, max_pixels, what)
    if _is_grey(pixels):
        pixels = np.ascontiguousarray(pixels[..., 0])
    return LoadedPage(pixels, native, "pdf", False)


def render_pdf_page(path: Path, page: int, dpi: int, max_pixels: int = DEFAULT_MAX_PAGE_PIXELS) -> np.ndarray:
    """Page `page` (from 0) of a PDF as pdftoppm draws it at `dpi`: an RGB array."""
    return _render_pdf_page(path, page, dpi, max_pixels, f"page {page + 1} at {dpi} dpi would be")


def _read_token(stream: IO[bytes]) -> bytes:
    token = b""
    while len(token) < 20:
        char = stream.read(1)
        if not char:
            break
        if char.isspace():
            if token:
                break
            continue
        token += char
    return token


def _render_pdf_page(path: Path, page: int, dpi: int, max_pixels: int, what: str) -> np.ndarray:
    """Render one page with pdftoppm to a pipe and read it straight into one array (no temp files).

    The PPM header is checked again against the limit before the pixels are read.
    """
    cmd = ["pdftoppm", "-r", str(dpi), "-f", str(page + 1), "-l", str(page + 1), str(path)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:  # no pdftoppm, or no process to be had: nothing is known of the file
        raise PageNotRead(f"page {page + 1} was not rasterised (pdftoppm: {exc.strerror})") from exc
    assert proc.stdout is not None and proc.stderr is not None
    stdout = cast(io.BufferedReader, proc.stdout)
    errors: list[bytes] = []
    stderr = proc.stderr

    def drain() -> None:
        errors.append(stderr.read(2000))
        while stderr.read(1 << 16):
            pass

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    timed_out = threading.Event()

    def time_out() -> None:
        timed_out.set()
        proc.kill()

    def failed(ended: bool) -> CaptureError:
        """Why no page came: pdftoppm's own complaint about the file, its time running out (600 s
        for one page), or a signal from outside, which says nothing about the file. `ended`: its
        output stopped short."""
        if ended:  # let it finish dying, to see how
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
            return PageReadError(
                f"page {page + 1} cannot be rasterised ({_stderr_of(proc, drainer, errors)})"
            )
        if timed_out.is_set():
            return PageReadError(f"page {page + 1} took longer than {_PDF_RENDER_TIMEOUT} s to rasterise")
        if -proc.returncode in _STOPPED_FROM_OUTSIDE:
            return PageNotRead(
                f"page {page + 1} was not rasterised: pdftoppm was stopped by signal {-proc.returncode}"
            )
        return PageReadError(f"page {page + 1} cannot be rasterised ({_stderr_of(proc, drainer, errors)})")

    timer = threading.Timer(_PDF_RENDER_TIMEOUT, time_out)
    timer.start()
    try:
        header = [_read_token(stdout) for _ in range(4)]
        if header[0] != b"P6" or not all(t.isdigit() for t in header[1:]) or header[3] != b"255":
            raise failed(ended=not all(header))
        width, height = int(header[1]), int(header[2])
        if width * height > max_pixels:
            proc.kill()
            raise _refuse(what, width, height, max_pixels)
        pixels = np.empty((height, width, 3), np.uint8)
        view = pixels.data.cast("B")
        got = 0
        while got < len(view):
            n = stdout.readinto(view[got:])
            if not n:
                break
            got += n
        if got < len(view):
            raise failed(ended=True)
        if proc.wait() != 0:
            raise failed(ended=False)
        return pixels
    finally:
        timer.cancel()
        stdout.close()
        proc.wait()
        drainer.join(timeout=5)


def _stderr_of(proc: subprocess.Popen[bytes], drainer: threading.Thread, errors: list[bytes]) -> str:
    proc.wait()
    drainer.join(timeout=5)
    text = b"".join(errors).decode("utf-8", "replace").strip().splitlines()
    return f"pdftoppm: {text[0]}" if text else f"pdftoppm exit status {proc.returncode}"


def _is_grey(rgb: np.ndarray) -> bool:
    """All three channels equal, tested a few MB at a time."""
    rows = max(1, (1 << 22) // max(1, rgb.shape[1] * 3))
    for y in range(0, rgb.shape[0], rows):
        block = rgb[y : y + rows]
        if not (
            np.array_equal(block[..., 0], block[..., 1]) and np.array_equal(block[..., 1], block[..., 2])
        ):
            return False
    return True
