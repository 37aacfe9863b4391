"""Server mode: the same flows on a Prefect server, its work pools and its workers.

    capture deploy            work pools `capture` (OCR) and `capture-control` (batch runs), the
                              deployments process-batch/capture and process-items/capture, and the
                              automation that marks a run Crashed when its heartbeats stop
    capture watch / run --submit
                              claim a batch, submit a process-batch run, follow it to the end
    process-batch (a worker of capture-control)
                              plans, then `fan_out`: one process-items run per chunk of items;
                              a chunk whose run crashed (its worker died) or failed runs again,
                              at most `server.chunk_attempts` times, on whichever worker is free

Prefect's own mechanisms do the distributed part: flow run heartbeats
(PREFECT_FLOWS_HEARTBEAT_FREQUENCY) and an automation (no heartbeat within
`server.crashed_after_seconds` -> Crashed) find a dead worker's runs; work pools and workers
share out the chunks; run names, tags and logs make each batch readable in Prefect's UI.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pipeline.errors import BatchError, ConfigError, PrefectUnavailable
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.batchplan import BatchPlan
    from pipeline.index.base import SearchBackend
    from pipeline.store import Store

log = logging.getLogger(__name__)
BATCH_FLOW = "process-batch"
ITEMS_FLOW = "process-items"
CRASH_AUTOMATION = "capture: a run whose heartbeats stopped has crashed"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def check_server_mode(settings: Settings) -> str:
    """The Prefect API URL; ConfigError says why this configuration cannot run on a cluster."""
    problems = []
    if not settings.state.url or settings.state.url.startswith("sqlite"):
        problems.append(
            "the state store is SQLite (state.url): workers on several machines cannot share one "
            "SQLite file safely; set CAPTURE_STATE__URL=postgresql+psycopg://..."
        )
    if settings.index.backend == "sqlite":
        problems.append(
            "the search index is the embedded SQLite file (index.backend): workers on several "
            "machines cannot share it; set CAPTURE_INDEX__BACKEND=elasticsearch and its hosts"
        )
    url = settings.server.prefect_api_url or os.environ.get("PREFECT_API_URL", "")
    if not url:
        problems.append("no Prefect server is named: set server.prefect_api_url or PREFECT_API_URL")
    if problems:
        raise ConfigError("server mode is not possible: " + "; ".join(problems))
    return url


def prefect_environment(settings: Settings) -> dict[str, str]:
    """What every process of the cluster needs in its environment for Prefect."""
    return {
        "PREFECT_API_URL": check_server_mode(settings),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(settings.server.heartbeat_seconds),
        "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


@contextmanager
def prefect_client(settings: Settings) -> Iterator[Any]:
    """A synchronous Prefect client talking to the cluster's server; an unreachable or refusing
    server is a PrefectUnavailable naming it."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = check_server_mode(settings)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            with get_client(sync_client=True) as client:
                yield client
    except (httpx.TransportError, PrefectHTTPStatusError) as exc:
        raise PrefectUnavailable(f"the Prefect server at {url}: {type(exc).__name__}: {exc}"[:1000]) from exc


# ---------------------------------------------------------------- capture deploy


def _deployment_specs(settings: Settings) -> list[dict[str, Any]]:
    from prefect.utilities.callables import parameter_schema

    from pipeline.flows.batch import process_batch
    from pipeline.flows.items import process_items

    server = settings.server
    return [
        {
            "flow": BATCH_FLOW,
            "entrypoint": "pipeline.flows.batch:process_batch",
            "work_pool_name": server.control_pool,
            "description": "A batch: read its layout, plan its items, fan chunks out to workers, report.",
            "schema": parameter_schema(process_batch.fn).model_dump(),
        },
        {
            "flow": ITEMS_FLOW,
            "entrypoint": "pipeline.flows.items:process_items",
            "work_pool_name": server.work_pool,
            "description": "A chunk of a batch's items: pages read, cleaned, recognised; items verified, "
            "packaged, recorded, indexed.",
            "schema": parameter_schema(process_items.fn).model_dump(),
        },
    ]


