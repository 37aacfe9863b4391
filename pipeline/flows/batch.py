"""The batch flow, the journey of a batch: read its layout and manifest, plan its items, do the
work on the items, write the report.

    process-batch (a flow run named by the batch id)
      read-layout      the item folders, rejected folders, loose files; the manifest's findings
      plan-items       snapshot every source file, take the catalogue entry, reuse what is packaged
                       (an embedded run does both before the flow run starts and begins reading
                       pages at once, while Prefect's server is starting: `plan_ahead`)
      -> the items      embedded: in this process (pipeline.flows.items.run_items)
                        server:   chunks of `server.chunk_items` items, each a `process-items` flow
                                  run that any worker takes (pipeline.cluster.fan_out)
      write-report     totals, every item's verdict and findings, from the work folder

Claiming the batch is the watcher's (pipeline.flows.watch); settings never travel as flow
parameters (Prefect stores them, and every secret would be masked): an embedded run hands
them over in memory, a worker reads its own.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from pipeline import batchplan, process
from pipeline.batchplan import BatchPlan, ItemPlan
from pipeline.flows.items import PageWork
from pipeline.index import open_backend
from pipeline.intake import BatchLayout, batch_lock, read_layout
from pipeline.models import CatalogueEntry, Finding, ItemResult, Severity, Verdict
from pipeline.progress import observer
from pipeline.report import BatchReport
from pipeline.settings import Settings, load_settings
from pipeline.store import Store, open_store
from pipeline.supervise import await_prefect

log = logging.getLogger(__name__)
# Settings handed to a flow run in this process, by reference (secrets stay in memory), and the
# batch planned ahead of it.
_LIVE_SETTINGS: dict[str, Settings] = {}
_AHEAD: dict[str, _Ahead] = {}


@task(name="read-layout", task_run_name="read layout of {batch_dir}", cache_policy=NO_CACHE)
def read_layout_task(batch_dir: str) -> BatchLayout:
    return read_layout(Path(batch_dir))


def _manifest_findings(layout: BatchLayout, expected: set[str] | None) -> list[dict[str, str]]:
    if expected is None:
        return []
    present = {code for code, _ in layout.items}
    return [
        {
            "code": "missing_item",
            "archive_code": code,
            "message": f"{code} is listed in the batch manifest but has no folder in the batch",
        }
        for code in sorted(expected - present)
    ]


def plan_items(
    layout: BatchLayout,
    catalogue: dict[str, CatalogueEntry],
    settings: Settings,
    expected: set[str] | None = None,
) -> list[ItemPlan]:
    """Each item's pages (snapshots of its files, hashed while copied), its catalogue entry, and
    whether the archive already holds a package made from exactly this input."""
    plans = []
    for code, folder in layout.items:
        planned, problems = process.plan_item(folder, settings)
        entry = catalogue.get(code)
        listed = None if expected is None else code in expected
        key = process.item_input_key(planned, problems, entry, settings, listed)
        reusable = process.reuse_packaged(settings.archive_dir, code, key) is not None
        plans.append(ItemPlan(code, entry, planned, problems, key, reusable, listed))
    return plans


def make_plan(
    batch_id: str,
    layout: BatchLayout,
    catalogue: dict[str, CatalogueEntry],
    settings: Settings,
    manifest: dict[str, Any] | None,
) -> BatchPlan:
    expected = set(manifest["items"]) if manifest and manifest.get("items") else None
    items = plan_items(layout, catalogue, settings, expected)
    return BatchPlan(
        batch_id,
        str(layout.root),
        items,
        rejected=[{"folder": r.name, "reason": r.reason} for r in layout.rejected],
        loose_files=list(layout.loose_files),
        batch_findings=_manifest_findings(layout, expected),
        manifest=manifest,
    )


@task(name="plan-items", task_run_name="plan {batch_id}", cache_policy=NO_CACHE)
def plan_items_task(
    batch_id: str, layout: BatchLayout, store: Store, settings: Settings, manifest: dict[str, Any] | None
) -> BatchPlan:
    return make_plan(batch_id, layout, store.catalogue(), settings, manifest)


@dataclass
class _Ahead:
    """A batch planned, and its page work begun, before the flow run started (embedded mode)."""

    layout: BatchLayout
    plan: BatchPlan
    pages: PageWork


@task(name="write-report", task_run_name="report {plan.batch_id}", cache_policy=NO_CACHE)
def write_report_task(plan: BatchPlan, settings: Settings, store: Store, seconds: float) -> dict[str, Any]:
    """The batch report from the items' outcomes in the work folder; the batch is done."""
    outcomes = batchplan.read_outcomes(settings.work_dir, plan.batch_id)
    report = BatchReport(plan.batch_id, plan.batch_dir, manifest=plan.manifest)
    report.batch_findings, report.rejected, report.loose_files = (
        plan.batch_findings,
        plan.rejected,
        plan.loose_files,
    )
    for item in plan.items:
        outcome = outcomes.get(item.archive_code)
        if outcome is None:  # no run finished it: say so rather than leave it out
            missing = ItemResult(item.archive_code, item.entry, verdict=Verdict.FAILED)
            missing.findings.append(Finding("not_processed", "no run finished this item", Severity.ERROR))
            report.items.append(missing.summary())
            continue
        report.items.append(outcome["summary"])
        if outcome.get("not_indexed"):
            report.not_indexed.append({"archive_code": item.archive_code, "reason": outcome["not_indexed"]})
        if outcome.get("worker"):
            report.workers[item.archive_code] = outcome["worker"]
    report.seconds = seconds
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    path = report.write(settings.reports_dir)
    data = report.to_dict()
    store.finish_batch(plan.batch_id, "done", str(path), data["totals"])
    data["report_path"] = str(path)
    return data


