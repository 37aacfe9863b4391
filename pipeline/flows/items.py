"""The work on items: for each page read, clean, recognise; for each item verify, package, record, index.

`run_items` does it for a list of planned items, in this process, with a thread pool of OCR
engines (each loaded once per process); the batch flow calls it directly (embedded mode), and
the `process-items` flow calls it on a worker for one chunk of a batch (server mode). Page
images and OCR results never leave the process: tasks hand them over in memory, and what must
outlive the process goes to the work folder, the archive and the state store.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from pipeline import batchplan, process
from pipeline.batchplan import ItemPlan
from pipeline.errors import BatchError, ConfigError, OcrTimeoutError
from pipeline.imaging import CleanedPage, UpDownJudge
from pipeline.index.base import SearchBackend
from pipeline.models import Finding, ItemResult, PageResult, PlannedPage, Severity, Verdict
from pipeline.ocr import OcrEngine
from pipeline.pages import LoadedPage
from pipeline.progress import ItemOutcome, observer
from pipeline.reindex import index_or_mark
from pipeline.settings import Settings
from pipeline.store import ItemRow, Store, open_store

log = logging.getLogger(__name__)


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what can succeed on a second try: an OCR engine that ran out of time."""
    try:
        state.result()
    except OcrTimeoutError:
        return True
    except Exception:  # noqa: BLE001 - anything else is not retried
        return False
    return False


# ---------------------------------------------------------------- one page


@task(name="read", task_run_name="read {page.name}", cache_policy=NO_CACHE)
def read_page_task(
    page: PlannedPage, seq: int, settings: Settings, cache_dir: Path
) -> tuple[PageResult, LoadedPage | None]:
    return process.read_step(page, seq, settings, cache_dir)


@task(name="clean", task_run_name="clean page {result.seq}", cache_policy=NO_CACHE)
def clean_page_task(
    loaded: LoadedPage, result: PageResult, settings: Settings, judges: tuple[UpDownJudge, ...]
) -> CleanedPage:
    """Upright, deskew, crop, blank test."""
    return process.clean_step(loaded, result, settings, judges)


@task(name="recognise", task_run_name="recognise page {result.seq}", cache_policy=NO_CACHE)
def recognise_page_task(
    cleaned: CleanedPage, result: PageResult, engine: OcrEngine, settings: Settings, cache_dir: Path
) -> PageResult:
    return process.recognise_step(cleaned, result, engine, settings, cache_dir)


@task(
    name="page",
    task_run_name="{item} page {seq}",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_transient,
    cache_policy=NO_CACHE,
    tags=["ocr"],
)
def page_task(page: PlannedPage, seq: int, item: str, settings: Settings, cache_dir: Path) -> PageResult:
    """One page: its cached result for the same bytes and settings, or read, clean, recognise."""
    hit = process.cached_page(page, seq, settings, cache_dir)
    if hit is not None:
        return hit
    result, loaded = read_page_task(page, seq, settings, cache_dir)
    if loaded is None:
        return result
    pool = process.engine_pool(settings)
    with pool.engine() as engine:
        cleaned = clean_page_task(loaded, result, settings, pool.judges(engine))
        del loaded
        return recognise_page_task(cleaned, result, engine, settings, cache_dir)


# ---------------------------------------------------------------- one item


@task(name="verify", task_run_name="verify {plan.archive_code}", cache_policy=NO_CACHE)
def verify_item_task(plan: ItemPlan, pages: list[PageResult], settings: Settings) -> ItemResult:
    """Count the pages against the catalogue; files, sources, resolution, confidence, manifest."""
    return process.verify_item(plan.archive_code, plan.entry, pages, plan.problems, settings, plan.expected)


@task(name="package", task_run_name="package {item.archive_code}", cache_policy=NO_CACHE)
def package_item_task(item: ItemResult, plan: ItemPlan, batch_id: str, settings: Settings) -> ItemResult:
    """The PDF/A, its record and manifest, validated, moved into the archive."""
    return process.package_verified(item, plan.input_key, batch_id, settings)


@task(name="record", task_run_name="record {item.archive_code}", cache_policy=NO_CACHE)
def record_item_task(item: ItemResult, batch_id: str, store: Store) -> ItemRow:
    """The item's state, package history and findings; the QA gate opens a case if needed."""
    return store.record_item(batch_id, item)


