"""The work on items: for each page read, clean, recognise; for each item verify, package, record, index.

`run_items` does it for a list of planned items, in this process: the pages in a thread pool of
OCR engines (loaded once per process; plain calls, see `PageWork`), each item as one Prefect task
once its pages are in; the batch flow calls it directly (embedded mode), and the
`process-items` flow calls it on a worker for one chunk of a batch (server mode). Page images
and OCR results never leave the process: they are handed over in memory, and what must outlive
the process goes to the work folder, the archive and the state store.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from pipeline import batchplan, process, verify
from pipeline.batchplan import ItemPlan
from pipeline.errors import BatchError, ConfigError, OcrTimeoutError
from pipeline.index.base import SearchBackend
from pipeline.models import Finding, ItemResult, PageResult, PlannedPage, Severity, Verdict
from pipeline.progress import ItemOutcome, observer
from pipeline.reindex import index_or_mark
from pipeline.settings import Settings
from pipeline.store import Store, open_store

log = logging.getLogger(__name__)
T = TypeVar("T")


# ---------------------------------------------------------------- the pages


def _page(
    page: PlannedPage,
    seq: int,
    settings: Settings,
    cache_dir: Path,
    pool: process.EnginePool,
    ahead: _Ahead | None = None,
) -> PageResult:
    """One page: its cached result for the same bytes and settings, or read, clean, recognise
    (begun by the preparing thread, `ahead`, when it got there first). An OCR engine that ran
    out of time is given two more tries (nothing else is retried)."""
    waiting = True  # counted in the pool until the page holds its engine, or ends without one

    def engine_taken() -> None:
        nonlocal waiting
        if waiting:
            waiting = False
            pool.pages_queued(-1)

    tries = 3
    try:
        prepared = ahead.take() if ahead is not None else None
        while True:
            try:
                return process.process_page(
                    page, seq, settings, pool, cache_dir, on_engine=engine_taken, prepared=prepared
                )
            except OcrTimeoutError:
                prepared = None
                tries -= 1
                if not tries:
                    raise
                time.sleep(2)
    finally:
        engine_taken()


class _Ahead:
    """One page's engine-free part (`process.prepare_page`): begun by the preparing thread
    before a page thread reaches the page, or left to the page thread if it gets there first."""

    def __init__(self, room: threading.Semaphore) -> None:
        self._lock = threading.Lock()
        self._claimed = False
        self._done = threading.Event()
        self._room = room  # how many prepared pages may wait for their page thread
        self._value: process.Prepared | BaseException | None = None

    def claim(self) -> bool:
        with self._lock:
            claimed, self._claimed = self._claimed, True
        return not claimed

    def give(self, value: process.Prepared | BaseException) -> None:
        self._value = value
        self._done.set()

    def take(self) -> process.Prepared | None:
        """For the page thread: what the preparing thread made of the page (waited for, if it is
        making it now), or None when the page thread is to prepare the page itself."""
        if self.claim():
            return None
        self._done.wait()
        self._room.release()
        value, self._value = self._value, None
        if isinstance(value, BaseException):
            raise value
        return value


def _start_opencv_threads() -> None:
    """OpenCV starts its pool of worker threads at its first parallel call, and a thread takes
    the priority of the thread that starts it: the pool must not start at the lowest one."""
    import cv2
    import numpy as np

    cv2.warpAffine(np.zeros((16, 16), np.uint8), np.eye(2, 3, dtype=np.float32), (16, 16))


def _lowest_priority() -> None:
    """This thread only on cores the others leave idle (Linux, where a nice value is per thread:
    `PageWork` starts the preparing thread nowhere else)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        pass