@flow(name="process-batch", flow_run_name="{batch_id}", validate_parameters=False, log_prints=False)
def process_batch(
    batch_dir: str,
    batch_id: str,
    manifest: dict[str, Any] | None = None,
    settings_ref: str = "",
) -> dict[str, Any]:
    """Read the batch layout, plan, do the work on every item, and report.

    `manifest` (from batch.json / batch.csv) may list the archive codes expected in the batch:
    an extra item gets a finding, a missing one is a batch finding in the report.
    """
    from pipeline.flows.items import run_items

    settings = _LIVE_SETTINGS.get(settings_ref) or load_settings()
    ahead = _AHEAD.pop(settings_ref, None)
    _check_where(settings)
    settings.ensure_dirs()
    started = time.monotonic()
    layout = ahead.layout if ahead else read_layout_task(batch_dir)
    store = open_store(settings)
    index = open_backend(settings)
    plan: BatchPlan | None = None
    try:
        from pipeline.archive import ArchiveLayout

        for left in ArchiveLayout(settings.archive_dir).sweep_staging():
            log.warning("removed a half-written package left by a killed process: %s", left)
        store.start_batch(batch_id, str(layout.root), manifest)
        if ahead:  # planned before the flow run, so the pages were read while Prefect started
            plan = ahead.plan
            log.info("%s: planned and its pages begun before the flow run started", batch_id)
        else:
            plan = plan_items_task(batch_id, layout, store, settings, manifest)
        batchplan.write_plan(settings.work_dir, plan)
        store.set_batch_plan(batch_id, len(plan.items), plan.pages)
        observer().batch_started(batch_id, len(plan.items), plan.pages)
        if settings.server.mode == "server":
            from pipeline.cluster import fan_out

            fan_out(plan, settings, store, index)
        else:
            run_items(batch_id, plan.items, settings, store, index, pages=ahead.pages if ahead else None)
        return write_report_task(plan, settings, store, time.monotonic() - started)
    finally:
        if ahead is not None:
            ahead.pages.close()
        if plan is not None:
            process.release_snapshots(p for item in plan.items for p in item.planned)
        index.close()
        store.close()


def _check_where(settings: Settings) -> None:
    """A batch run a worker took (a deployment run) belongs to a cluster: its worker's settings
    must say so, or it would do all the OCR itself, into files no other machine sees."""
    from prefect.runtime import flow_run

    if flow_run.get_id() and getattr(flow_run, "deployment_id", None):
        from pipeline.cluster import check_server_mode
        from pipeline.errors import ConfigError

        if settings.server.mode != "server":
            raise ConfigError(
                "this worker's settings are not in server mode: set CAPTURE_SERVER__MODE=server"
            )
        check_server_mode(settings)


def plan_ahead(
    batch_dir: Path, batch_id: str, settings: Settings, manifest: dict[str, Any] | None
) -> _Ahead | None:
    """Read the layout, plan the items and begin their pages now, before the flow run: the
    engines load and the first pages are read while Prefect's server starts (about 8 s, and
    15-20 s the first time, when it creates its database). Embedded mode only; a batch that
    cannot be planned here is left to the flow, which reports it."""
    if settings.server.mode == "server":
        return None
    from pipeline.flows.items import start_pages

    try:
        layout = read_layout(batch_dir)
        settings.ensure_dirs()
        store = open_store(settings)
        try:
            plan = make_plan(batch_id, layout, store.catalogue(), settings, manifest)
        finally:
            store.close()
    except Exception:  # noqa: BLE001 - the flow plans it again and reports what is wrong
        log.debug("planning %s ahead of the flow failed; the flow plans it", batch_id, exc_info=True)
        return None
    return _Ahead(layout, plan, start_pages(plan.items, settings))


def _no_heartbeats(settings: Settings) -> AbstractContextManager[Any]:
    """Embedded mode: the flow run sends Prefect no heartbeats. They serve a cluster, where an
    automation marks a run Crashed when its worker falls silent (`pipeline.cluster`); here the
    server lives and dies with the command, nothing reads them, and the flow's end waited up to
    a second for the heartbeat thread's sleep to finish."""
    if settings.server.mode == "server":
        return nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def run_batch(
    batch_dir: Path, settings: Settings, batch_id: str | None = None, manifest: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the batch flow in this process; the pages are planned and begun before it starts."""
    from pipeline.intake import batch_id_for

    batch_id = batch_id or batch_id_for(batch_dir)
    with batch_lock(settings.work_dir, batch_dir, batch_id):
        return _run_batch(batch_dir, settings, batch_id, manifest)


def _run_batch(
    batch_dir: Path, settings: Settings, batch_id: str, manifest: dict[str, Any] | None
) -> dict[str, Any]:
    runner: Any = ThreadPoolTaskRunner(max_workers=settings.ocr.workers)
    flow_run = process_batch.with_options(task_runner=runner)
    ref = uuid.uuid4().hex
    _LIVE_SETTINGS[ref] = settings
    ahead = plan_ahead(batch_dir, batch_id, settings, manifest)
    if ahead is not None:
        _AHEAD[ref] = ahead
    try:
        await_prefect(os.environ)  # `capture run` starts its server beside the pages
        with _no_heartbeats(settings):
            return flow_run(str(batch_dir), batch_id, manifest, ref)  # type: ignore[no-any-return]
    finally:
        _LIVE_SETTINGS.pop(ref, None)
        if _AHEAD.pop(ref, None) is not None and ahead is not None:  # the flow never took it
            ahead.pages.close()
            process.release_snapshots(p for item in ahead.plan.items for p in item.planned)
