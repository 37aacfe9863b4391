"""The process_batch flow: thin Prefect tasks around the plain functions in pipeline.process."""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from pipeline import process
from pipeline.errors import OcrTimeoutError
from pipeline.index import open_backend
from pipeline.intake import read_layout
from pipeline.models import CatalogueEntry, Finding, ItemResult, PageResult, PlannedPage, Severity, Verdict
from pipeline.pages import FileProblem
from pipeline.progress import ItemOutcome, observer
from pipeline.reindex import index_or_mark
from pipeline.report import BatchReport
from pipeline.settings import Settings, load_settings
from pipeline.store import Store

log = logging.getLogger(__name__)
# Settings handed to a flow run in this process, by reference (secrets stay in memory).
_LIVE_SETTINGS: dict[str, Settings] = {}


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what can succeed on a second try: an OCR engine that ran out of time."""
    try:
        state.result()
    except OcrTimeoutError:
        return True
    except Exception:  # noqa: BLE001 - anything else is not retried
        return False
    return False


@task(
    name="ocr-page",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_transient,
    cache_policy=NO_CACHE,
    tags=["ocr"],
)
def ocr_page_task(page: PlannedPage, seq: int, settings: Settings, cache_dir: Path) -> PageResult:
    return process.process_page(page, seq, settings, process.engine_pool(settings), cache_dir)


@task(name="package-item", cache_policy=NO_CACHE)
def package_item_task(
    archive_code: str,
    entry: CatalogueEntry | None,
    pages: list[PageResult],
    problems: list[FileProblem],
    input_key: str,
    batch_id: str,
    settings: Settings,
    expected: bool | None = None,
) -> ItemResult:
    return process.package_item(archive_code, entry, pages, problems, input_key, batch_id, settings, expected)


@dataclass
class _ItemPlan:
    archive_code: str
    entry: CatalogueEntry | None
    planned: list[PlannedPage]
    problems: list[FileProblem]
    input_key: str
    reused: ItemResult | None
    expected: bool | None = None  # in the manifest? None: the batch has no manifest list


def _plan(
    layout_items: tuple[tuple[str, Path], ...],
    catalogue: dict[str, CatalogueEntry],
    settings: Settings,
    expected: set[str] | None = None,
) -> list[_ItemPlan]:
    plans = []
    for code, folder in layout_items:
        planned, problems = process.plan_item(folder, settings)
        entry = catalogue.get(code)
        listed = None if expected is None else code in expected
        key = process.item_input_key(planned, problems, entry, settings, listed)
        reused = process.reuse_packaged(settings.archive_dir, code, key)
        plans.append(_ItemPlan(code, entry, planned, problems, key, reused, listed))
    return plans


def _page_futures(
    plans: list[_ItemPlan], settings: Settings, cache_dir: Path, window: int
) -> Iterator[tuple[int, PageResult]]:
    """Submit page OCR tasks with at most `window` in flight; yield (plan index, result) in order."""
    jobs = (
        (i, seq, page)
        for i, plan in enumerate(plans)
        if plan.reused is None
        for seq, page in enumerate(plan.planned, start=1)
    )
    pending: deque[tuple[int, int, PlannedPage, PrefectFuture[PageResult]]] = deque()

    def top_up() -> None:
        while len(pending) < window:
            job = next(jobs, None)
            if job is None:
                return
            i, seq, page = job
            pending.append((i, seq, page, ocr_page_task.submit(page, seq, settings, cache_dir)))

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


def _finish_item(plan: _ItemPlan, pages: list[PageResult], batch_id: str, settings: Settings) -> ItemResult:
    try:
        return package_item_task(
            plan.archive_code,
            plan.entry,
            pages,
            plan.problems,
            plan.input_key,
            batch_id,
            settings,
            plan.expected,
        )
    except Exception as exc:  # noqa: BLE001 - a failed item does not fail the batch
        log.exception("packaging %s failed", plan.archive_code)
        item = ItemResult(plan.archive_code, plan.entry, pages=pages)
        item.findings.append(Finding("package_failed", f"packaging failed: {exc}", Severity.ERROR))
        item.verdict = Verdict.FAILED
        return item


@flow(name="process-batch", validate_parameters=False, log_prints=False)
def process_batch(
    batch_dir: str,
    settings_ref: str = "",
    batch_id: str | None = None,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the batch layout, OCR every page, package, index and record every item.

    `manifest` (from batch.json / batch.csv) may list the archive codes expected in the batch:
    an extra item gets a finding, a missing one is a batch finding in the report.
    `settings_ref` names settings handed over in this process (`run_batch`); settings never
    travel as flow parameters, which Prefect stores and which would mask every secret.
    """
    settings = _LIVE_SETTINGS.get(settings_ref) or load_settings()
    settings.ensure_dirs()
    started = time.monotonic()
    layout = read_layout(Path(batch_dir))
    batch_id = batch_id or layout.batch_id
    store = Store(settings.state_url)
    index = open_backend(settings)
    report = BatchReport(batch_id, str(layout.root))
    report.manifest = manifest
    expected = set(manifest["items"]) if manifest and manifest.get("items") else None
    if expected is not None:
        present = {code for code, _ in layout.items}
        report.batch_findings = [
            {
                "code": "missing_item",
                "archive_code": code,
                "message": f"{code} is listed in the batch manifest but has no folder in the batch",
            }
            for code in sorted(expected - present)
        ]
    report.rejected = [{"folder": r.name, "reason": r.reason} for r in layout.rejected]
    report.loose_files = list(layout.loose_files)
    watcher = observer()
    plans: list[_ItemPlan] = []
    try:
        store.start_batch(batch_id, str(layout.root), manifest)
        plans = _plan(layout.items, store.catalogue(), settings, expected)
        watcher.batch_started(batch_id, len(plans), sum(len(p.planned) for p in plans))
        cache_dir = settings.work_dir / "pages"
        cache_dir.mkdir(parents=True, exist_ok=True)

        collected: dict[int, list[PageResult]] = {i: [] for i in range(len(plans))}
        next_item = 0

        def settle(upto: int) -> None:
            """Finish every item before `upto` whose pages are all in, in batch order."""
            nonlocal next_item
            while next_item < upto:
                plan = plans[next_item]
                if plan.reused is None and len(collected[next_item]) < len(plan.planned):
                    return
                item = plan.reused or _finish_item(plan, collected.pop(next_item), batch_id, settings)
                process.release_snapshots(plan.planned)
                row = store.record_item(batch_id, item)
                if item.pdf_path:
                    problem = index_or_mark(index, store, process.index_document(item, visible=row.visible))
                    if problem:
                        report.not_indexed.append({"archive_code": item.archive_code, "reason": problem})
                report.items.append(item)
                watcher.item_done(ItemOutcome.of(item))
                next_item += 1

        started_items: set[int] = set()
        for i, page in _page_futures(plans, settings, cache_dir, window=settings.ocr.workers * 4):
            if i not in started_items:
                started_items.add(i)
                watcher.item_started(plans[i].archive_code, len(plans[i].planned))
            collected[i].append(page)
            watcher.page_done(plans[i].archive_code)
            settle(i + 1)
        settle(len(plans))
        report.seconds = time.monotonic() - started
        report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        path = report.write(settings.reports_dir)
        store.finish_batch(batch_id, "done", str(path), report.totals())
        data = report.to_dict()
        data["report_path"] = str(path)
        return data
    finally:
        process.release_snapshots(p for plan in plans for p in plan.planned)
        index.close()
        store.close()


def run_batch(
    batch_dir: Path, settings: Settings, batch_id: str | None = None, manifest: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the flow in this process with a thread pool sized by the OCR settings."""
    runner: Any = ThreadPoolTaskRunner(max_workers=settings.ocr.workers)
    flow_run = process_batch.with_options(task_runner=runner)
    ref = uuid.uuid4().hex
    _LIVE_SETTINGS[ref] = settings
    try:
        return flow_run(str(batch_dir), ref, batch_id, manifest)  # type: ignore[no-any-return]
    finally:
        _LIVE_SETTINGS.pop(ref, None)