class PageWork:
    """Every page of these items read, cleaned and recognised by `ocr.workers` threads of this
    process, each with its OCR engine, in batch order, at most `window` pages ahead of the
    items being finished (a page waiting is its text and boxes: its pixels are in the work
    folder).

    One more thread, at the lowest priority, reads and cleans the next pages up to their
    up/down vote (the part that needs no engine; about a fifth of a page's time) while the
    page threads are busy: it runs in the moments a page thread waits, for the text detector
    the engines share or for the interpreter, and a page it began is finished by the page
    thread that reaches it. At most one prepared page waits. Only where a thread's priority can
    be set (Linux); elsewhere each page thread reads and cleans its own pages.

    The pages are plain function calls, not Prefect tasks: a task run per page cost the
    Prefect server three or four API calls and their events, and the work cannot start before
    the server is up. `start()` begins at once; the batch flow's embedded run starts it before
    the flow, so the engines load and the first pages are read while Prefect's server starts.
    """

    def __init__(self, plans: list[ItemPlan], settings: Settings, cache_dir: Path) -> None:
        workers = settings.ocr.workers
        self._jobs = (
            (i, seq, page)
            for i, plan in enumerate(plans)
            if not plan.reusable
            for seq, page in enumerate(plan.planned, start=1)
        )
        self._settings, self._cache_dir = settings, cache_dir
        self._pool = process.engine_pool(settings)
        self._window = workers * 16
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="page")
        self._pending: deque[tuple[int, int, PlannedPage, Future[PageResult]]] = deque()
        self._room = threading.Semaphore(1)
        self._ahead: queue.SimpleQueue[tuple[_Ahead, PlannedPage, int] | None] = queue.SimpleQueue()
        self._closed = False
        self._preparer: threading.Thread | None = None

    def start(self) -> PageWork:
        if self._preparer is None and not self._closed and sys.platform == "linux":
            self._preparer = threading.Thread(target=self._prepare, name="page-ahead", daemon=True)
            self._preparer.start()
        while len(self._pending) < self._window:
            job = next(self._jobs, None)
            if job is None:
                break
            i, seq, page = job
            self._pool.pages_queued(1)
            ahead = _Ahead(self._room) if self._preparer is not None else None
            future = self._executor.submit(
                _page, page, seq, self._settings, self._cache_dir, self._pool, ahead
            )
            if ahead is not None:
                self._ahead.put((ahead, page, seq))
            self._pending.append((i, seq, page, future))
        return self

    def _prepare(self) -> None:
        _start_opencv_threads()  # before this thread's priority falls: new threads inherit it
        _lowest_priority()
        while True:
            job = self._ahead.get()
            if job is None:
                return
            self._room.acquire()
            if self._closed or not job[0].claim():
                self._room.release()
                continue
            self._prepare_one(*job)
            del job  # the page is its page thread's now: nothing of it is kept here

    def _prepare_one(self, ahead: _Ahead, page: PlannedPage, seq: int) -> None:
        try:
            ahead.give(process.prepare_page(page, seq, self._settings, self._cache_dir))
        except BaseException as exc:  # noqa: BLE001 - the page thread raises it, as its own
            ahead.give(exc)

    def results(self) -> Iterator[tuple[int, PageResult]]:
        """(item index, page result) in batch order, as they are done."""
        self.start()
        while self._pending:
            i, seq, page, future = self._pending.popleft()
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - a failed page becomes a finding, never a failed batch
                result = PageResult(
                    seq=seq,
                    source=page.name,
                    frame=page.frame,
                    source_sha256=page.sha256,
                    error=f"processing failed: {exc.__class__.__name__}: {exc}",
                    error_code=verify.PROCESSING_FAILED,
                    snapshot=page.snapshot,
                )
            self.start()
            yield i, result

    def close(self) -> None:
        """Stop: pages not begun are dropped, pages being read are finished."""
        self._closed = True
        self._ahead.put(None)
        self._room.release()  # the preparing thread may wait for room
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._preparer is not None:
            self._preparer.join()
        self._pool.pages_queued(-sum(1 for *_, future in self._pending if future.cancelled()))
        self._pending.clear()  # closed twice (the flow and its caller), counted once