def _crash_automation(settings: Settings) -> Any:
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=CRASH_AUTOMATION,
        description=(
            "Archive Capture: a flow run that stopped sending heartbeats (its worker died) is marked "
            "Crashed, so its batch run sends the chunk to another worker."
        ),
        trigger=EventTrigger(
            # after it was handed to a worker (Pending), a run must start (Running) in time; after
            # it started, it must keep sending heartbeats: either silence means its worker died
            after={"prefect.flow-run.Pending", "prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.Running",
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=settings.server.crashed_after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=(
                    f"no heartbeat for {settings.server.crashed_after_seconds} s: its worker died, froze "
                    "or lost the server"
                ),
            )
        ],
    )


def _comparable(model: Any) -> Any:
    """A pydantic model as plain data with every list sorted (sets come back in any order)."""

    def tidy(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: tidy(v) for k, v in value.items()}
        if isinstance(value, list):
            return sorted((tidy(v) for v in value), key=repr)
        return value

    return tidy(model.model_dump(mode="json"))


def deploy(settings: Settings) -> list[str]:
    """Register the work pools, deployments and the crash automation; change only what differs.
    Returns what was created or changed (empty when everything was in place already)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    changes: list[str] = []
    server = settings.server
    with prefect_client(settings) as client:
        for pool in (server.work_pool, server.control_pool):
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                template = ProcessWorker.get_default_base_job_template()
                client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
                changes.append(f"work pool {pool}")
        for spec in _deployment_specs(settings):
            name = f"{spec['flow']}/{server.deployment}"
            try:
                current = client.read_deployment_by_name(name)
            except ObjectNotFound:
                current = None
            wanted = {
                "entrypoint": spec["entrypoint"],
                "work_pool_name": spec["work_pool_name"],
                "description": spec["description"],
                "parameter_openapi_schema": spec["schema"],
                "tags": ["archive-capture"],
            }
            if current is not None and all(getattr(current, k) == v for k, v in wanted.items()):
                continue
            flow_id = client.create_flow_from_name(spec["flow"])
            client.create_deployment(
                flow_id=flow_id,
                name=server.deployment,
                work_queue_name="default",
                path=None,
                pull_steps=[],
                enforce_parameter_schema=False,
                **wanted,
            )
            changes.append(f"deployment {name}")
        wanted_automation = _crash_automation(settings)
        found = client.read_automations_by_name(CRASH_AUTOMATION)
        same = [
            a
            for a in found
            if _comparable(a.trigger) == _comparable(wanted_automation.trigger)
            and [_comparable(x) for x in a.actions] == [_comparable(x) for x in wanted_automation.actions]
            and a.enabled
        ]
        if not same:
            for old in found:
                client.delete_automation(old.id)
            client.create_automation(wanted_automation)
            changes.append(f"automation {CRASH_AUTOMATION!r}")
    return changes


# ---------------------------------------------------------------- submitting and following


@dataclass(frozen=True)
class RunState:
    type: str  # SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED, CANCELLED...
    name: str
    message: str

    @property
    def final(self) -> bool:
        return self.type in FINAL


def _state(flow_run: Any) -> RunState:
    state = flow_run.state
    if state is None:
        return RunState("SCHEDULED", "Scheduled", "")
    return RunState(state.type.value, state.name or state.type.value, state.message or "")


def submit_batch(
    settings: Settings, batch_dir: str, batch_id: str, manifest: dict[str, Any] | None, attempt: int = 1
) -> UUID:
    """A process-batch run for this batch (its folder must be where every worker sees it).

    The idempotency key (batch id and attempt) makes two submitters of the same batch at the
    same moment (two `run --submit`, a watcher taking over) get one run, not two."""
    from prefect.deployments import run_deployment

    with prefect_client(settings) as client:
        run: Any = run_deployment(
            f"{BATCH_FLOW}/{settings.server.deployment}",
            client=client,
            parameters={"batch_dir": batch_dir, "batch_id": batch_id, "manifest": manifest},
            timeout=0,
            flow_run_name=batch_id,
            tags=[f"batch:{batch_id}", "archive-capture"],
            idempotency_key=f"capture:{batch_id}:{attempt}",
            as_subflow=False,
        )
    return UUID(str(run.id))


def run_state(settings: Settings, flow_run_id: UUID | str) -> RunState:
    with prefect_client(settings) as client:
        return _state(client.read_flow_run(UUID(str(flow_run_id))))


def follow(
    settings: Settings,
    flow_run_id: UUID | str,
    *,
    every: float = 2.0,
    tick: Callable[[RunState], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> RunState:
    """Wait for a flow run to end; `tick` sees each look, `stop` ends the wait early.

    A Prefect server that is away for a while (restarted, a network hiccup) is waited out:
    the run goes on without us, and we look again with a growing pause."""
    pause = every
    while True:
        try:
            state = run_state(settings, flow_run_id)
        except PrefectUnavailable as exc:
            log.warning("following %s: %s; looking again in %.0f s", flow_run_id, exc, pause)
            if stop is not None and stop():
                raise
            time.sleep(pause)
            pause = min(pause * 2, 60.0)
            continue
        pause = every
        if tick is not None:
            tick(state)
        if state.final or (stop is not None and stop()):
            return state
        time.sleep(every)


# ---------------------------------------------------------------- the batch run's fan-out


def _live_chunk_runs(client: Any, batch_id: str) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    live = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
    flow_filter = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[f"batch:{batch_id}", "chunk"]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live)),
    )
    return list(client.read_flow_runs(flow_run_filter=flow_filter))


def _cancel(client: Any, run_ids: list[UUID]) -> None:
    from prefect.states import Cancelled

    for run_id in run_ids:
        try:
            client.set_flow_run_state(run_id, Cancelled(message="its batch run ended"), force=True)
        except Exception:  # noqa: BLE001 - best effort: the chunk's own checks stop it too
            log.warning("could not cancel chunk run %s", run_id)


def fan_out(plan: BatchPlan, settings: Settings, store: Store, index: SearchBackend) -> None:
    """Run the plan's items as chunks on the workers; wait until every chunk is done.

    Chunks whose items are all packaged already are recorded here, without a worker. A chunk
    whose run crashed or failed is submitted again (another worker takes it); items its
    first run finished are reused from the archive, so none is packaged twice. Raises
    BatchError when a chunk fails `server.chunk_attempts` times."""
    from prefect.deployments import run_deployment

    from pipeline.batchplan import read_outcomes
    from pipeline.flows.items import run_items

    server = settings.server
    name = f"{ITEMS_FLOW}/{server.deployment}"
    chunks = plan.chunks(server.chunk_items)
    waiting: dict[UUID, tuple[int, int]] = {}
    tries: dict[tuple[int, int], int] = {}
    with prefect_client(settings) as client:
        for run in _live_chunk_runs(client, plan.batch_id):  # left by an earlier run of this batch
            log.info("waiting for %s, left running by an earlier batch run", run.name)
            follow(settings, run.id, every=server.poll_seconds)

        def submit(first: int, last: int) -> None:
            tries[(first, last)] = tries.get((first, last), 0) + 1
            run: Any = run_deployment(
                name,
                client=client,
                parameters={"batch_id": plan.batch_id, "first": first + 1, "last": last},
                timeout=0,
                tags=[f"batch:{plan.batch_id}", "chunk", "archive-capture"],
                as_subflow=True,
            )
            waiting[UUID(str(run.id))] = (first, last)
            log.info(
                "submitted items %d-%d of %s (try %d)", first + 1, last, plan.batch_id, tries[(first, last)]
            )

        outcomes = read_outcomes(settings.work_dir, plan.batch_id)
        try:
            for first, last in chunks:
                items = plan.items[first:last]
                if all(item.reusable for item in items):
                    finished = [outcomes.get(item.archive_code, {}) for item in items]
                    if all(
                        o.get("input_key") == item.input_key for o, item in zip(finished, items, strict=True)
                    ):
                        continue  # an earlier run of this batch did these: its outcomes stand
                    run_items(plan.batch_id, items, settings, store, index)
                else:
                    submit(first, last)
            while waiting:
                time.sleep(server.poll_seconds)
                for run_id, (first, last) in list(waiting.items()):
                    state = _state(client.read_flow_run(run_id))
                    if not state.final:
                        continue
                    del waiting[run_id]
                    if state.type == "COMPLETED":
                        continue
                    if tries[(first, last)] >= server.chunk_attempts:
                        last_words = state.message or "no message"
                        raise BatchError(
                            f"items {first + 1}-{last} of {plan.batch_id}: {tries[(first, last)]} runs "
                            f"ended {state.name} (server.chunk_attempts); last: {last_words}"
                        )
                    log.warning(
                        "items %d-%d: run %s ended %s; sending them again",
                        first + 1,
                        last,
                        run_id,
                        state.name,
                    )
                    submit(first, last)
        except BaseException:
            _cancel(client, list(waiting))  # none may go on reading this run's snapshots
            raise


# ---------------------------------------------------------------- the watcher's (and run --submit's) side


def _report_of(store: Store, batch_id: str) -> dict[str, Any]:
    import json

    done = store.batch(batch_id)
    if done is None or not done.report_path:
        raise BatchError(f"batch {batch_id}: its run completed but wrote no report")
    with open(done.report_path, encoding="utf-8") as handle:
        report: dict[str, Any] = json.load(handle)
    report["report_path"] = done.report_path
    return report


def run_on_cluster(
    settings: Settings,
    store: Store,
    batch_dir: str,
    batch_id: str,
    manifest: dict[str, Any] | None,
    *,
    first: int = 1,
    on_start: Callable[[int], None] | None = None,
    tick: Callable[[RunState], None] | None = None,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Have the batch processed by the cluster and wait for it: follow the run already submitted
    for it (a watcher that took over), or submit one; a run that fails or crashes is submitted
    again, at most `watch.max_attempts` runs in all. Returns the batch report."""
    from pipeline.errors import BatchDied

    limit = settings.watch.max_attempts
    endings: list[str] = []
    row = store.batch(batch_id)
    run_id: str | None = row.flow_run_id if row is not None else None
    if run_id:  # submitted before (by a watcher that was stopped): follow it, or take its report
        earlier = follow(settings, run_id, every=settings.watch.poll_seconds, tick=tick)
        if earlier.type == "COMPLETED":
            return _report_of(store, batch_id)
        endings.append(f"run {run_id}: {earlier.name} ({earlier.message[:300] or 'no message'})")
        run_id = None  # that one ended; its attempt is already counted
    number = first
    while True:
        if run_id is None:
            if number > limit:
                break
            if on_start is not None:
                on_start(number)
            run_id = str(submit_batch(settings, batch_dir, batch_id, manifest, number))
            store.set_batch_flow_run(batch_id, batch_dir, run_id)
            say(f"batch {batch_id}: submitted as flow run {run_id} (try {number} of at most {limit})")
            number += 1
        state = follow(settings, run_id, every=settings.watch.poll_seconds, tick=tick)
        if state.type == "COMPLETED":
            return _report_of(store, batch_id)
        endings.append(f"run {run_id}: {state.name} ({state.message[:300] or 'no message'})")
        say(f"batch {batch_id}: its flow run ended {state.name}: {state.message[:300]}")
        run_id = None
    raise BatchDied(
        f"the batch's flow runs ended without finishing {len(endings)} time(s) ({first - 1} earlier, "
        f"at most {limit} in all, watch.max_attempts): {'; '.join(endings) or 'none was started'}"
    )
