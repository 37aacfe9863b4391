"""The work on one page and one item, as plain functions the flow wraps in tasks.

Planning copies each source file once into a private snapshot (pipeline.pages); every page is
decoded from its snapshot, so the SHA-256 in the record is the hash of exactly the bytes
archived. Every page result is keyed by that hash plus the settings that shape it, so a re-run
(or a run after a crash) redoes nothing that was finished.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pipeline import __version__, imaging, package, verify
from pipeline.archive import RECORD_NAME, ArchiveLayout, pdf_name
from pipeline.errors import PageReadError
from pipeline.index.base import IndexItem, IndexPage
from pipeline.models import (
    SOURCE_JPEG_KEPT,
    CatalogueEntry,
    Finding,
    ItemResult,
    OcrLine,
    OcrPage,
    PageGeometry,
    PageResult,
    PlannedPage,
    Severity,
    SourceSnapshot,
    Verdict,
)
from pipeline.ocr import OcrEngine, create_engine
from pipeline.ocr.identity import engine_identity
from pipeline.pages import (
    FileProblem,
    LoadedPage,
    expand,
    list_files,
    natural_key,
    read_page,
    release_snapshots,
    sha256_file,
    snapshot_area,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def settings_fingerprint(settings: Settings) -> str:
    """Hash of the settings that shape page and package results, and of the OCR engine's identity
    (its model files' SHA-256 and package versions): a batch read again with another engine or
    other model files is recognised again, not taken from the cache."""
    shaping = {
        "imaging": settings.imaging.model_dump(exclude={"keep_work_images", "max_file_mb"}),
        "ocr": settings.ocr.model_dump(exclude={"workers", "tesseract_timeout"}),
        "ocr_engine": engine_identity(settings.ocr),
        "package": settings.package.model_dump(),
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- engines


_MMAP_THRESHOLD = 19 << 19  # 9.5 MB: above an A4 300 dpi grey page (8.7 MB)


def _return_large_blocks_to_the_system() -> None:  # called by every process that makes OCR engines
    """glibc serves an allocation from its heaps below a threshold that rises, by default, to the
    size of the largest block freed (up to 32 MB), so a page's images and the engines' buffers
    end up in heaps that only grow. A fixed threshold maps larger blocks and unmaps them when
    freed: peak about 0.15 GB lower over a 2-worker run. Each mapped block is new memory the
    kernel faults in page by page, so the threshold sits just above an A4 grey page: those
    buffers (several a page) are reused from the heap, while colour pages and the detector's
    buffers still go back. Against 8 MB: 40% fewer page faults, 1-1.5 CPU s less on 40 pages,
    peak 20-30 MB higher (benchmarks/README.md). Not glibc (no mallopt): nothing to do. The
    process's own symbols are asked, not ctypes.util.find_library, which runs ldconfig."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        if hasattr(libc, "mallopt"):
            libc.mallopt(-3, _MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, TypeError):
        pass


class EnginePool:
    """One OCR engine per worker thread, created on first use and lent out one at a time.

    Engines after the first are its siblings where the engine has them (RapidOCR: they share
    one text detector, the bulk of an engine's memory)."""

    def __init__(self, settings: Settings) -> None:
        _return_large_blocks_to_the_system()
        self._settings = settings.ocr
        self._idle: queue.Queue[OcrEngine] = queue.Queue()
        self._first: OcrEngine | None = None
        self._creating = threading.Lock()
        self._created = 0
        self._promised = False
        self._failed: BaseException | None = None
        self._queued = 0  # pages handed to the page threads that have no engine yet (`pages_queued`)
        self._lent = 0  # idle engines lent to a page's line reading (`_lend_idle`)
        self._queued_lock = threading.Lock()

    def _create(self) -> OcrEngine:
        with self._creating:
            sibling = getattr(self._first, "sibling", None)
            engine: OcrEngine = sibling() if sibling is not None else create_engine(self._settings)
            if self._first is None:
                self._first = engine
            if hasattr(engine, "borrow"):  # it can share a page's lines with an idle sibling
                engine.borrow = self._lend_idle
            self._created += 1
            return engine

    def _create_or_wait(self) -> OcrEngine:
        """A new engine for a page that found none idle; when one cannot be made but others
        were, the page waits for one of them (and no more are made)."""
        try:
            return self._create()
        except Exception as exc:
            if not self._created:
                raise
            log.warning(
                "another OCR engine could not be loaded; the pages share the %d there are: %s",
                self._created,
                exc,
            )
            self._promised = True
            return self._idle.get()

    def load(self, count: int) -> None:
        """Create engines until there are `count` (so that no page waits for one to load)."""
        while self._created < count:
            self._idle.put(self._create())

    def load_in_background(self, count: int) -> None:
        """Begin creating `count` engines in a thread, while the process goes on importing and
        planning; pages wait for these engines instead of creating more of their own."""
        self._promised = True

        def load() -> None:
            try:
                self.load(count)
            except BaseException as exc:  # noqa: BLE001 - handed to the pages waiting for an engine
                if self._created:  # the engines that loaded serve every page, taking turns
                    log.warning(
                        "only %d of %d OCR engines could be loaded; the pages share them: %s",
                        self._created,
                        count,
                        exc,
                    )
                    return
                self._failed = exc
                self._idle.put(None)  # type: ignore[arg-type]

        threading.Thread(target=load, name="engine-load", daemon=True).start()

    @contextmanager
    def engine(self) -> Iterator[OcrEngine]:
        try:
            engine = self._idle.get_nowait()
        except queue.Empty:
            with self._queued_lock:  # a lent engine comes back: wait for it, never make another
                lent = self._lent
            engine = self._idle.get() if self._promised or lent else self._create_or_wait()
        if engine is None:  # the background load failed: every page waiting is told why
            self._idle.put(None)  # type: ignore[arg-type]
            assert self._failed is not None
            raise self._failed
        try:
            yield engine
        finally:
            self._idle.put(engine)

    def pages_queued(self, change: int) -> None:
        """Pages handed to the page threads (+), and pages that took their engine or ended
        without one, or were dropped (-): engines are lent only when no page will want one, at
        the end of a batch. Lent in the middle, the lender's thread waited for its engine and the
        two threads reached the shared detector together: a 40-page run took 1 s longer."""
        with self._queued_lock:
            self._queued += change

    @contextmanager
    def _lend_idle(self) -> Iterator[Any]:
        """An engine no page holds, lent for a while, or None; never waits, and lends nothing
        while a page is still to take its engine. A page asking for one meanwhile waits for it
        (even where engines are made on demand: no engine is made beyond `ocr.workers`)."""
        engine = None
        with self._queued_lock:
            if self._queued == 0:
                try:
                    engine = self._idle.get_nowait()
                except queue.Empty:
                    pass
                else:
                    if engine is None:  # the marker of a failed load, for the pages: it goes back
                        self._idle.put(None)  # type: ignore[arg-type]
                    else:
                        self._lent += 1
        if engine is None:
            yield None
            return
        try:
            yield engine
        finally:
            with self._queued_lock:
                self._idle.put(engine)
                self._lent -= 1

    def judges(self, engine: OcrEngine) -> tuple[imaging.UpDownJudge, ...]:
        from pipeline.ocr.tesseract import judge_up_down_osd

        judges: list[imaging.UpDownJudge] = []
        classifier = getattr(engine, "judge_up_down", None)
        if classifier is not None:
            judges.append(classifier)
        threads = self._settings.engine_threads
        judges.append(lambda gray: judge_up_down_osd(gray, threads=threads))
        return tuple(judges)


_POOLS: dict[str, EnginePool] = {}


_POOLS_LOCK = threading.Lock()


def engine_pool(settings: Settings) -> EnginePool:
    """The process's pool for these OCR settings. Locked: the page threads ask for it at the same
    moment when a batch begins, and two pools meant a second full engine (its own detector)."""
    key = settings.ocr.model_dump_json()
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = EnginePool(settings)
        return _POOLS[key]


# ---------------------------------------------------------------- pages


def page_key(source_sha256: str, frame: int, fingerprint: str) -> str:
    return hashlib.sha256(f"{source_sha256}:{frame}:{fingerprint}".encode()).hexdigest()[:32]


def _page_to_json(page: PageResult) -> dict[str, Any]:
    data = page.facts()
    data.update(
        image_path=page.image_path,
        image_format=page.image_format,
        geometry=page.geometry.to_json() if page.geometry else None,
        error=page.error,
        error_code=page.error_code,
        engine=page.ocr.engine if page.ocr else None,
        lines=[
            {"text": ln.text, "box": list(ln.box), "confidence": round(ln.confidence, 4)}
            for ln in (page.ocr.lines if page.ocr else ())
        ],
    )
    return data


def _page_from_json(data: dict[str, Any]) -> PageResult:
    ocr = None
    if data.get("engine"):
        lines = tuple(OcrLine(ln["text"], tuple(ln["box"]), ln["confidence"]) for ln in data["lines"])  # type: ignore[arg-type]
        ocr = OcrPage(data["engine"], lines, data["width"], data["height"])
    return PageResult(
        seq=data["page"],
        source=data["source"],
        frame=data["frame"],
        source_sha256=data["source_sha256"],
        dpi=data["dpi"],
        dpi_assumed=data["dpi_assumed"],
        rotation=data["rotation"],
        skew_deg=data["skew_deg"],
        orientation_method=data["orientation_method"],
        blank=data["blank"],
        confidence=data["confidence"],
        image_path=data["image_path"],
        image_format=data["image_format"],
        image_encoding=data.get("image_encoding", ""),
        geometry=PageGeometry.from_json(data["geometry"]) if data.get("geometry") else None,
        width=data["width"],
        height=data["height"],
        ocr=ocr,
        error=data["error"],
        error_code=data.get("error_code"),
    )


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _as_requested(result: PageResult, page: PlannedPage, seq: int) -> PageResult:
    """A result named after the page asked for: its place, its file, its frame, its snapshot.

    Identical bytes in two files (or two items) share one cached result; who made it first
    must not show through.
    """
    return replace(
        result,
        seq=seq,
        source=page.name,
        frame=page.frame,
        source_sha256=page.sha256,
        snapshot=page.snapshot,
    )


def _cached_page(path: Path) -> PageResult | None:
    try:
        result = _page_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if result.image_format == "jpeg" and not result.image_encoding:
        return None  # made when every JPEG page was written again: made again, keeping the source
    if result.error:
        return result
    if not result.image_path or not Path(result.image_path).exists():
        return None
    if result.geometry is not None and not _same_bytes(Path(result.image_path), result.source_sha256):
        return None  # a kept source JPEG whose copy changed: read the page again from its snapshot
    return result


def _same_bytes(path: Path, sha256: str) -> bool:
    try:
        return sha256_file(path) == sha256
    except OSError:
        return False


Prepared = PageResult | tuple[PageResult, "imaging.CleanedPage | imaging.BegunPage"]


def prepare_page(page: PlannedPage, seq: int, settings: Settings, cache_dir: Path) -> Prepared:
    """The part of a page that needs no OCR engine: its cached result (final), an unreadable
    page's result (final), or the page read and cleaned up to its up/down vote."""
    hit = cached_page(page, seq, settings, cache_dir)
    if hit is not None:
        return hit
    result, loaded = read_step(page, seq, settings, cache_dir)
    if loaded is None:
        return result
    return result, begin_step(loaded, result, settings)


def process_page(
    page: PlannedPage,
    seq: int,
    settings: Settings,
    pool: EnginePool,
    cache_dir: Path,
    on_engine: Callable[[], None] | None = None,
    prepared: Prepared | None = None,
) -> PageResult:
    """Read, clean and OCR one page from its snapshot, or take the cached result for the same
    bytes (the snapshot's SHA-256), frame and settings. The flow runs the same steps as tasks.
    `on_engine` is called once the page holds its OCR engine; `prepared` is what
    `prepare_page` gave for it, if another thread began it."""
    ready = prepared if prepared is not None else prepare_page(page, seq, settings, cache_dir)
    if isinstance(ready, PageResult):
        return ready
    result, begun = ready
    with pool.engine() as engine:
        if on_engine is not None:
            on_engine()
        cleaned = finish_step(begun, result, pool.judges(engine))  # spends `begun`: no pixels left in it
        return recognise_step(cleaned, result, engine, settings, cache_dir)


def _cache_path(page: PlannedPage, settings: Settings, cache_dir: Path) -> tuple[str, Path]:
    key = page_key(page.sha256, page.frame, settings_fingerprint(settings))
    return key, cache_dir / f"{key}_page.json"


def cached_page(page: PlannedPage, seq: int, settings: Settings, cache_dir: Path) -> PageResult | None:
    """The page's result from an earlier run on the same bytes, frame and settings, if any."""
    hit = _cached_page(_cache_path(page, settings, cache_dir)[1])
    return None if hit is None else _as_requested(hit, page, seq)


def read_step(
    page: PlannedPage, seq: int, settings: Settings, cache_dir: Path
) -> tuple[PageResult, LoadedPage | None]:
    """Decode the page from its snapshot with its DPI; a page that cannot be read (or is too
    large) comes back as a result with its error, and no pixels."""
    result = _as_requested(PageResult(seq=seq, source="", frame=0, source_sha256=""), page, seq)
    if not page.snapshot.path.is_file():
        # says nothing about the bytes, so it is not cached under their hash
        result.error = "its private copy in the work folder is gone (was the work folder cleaned?)"
        result.error_code = verify.PROCESSING_FAILED
        return result, None
    imaging_settings = settings.imaging
    try:
        loaded = read_page(
            page.decode_source,
            max_pixels=imaging_settings.max_page_pixels,
            default_dpi=imaging_settings.default_dpi,
        )
    except PageReadError as exc:
        result.error = str(exc)
        result.error_code = exc.finding
        _write_json_atomic(_cache_path(page, settings, cache_dir)[1], _page_to_json(result))
        return result, None
    result.dpi = loaded.dpi or imaging_settings.default_dpi
    result.dpi_assumed = loaded.dpi is None
    result.image_format = _image_format(loaded)
    result.image_encoding = "lossless"
    if result.image_format == "jpeg":
        facts, why = package.source_jpeg_facts(page.decode_source.path)
        result.image_encoding = (
            SOURCE_JPEG_KEPT
            if facts is not None
            else f"JPEG, quality {settings.package.jpeg_quality} (the source could not be kept: it {why})"
        )
    return result, loaded


def begin_step(
    loaded: LoadedPage, result: PageResult, settings: Settings
) -> imaging.CleanedPage | imaging.BegunPage:
    """The cleanup up to the up/down vote (imaging.begin_cleaning); a blank page ends here."""
    imaging_settings = settings.imaging
    return imaging.begin_cleaning(
        loaded.pixels,
        result.dpi or imaging_settings.default_dpi,
        max_skew=imaging_settings.max_skew_deg,
        detect_orientation=imaging_settings.detect_orientation,
        crop_borders=imaging_settings.crop_borders,
        blank_threshold=imaging_settings.blank_ink_ratio,
    )


def finish_step(
    begun: imaging.CleanedPage | imaging.BegunPage,
    result: PageResult,
    judges: tuple[imaging.UpDownJudge, ...],
) -> imaging.CleanedPage:
    """The rest of the cleanup (imaging.finish_cleaning), its figures kept in the result."""
    cleaned = imaging.finish_cleaning(begun, judges)
    result.rotation, result.skew_deg = cleaned.rotation, cleaned.skew_deg
    result.orientation_method, result.blank = cleaned.orientation_method, cleaned.blank
    result.height, result.width = cleaned.image.shape[:2]
    return cleaned


def recognise_step(
    cleaned: imaging.CleanedPage, result: PageResult, engine: OcrEngine, settings: Settings, cache_dir: Path
) -> PageResult:
    """OCR a page that is not blank, keep its cleaned image for packaging, cache the result."""
    if not cleaned.blank:
        result.ocr = engine.recognise(cleaned.image)
        result.confidence = result.ocr.mean_confidence
    key = page_key(result.source_sha256, result.frame, settings_fingerprint(settings))
    kept = _keep_source_jpeg(cleaned, result, cache_dir / f"{key}_clean.jpg", settings)
    if kept is None:
        kept = package.encode_page_image(
            cleaned.image, result.image_format, cache_dir / f"{key}_clean", settings.package.jpeg_quality
        )
    result.image_path = str(kept)
    _write_json_atomic(cache_dir / f"{key}_page.json", _page_to_json(result))
    return result


def _keep_source_jpeg(
    cleaned: imaging.CleanedPage, result: PageResult, target: Path, settings: Settings
) -> Path | None:
    """A JPEG page's image as the source's own bytes (copied from the snapshot, checked against
    the page's SHA-256), drawn through the cleanup's map when packaged; None to write the cleaned
    page instead (not a JPEG that can be kept, or the copy failed: the reason goes in the record)."""
    if result.image_encoding != SOURCE_JPEG_KEPT:
        return None
    snapshot = result.snapshot
    why = ""
    if cleaned.geometry is None or snapshot is None:
        why = "its cleanup or its copy is not known"
    else:
        try:
            data = snapshot.path.read_bytes()
            if hashlib.sha256(data).hexdigest() != result.source_sha256:
                why = "its private copy no longer has the page's SHA-256"
            else:
                tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
                result.geometry = cleaned.geometry
                return target
        except OSError as exc:
            why = f"its private copy cannot be read ({exc.strerror})"
    quality = settings.package.jpeg_quality
    result.image_encoding = f"JPEG, quality {quality} (the source could not be kept: {why})"
    result.geometry = None
    return None


def _image_format(loaded: LoadedPage) -> str:
    """How the cleaned page is stored: JPEG stays JPEG, bilevel stays bilevel, the rest lossless."""
    if loaded.source_format == "jpeg":
        return "jpeg"
    if loaded.bilevel:
        return "bilevel"
    return "gray" if loaded.pixels.ndim == 2 else "rgb"


# ---------------------------------------------------------------- items


def plan_item(item_dir: Path, settings: Settings) -> tuple[list[PlannedPage], list[FileProblem]]:
    """The item's pages, each to be read from a snapshot of its file made now, and the files that
    are not pages (unreadable, unsupported, links, over `imaging.max_file_mb`...).

    The snapshots are held until `release_snapshots(pages)` (the item is done) or the process ends.
    """
    files, problems = list_files(item_dir, settings.imaging.max_file_mb << 20)
    planned, unreadable = plan_files(files, settings)
    problems = sorted(problems + unreadable, key=lambda p: natural_key(p.file))
    return planned, problems


def plan_files(files: Sequence[Path], settings: Settings) -> tuple[list[PlannedPage], list[FileProblem]]:
    """Snapshot these files (hashing while copying) and count their pages from the snapshots."""
    area = snapshot_area(settings.work_dir)
    max_bytes = settings.imaging.max_file_mb << 20
    holder = uuid.uuid4().hex
    planned: list[PlannedPage] = []
    problems: list[FileProblem] = []
    for path in files:
        try:
            snapshot = area.add(path, max_bytes, holder)
        except PageReadError as exc:
            problems.append(FileProblem(path.name, str(exc)))
            continue
        except OSError as exc:
            problems.append(FileProblem(path.name, f"cannot be read ({exc.strerror or exc})"))
            continue
        try:
            planned.extend(expand(snapshot))
        except PageReadError as exc:
            problems.append(FileProblem(path.name, str(exc)))
            release_snapshots([snapshot])
    return planned, problems


def item_input_key(
    planned: Sequence[PlannedPage],
    problems: list[FileProblem],
    entry: CatalogueEntry | None,
    settings: Settings,
    expected: bool | None = None,
) -> str:
    # the hashes of the snapshots: exactly the bytes the pages are decoded (and archived) from
    parts = [f"{p.name}:{p.frame}:{p.sha256}" for p in planned]
    parts += [f"problem:{p.file}:{p.reason}" for p in problems]
    parts.append(json.dumps(entry.to_dict() if entry else None, sort_keys=True, ensure_ascii=False))
    parts.append(json.dumps(settings.verify.model_dump(), sort_keys=True))
    parts.append(settings_fingerprint(settings))
    parts.append(f"manifest:{expected}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def reuse_packaged(archive_dir: Path, archive_code: str, input_key: str) -> ItemResult | None:
    """The item as already archived, if it was made from the same inputs and is intact."""
    layout = ArchiveLayout(archive_dir)
    try:
        record = layout.read_record(archive_code)
    except (OSError, ValueError):
        return None
    pdf_path = layout.pdf(archive_code)
    if record.get("input_key") != input_key or not pdf_path.exists():
        return None
    if sha256_file(pdf_path) != record.get("pdf_sha256"):
        return None
    return item_from_record(record, layout.folder(archive_code))


def item_from_record(record: dict[str, Any], folder: Path) -> ItemResult:
    """The item a package folder's record describes."""
    entry = CatalogueEntry(**record["catalogue"]) if record.get("catalogue") else None
    pages = [_page_from_json(p) for p in record["pages"]]
    findings = [
        Finding(f["code"], f["message"], Severity(f["severity"]), f.get("page"), f.get("file"))
        for f in record["findings"]
    ]
    return ItemResult(
        archive_code=record["archive_code"],
        entry=entry,
        pages=pages,
        findings=findings,
        verdict=Verdict(record["verdict"]),
        pdf_path=str(folder / pdf_name(record["archive_code"])),
        record_path=str(folder / RECORD_NAME),
        pdf_sha256=record["pdf_sha256"],
        pdfa_valid=record["pdfa"]["valid"],
        reused=True,
    )


@functools.cache
def _installed_versions() -> dict[str, str]:
    """The versions of the software this process runs, asked once a process: the packages as
    loaded (an upgrade on disk under a running watcher is not what it runs) and Tesseract's
    program (asking it is a fork of a large process, and every package records it)."""
    names = [
        "rapidocr",
        "openvino",
        "onnxruntime",
        "rapidocr-onnxruntime",
        "pytesseract",
        "pikepdf",
        "opencv-python-headless",
        "opencc",
        "prefect",
    ]
    versions = {"archive-capture": __version__}
    for name in names:
        try:
            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing optional package is simply not listed
            continue
    if shutil.which("tesseract"):
        import pytesseract

        versions["tesseract"] = str(pytesseract.get_tesseract_version())
    return versions


def software_versions(settings: Settings | None = None) -> dict[str, Any]:
    """Versions of the software that made a package and, given the settings, the OCR engine that
    read it: engine, runtime, and each model file with its package and SHA-256."""
    versions: dict[str, Any] = dict(_installed_versions())
    if settings is not None:
        versions["ocr"] = engine_identity(settings.ocr)
    return versions


def package_item(
    archive_code: str,
    entry: CatalogueEntry | None,
    pages: list[PageResult],
    file_problems: list[FileProblem],
    input_key: str,
    batch_id: str,
    settings: Settings,
    expected: bool | None = None,
) -> ItemResult:
    """Verify the item, then package it (both steps below)."""
    item = verify_item(archive_code, entry, pages, file_problems, settings, expected)
    return package_verified(item, input_key, batch_id, settings)


def verify_item(
    archive_code: str,
    entry: CatalogueEntry | None,
    pages: list[PageResult],
    file_problems: list[FileProblem],
    settings: Settings,
    expected: bool | None = None,
) -> ItemResult:
    """The item with its findings: files, sources that changed, pages, the catalogue, the manifest."""
    item = ItemResult(archive_code, entry, pages=sorted(pages, key=lambda p: p.seq))
    item.findings = (
        verify.check_files(file_problems)
        + verify.check_sources(_snapshots_of(item.pages))
        + verify.check_pages(item.pages, settings.verify)
        + verify.check_catalogue(archive_code, entry, item.pages)
        + verify.check_manifest(archive_code, expected)
    )
    return item


def package_verified(item: ItemResult, input_key: str, batch_id: str, settings: Settings) -> ItemResult:
    """Write the verified item's PDF/A, record and manifest into a staging folder, validate, then
    move it into place (an earlier package is kept aside). No readable page, or a page that
    failed in our hands (verify.not_packaged): no package."""
    archive_code, entry = item.archive_code, item.entry
    if verify.not_packaged(item.findings):
        item.verdict = verify.verdict_of(item.findings, packaged=False)
        return item
    printable = [p for p in item.pages if p.readable and p.image_path]
    if not printable:
        item.findings.append(
            Finding("no_pages", f"{archive_code} has no readable page; nothing to package", Severity.ERROR)
        )
        item.verdict = verify.verdict_of(item.findings, packaged=False)
        return item

    layout = ArchiveLayout(settings.archive_dir)
    staging = layout.new_staging(archive_code)
    try:
        pdf = package.build_pdf(
            [
                package.PackagePage(
                    Path(p.image_path),
                    p.image_format,
                    p.dpi or settings.imaging.default_dpi,
                    p.ocr,
                    p.geometry,
                    p.source_sha256 if p.geometry is not None else None,
                )
                for p in printable
                if p.image_path
            ]
        )
        package.write_metadata(pdf, archive_code, entry, f"Archive Capture {__version__}")
        pdf_path = staging / pdf_name(archive_code)
        outcome = package.save_pdfa(pdf, pdf_path)
        pdf.close()
        if not outcome.pdfa_valid:
            item.findings.append(
                Finding(
                    "pdfa_invalid",
                    "the PDF did not pass PDF/A-2b validation: " + "; ".join(outcome.validator_findings[:5]),
                    Severity.ERROR,
                )
            )
        item.pdfa_valid = outcome.pdfa_valid
        item.pdf_sha256 = sha256_file(pdf_path)
        item.verdict = verify.verdict_of(item.findings, packaged=True)
        record = build_record(
            item, input_key, batch_id, outcome.validator_findings, software_versions(settings)
        )
        layout.write_record(staging, record)
        layout.write_manifest(staging, archive_code)
        final = layout.move_into_place(staging, archive_code)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    item.pdf_path = str(final / pdf_name(archive_code))
    item.record_path = str(final / RECORD_NAME)
    return item


def _snapshots_of(pages: Iterable[PageResult]) -> list[SourceSnapshot]:
    """Each source file's snapshot once, in page order."""
    seen: dict[Path, SourceSnapshot] = {}
    for page in pages:
        if page.snapshot is not None:
            seen.setdefault(page.snapshot.original, page.snapshot)
    return list(seen.values())


def build_record(
    item: ItemResult,
    input_key: str,
    batch_id: str,
    validator: tuple[str, ...],
    software: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "archive_code": item.archive_code,
        "catalogue": item.entry.to_dict() if item.entry else None,
        "verdict": str(item.verdict),
        "findings": [f.to_dict() for f in item.findings],
        "pages": [_page_to_json(p) for p in item.pages],
        "pdf": pdf_name(item.archive_code),
        "pdf_sha256": item.pdf_sha256,
        "pdfa": {
            "flavour": package.PDFA_FLAVOUR,
            "valid": item.pdfa_valid,
            "validator_findings": list(validator),
        },
        "software": software if software is not None else software_versions(),
        "batch_id": batch_id,
        "input_key": input_key,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def index_document(item: ItemResult, *, visible: bool = True) -> IndexItem:
    """The index's view of an item: catalogue fields, visibility, and the text of each page."""
    from pipeline.index.analysis import join_lines

    entry = item.entry
    fields = {
        k: str(v)
        for k, v in (entry.to_dict() if entry else {}).items()
        if k not in ("archive_code", "title", "page_count")
    }
    pages = tuple(
        IndexPage(p.seq, join_lines([ln.text for ln in p.ocr.lines]))
        for p in item.pages
        if p.ocr and p.ocr.lines
    )
    title = (entry.title if entry and entry.title else "") or item.archive_code
    return IndexItem(item.archive_code, title, fields, pages, visible=visible)