# ---------------------------------------------------------------- one item


def _plain(value: T) -> T:
    """A task argument Prefect takes as it is: without quote() it walks every argument (each
    page's lines and boxes) on every task call, looking for futures and states to link; ours are
    plain values."""
    return cast(T, quote(value))


def _reused(plan: ItemPlan, settings: Settings) -> ItemResult | None:
    return process.reuse_packaged(settings.archive_dir, plan.archive_code, plan.input_key)


def _verified_and_packaged(
    plan: ItemPlan, pages: list[PageResult], batch_id: str, settings: Settings
) -> ItemResult:
    """Count the pages against the catalogue (files, sources, resolution, confidence, manifest),
    then write the PDF/A, its record and manifest, validated, into the archive; never raises."""
    try:
        item = _reused(plan, settings) if plan.reusable else None
        if item is not None:
            return item
        if plan.reusable:  # the package changed since planning: nothing was read for it
            item = ItemResult(plan.archive_code, plan.entry)
            item.findings.append(
                Finding("package_changed", "the archived package changed during the batch; run it again")
            )
            item.verdict = Verdict.FAILED
            return item
        verified = process.verify_item(
            plan.archive_code, plan.entry, pages, plan.problems, settings, plan.expected
        )
        return process.package_verified(verified, plan.input_key, batch_id, settings)
    except Exception as exc:  # noqa: BLE001 - a failed item does not fail the batch
        log.exception("packaging %s failed", plan.archive_code)
        item = ItemResult(plan.archive_code, plan.entry, pages=pages)
        item.findings.append(Finding("package_failed", f"packaging failed: {exc}", Severity.ERROR))
        item.verdict = Verdict.FAILED
        return item


@task(name="finish-item", task_run_name="finish {plan.archive_code}", cache_policy=NO_CACHE)
def finish_item_task(
    plan: ItemPlan,
    pages: list[PageResult],
    batch_id: str,
    settings: Settings,
    store: Store,
    index: SearchBackend,
) -> tuple[ItemResult, str | None]:
    """One item whose pages are all in: verified and packaged (`_verified_and_packaged`), its
    state, package history and findings recorded (the QA gate opens a case if needed), its pages
    indexed (when the index is away, the item is marked for later). One task run an item: each
    run is Prefect bookkeeping (its states and events) in this process and in the server."""
    item = _verified_and_packaged(plan, pages, batch_id, settings)
    row = store.record_item(batch_id, item)
    problem = (
        index_or_mark(index, store, process.index_document(item, visible=row.visible))
        if item.pdf_path
        else None
    )
    return item, problem


# ---------------------------------------------------------------- many items


@dataclass
class _Collector:
    """Pages arrive in any order; items are finished in batch order as soon as theirs are all in."""

    plans: list[ItemPlan]
    pages: dict[int, list[PageResult]] = field(default_factory=dict)
    next_item: int = 0

    def add(self, i: int, page: PageResult) -> None:
        self.pages.setdefault(i, []).append(page)

    def ready(self, upto: int) -> Iterator[tuple[int, list[PageResult]]]:
        while self.next_item < upto:
            i, plan = self.next_item, self.plans[self.next_item]
            got = self.pages.get(i, [])
            if not plan.reusable and len(got) < len(plan.planned):
                return
            self.pages.pop(i, None)
            self.next_item += 1
            yield i, got


def _still_ours(settings: Settings) -> None:
    """Server mode: a run the server gave up on (it froze, was marked Crashed, and its chunk was
    sent to another worker) must not package anything when it wakes up: it stops here."""
    if settings.server.mode != "server":
        return
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        return
    from pipeline.cluster import run_state

    state = run_state(settings, run_id)
    if state.type != "RUNNING":
        raise BatchError(f"this run is {state.name} on the server; another run has its items now")