@task(name="index", task_run_name="index {item.archive_code}", cache_policy=NO_CACHE)
def index_item_task(item: ItemResult, visible: bool, index: SearchBackend, store: Store) -> str | None:
    """Its pages into the search index; when the index is away, the item is marked for later."""
    return index_or_mark(index, store, process.index_document(item, visible=visible))


def _reused(plan: ItemPlan, settings: Settings) -> ItemResult | None:
    return process.reuse_packaged(settings.archive_dir, plan.archive_code, plan.input_key)


def finish_item(
    plan: ItemPlan,
    pages: list[PageResult],
    batch_id: str,
    settings: Settings,
    store: Store,
    index: SearchBackend,
) -> tuple[ItemResult, str | None]:
    """Verify, package, record and index one item whose pages are all in; never raises."""
    try:
        item = _reused(plan, settings) if plan.reusable else None
        if item is None:
            if plan.reusable:  # the package changed since planning: nothing was read for it
                item = ItemResult(plan.archive_code, plan.entry)
                item.findings.append(
                    Finding("package_changed", "the archived package changed during the batch; run it again")
                )
                item.verdict = Verdict.FAILED
            else:
                item = package_item_task(verify_item_task(plan, pages, settings), plan, batch_id, settings)
    except Exception as exc:  # noqa: BLE001 - a failed item does not fail the batch
        log.exception("packaging %s failed", plan.archive_code)
        item = ItemResult(plan.archive_code, plan.entry, pages=pages)
        item.findings.append(Finding("package_failed", f"packaging failed: {exc}", Severity.ERROR))
        item.verdict = Verdict.FAILED
    row = record_item_task(item, batch_id, store)
    problem = index_item_task(item, row.visible, index, store) if item.pdf_path else None
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


def _page_results(
    plans: list[ItemPlan], settings: Settings, cache_dir: Path, window: int
) -> Iterator[tuple[int, PageResult]]:
    """Submit page tasks with at most `window` in flight; yield (item index, result) in order."""
    jobs = (
        (i, seq, page, plan.archive_code)
        for i, plan in enumerate(plans)
        if not plan.reusable
        for seq, page in enumerate(plan.planned, start=1)
    )
    pending: deque[tuple[int, int, PlannedPage, PrefectFuture[PageResult]]] = deque()

    def top_up() -> None:
        while len(pending) < window:
            job = next(jobs, None)
            if job is None:
                return
            i, seq, page, code = job
            pending.append((i, seq, page, page_task.submit(page, seq, code, settings, cache_dir)))

    top_up()
    while pending:
        i, seq, page, future = pending.popleft()
        try:
            result: PageResult = future.result()
        except Exception as exc:  # noqa: BLE001 - a failed page becomes a finding, never a failed batch
            result = PageResult(
                seq=seq,
                source=page.name,
                frame=page.frame,
                source_sha256=page.sha256,
                error=f"processing failed: {exc.__class__.__name__}: {exc}",
                snapshot=page.snapshot,
            )
        top_up()
        yield i, result


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


def run_items(
    batch_id: str, plans: list[ItemPlan], settings: Settings, store: Store, index: SearchBackend
) -> list[dict[str, Any]]:
    """Every page of these items, then each item finished in order; returns each item's outcome
    (also written to the work folder for the batch report)."""
    cache_dir = settings.work_dir / "pages"
    cache_dir.mkdir(parents=True, exist_ok=True)
    for plan in plans:  # an earlier run of these items (its worker died) may have packaged some
        if not plan.reusable and _reused(plan, settings) is not None:
            plan.reusable = True
    watcher = observer()
    collector = _Collector(plans)
    outcomes: list[dict[str, Any]] = []
    worker = os.environ.get("PREFECT__WORKER_NAME", "")

    def finish(upto: int) -> None:
        for i, pages in collector.ready(upto):
            plan = plans[i]
            if not plan.reusable:
                _still_ours(settings)
            item, problem = finish_item(plan, pages, batch_id, settings, store, index)
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
    for i, page in _page_results(plans, settings, cache_dir, window=settings.ocr.workers * 4):
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