def start_pages(plans: list[ItemPlan], settings: Settings) -> PageWork:
    """The page work on these items, begun."""
    cache_dir = settings.work_dir / "pages"
    cache_dir.mkdir(parents=True, exist_ok=True)
    for plan in plans:  # an earlier run of these items (its worker died) may have packaged some
        if not plan.reusable and _reused(plan, settings) is not None:
            plan.reusable = True
    return PageWork(plans, settings, cache_dir).start()


def run_items(
    batch_id: str,
    plans: list[ItemPlan],
    settings: Settings,
    store: Store,
    index: SearchBackend,
    pages: PageWork | None = None,
) -> list[dict[str, Any]]:
    """Every page of these items (`pages`, if it was started already), then each item finished
    in order; returns each item's outcome (also written to the work folder for the batch report)."""
    work = pages or start_pages(plans, settings)
    try:
        return _finish_items(batch_id, plans, settings, store, index, work)
    finally:
        work.close()


def _finish_items(
    batch_id: str,
    plans: list[ItemPlan],
    settings: Settings,
    store: Store,
    index: SearchBackend,
    work: PageWork,
) -> list[dict[str, Any]]:
    watcher = observer()
    collector = _Collector(plans)
    outcomes: list[dict[str, Any]] = []
    worker = os.environ.get("PREFECT__WORKER_NAME", "")

    def finish(upto: int) -> None:
        for i, pages in collector.ready(upto):
            plan = plans[i]
            if not plan.reusable:
                _still_ours(settings)
            item, problem = finish_item_task(
                _plain(plan), _plain(pages), batch_id, _plain(settings), _plain(store), _plain(index)
            )
            process.release_snapshots(plan.planned)
            outcome = {
                "summary": item.summary(),
                "not_indexed": problem,
                "worker": worker,
                "input_key": plan.input_key,
            }
            batchplan.write_outcome(settings.work_dir, batch_id, plan.archive_code, outcome)
            outcomes.append(outcome)
            log.info(
                "%s: %s, %d pages, %d findings%s",
                item.archive_code,
                item.verdict,
                item.page_count,
                len(item.findings),
                f"; not indexed: {problem}" if problem else "",
            )
            watcher.item_done(ItemOutcome.of(item))

    started: set[int] = set()
    for i, page in work.results():
        if i not in started:
            started.add(i)
            watcher.item_started(plans[i].archive_code, len(plans[i].planned))
        collector.add(i, page)
        watcher.page_done(plans[i].archive_code)
        finish(i + 1)
    finish(len(plans))
    return outcomes


@flow(name="process-items", flow_run_name="{batch_id} items {first}-{last}", validate_parameters=False)
def process_items(batch_id: str, first: int, last: int) -> dict[str, Any]:
    """One chunk of a batch on a worker: items first..last (1-based, inclusive) of its plan.

    Only small values come in and go out: the plan and the outcomes are in the work folder."""
    from pipeline.index import open_backend
    from pipeline.settings import load_settings
    from pipeline.tempfiles import use_private_tmp

    settings = load_settings()
    from pipeline.cluster import check_server_mode

    if settings.server.mode != "server":
        raise ConfigError("this worker's settings are not in server mode: set CAPTURE_SERVER__MODE=server")
    check_server_mode(settings)  # a worker set up without PostgreSQL or Elasticsearch says so, loudly
    settings.ensure_dirs()
    use_private_tmp(settings.home_dir)
    plan = batchplan.read_plan(settings.work_dir, batch_id)
    store = open_store(settings)
    index = open_backend(settings)
    try:
        outcomes = run_items(batch_id, plan.items[first - 1 : last], settings, store, index)
    finally:
        index.close()
        store.close()
    worker = os.environ.get("PREFECT__WORKER_NAME", "")
    log.info("items %d-%d of %s done on %s", first, last, batch_id, worker or "this process")
    return {"items": len(outcomes), "worker": worker}
