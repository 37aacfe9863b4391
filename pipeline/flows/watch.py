"""The watch service: poll the watch folder, claim complete batches, run process_batch on each.

A long-lived process (`capture watch`); each batch runs as a Prefect flow run in a process
of its own (pipeline.batchrun), so no page can take the watcher down. It never exits on bad
input or a vanished share: bad batches are quarantined with a reason, an unreachable folder
is retried with back-off. A batch whose processes keep dying (killed, out of memory, crashed)
is started at most `watch.max_attempts` times in all, counted in the state store across
watchers (a watcher that was itself killed mid-batch counts too), then quarantined with the
reason: a poison batch never loops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline import watch
from pipeline.batchrun import record_failure
from pipeline.errors import BatchError, ServiceUnavailable
from pipeline.intake import read_layout
from pipeline.settings import Settings
from pipeline.store import Store, open_store

log = logging.getLogger(__name__)
Say = Callable[[str], None]


class _Heartbeat:
    """Touches the claim's heartbeat file while the batch is being processed."""

    def __init__(self, taken: watch.Claim, every: float) -> None:
        self._taken, self._every = taken, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._taken.beat()
            except OSError as exc:  # a share hiccup; the next beat tries again
                log.warning("heartbeat for %s failed: %s", self._taken.name, exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _rejection(taken: watch.Claim) -> tuple[str | None, dict[str, Any] | None]:
    """Why the claimed entry cannot be processed (None if it can), and its manifest."""
    reason = watch.unsafe_name_reason(taken.name)
    if reason:
        return reason, None
    if taken.batch_dir.is_symlink() or not taken.batch_dir.is_dir():
        return f"{taken.name!r} is a file, not a batch folder (one subfolder per item expected)", None
    try:
        manifest = watch.read_manifest(taken.batch_dir)
    except watch.ManifestError as exc:
        return f"manifest: {exc}", None
    try:
        read_layout(taken.batch_dir)
    except BatchError as exc:
        return str(exc).replace(str(taken.batch_dir), taken.name), manifest
    return None, manifest


def _progress(store: Store, taken: watch.Claim, say: Say) -> Callable[[Any], None]:
    """Say how far a batch running on the cluster has come, when that changes."""
    seen: list[tuple[int, int]] = []

    def tick(state: Any) -> None:
        row = store.batch(taken.batch_id)
        now = (store.items_done(taken.batch_id), row.items_planned if row is not None else 0)
        if now[1] and (not seen or seen[-1] != now):
            seen.append(now)
            say(f"batch {taken.name}: {now[0]} of {now[1]} items done ({state.name})")

    return tick


def handle(
    taken: watch.Claim, areas: watch.Areas, settings: Settings, say: Say, env: dict[str, str] | None = None
) -> str:
    """Process one claimed batch to done/ or quarantine/; returns 'done' or 'quarantined'."""
    from pipeline.batchrun import run_attempts
    from pipeline.progress import SilentObserver

    store = open_store(settings)
    try:
        reason, manifest = _rejection(taken)
        earlier = store.batch_attempts(taken.batch_id)
        if reason is None and earlier >= settings.watch.max_attempts:
            reason = (
                f"{earlier} processes were started on this batch and none finished "
                f"(watch.max_attempts = {settings.watch.max_attempts}); the batch may kill its process"
            )
        if reason is None:
            known = store.catalogue()
            unknown = [code for code in (manifest or {}).get("items", []) if code not in known]

            def started(number: int) -> None:
                store.count_attempt(taken.batch_id, str(taken.batch_dir))
                if number > 1:
                    most = settings.watch.max_attempts
                    say(f"batch {taken.name}: starting process {number} of at most {most}")

            def died(attempt: Any) -> None:
                say(f"batch {taken.name}: its process {attempt.number} died ({attempt.describe()})")

            try:
                with _Heartbeat(taken, max(1.0, settings.watch.stale_claim_seconds / 4)):
                    if settings.server.mode == "server":  # the cluster does the work; we follow it
                        from pipeline.cluster import run_on_cluster

                        report = run_on_cluster(
                            settings,
                            store,
                            str(taken.batch_dir),
                            taken.batch_id,
                            manifest,
                            first=earlier + 1,
                            on_start=started,
                            tick=_progress(store, taken, say),
                            say=say,
                        )
                    else:
                        report = run_attempts(
                            taken.batch_dir,
                            settings,
                            SilentObserver(),
                            batch_id=taken.batch_id,
                            manifest=manifest,
                            first=earlier + 1,
                            env=env,
                            on_start=started,
                            on_death=died,
                        )
            except ServiceUnavailable:
                raise  # the state store or Prefect is away: the batch is not at fault, keep its claim
            except Exception as exc:  # noqa: BLE001 - never a crash loop: quarantine with the reason
                log.warning("batch %s failed: %s", taken.name, exc)
                reason = f"processing failed: {exc}"
            else:
                target = watch.finish(taken, areas)
                totals = report["totals"]
                extra = (
                    f"; manifest names codes not in the catalogue: {', '.join(unknown)}" if unknown else ""
                )
                say(
                    f"batch {taken.name}: {totals['items']} items, {totals['straight_through']} straight "
                    f"through, {totals['waiting_for_qa']} waiting for QA -> {target}{extra}"
                )
                return "done"
        target = watch.quarantine(taken, areas, reason)
        record_failure(settings, taken.batch_id, target, "quarantined", reason)
        say(f"batch {taken.name} quarantined: {reason} -> {target}")
        return "quarantined"
    finally:
        store.close()


INDEX_RETRY_SECONDS = 60.0


def retry_index(settings: Settings, say: Say) -> None:
    """Index again the items whose indexing failed earlier (the search server was away)."""
    from pipeline.errors import CaptureError
    from pipeline.index import open_backend
    from pipeline.reindex import reindex_pending

    store = open_store(settings)
    try:
        if not store.index_pending():
            return
        index = open_backend(settings)
        try:
            outcome = reindex_pending(settings, index, store)
        finally:
            index.close()
        if outcome.items:
            say(f"re-indexed {outcome.items} items that were waiting for the search index")
        for code, reason in outcome.still_pending:
            say(f"{code} still waits for the search index: {reason}")
    except CaptureError as exc:
        say(f"re-indexing waits: {exc}")
    finally:
        store.close()


def rolling_fixity(settings: Settings, say: Say) -> None:
    """A share of the archive's packages checked against their manifests (`fixity.*` settings);
    damage is recorded and said, and never stops the watcher."""
    from pipeline import fixity

    store = open_store(settings)
    try:
        for report in fixity.run_rolling_if_due(settings, store, user="watcher"):
            for p in report.problems[:20]:
                say(f"fixity ({report.root}): {p.archive_code} {p.path} is {p.kind}: {p.detail}")
    except Exception:  # noqa: BLE001 - a check that fails must not stop the batches
        log.exception("the rolling fixity check failed")
    finally:
        store.close()


def watch_folder(
    settings: Settings,
    *,
    say: Say = print,
    stop: threading.Event | None = None,
    until_idle: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, int]:
    """Poll until stopped (or, with until_idle, until the folder holds nothing to wait for)."""
    stop = stop or threading.Event()
    areas = watch.Areas(settings.watch_dir)
    owner = watch.owner_id()
    tracker = watch.StabilityTracker(settings.watch.quiet_seconds, settings.watch.marker)
    counts = {"done": 0, "quarantined": 0}
    delay = settings.watch.poll_seconds
    say(f"watching {areas.incoming} every {settings.watch.poll_seconds:g} s (owner {owner})")
    next_index_retry = 0.0
    while not stop.is_set():
        if time.monotonic() >= next_index_retry:
            next_index_retry = time.monotonic() + INDEX_RETRY_SECONDS
            retry_index(settings, say)
        try:
            if not areas.incoming.is_dir():
                raise FileNotFoundError(f"watch folder {areas.incoming} is not reachable")
            areas.ensure()
            for taken in watch.take_over_stale(areas, owner, settings.watch.stale_claim_seconds):
                say(f"resuming batch {taken.name} ({taken.batch_id})")
                counts[handle(taken, areas, settings, say, env)] += 1
            waiting = watch.candidates(areas)
            for entry in waiting:
                mode = tracker.ready(entry)
                if mode is None:
                    continue
                claimed = watch.claim(entry, areas, owner)
                tracker.forget(entry.name)
                if claimed is not None:
                    say(f"claimed batch {claimed.name} ({mode})")
                    counts[handle(claimed, areas, settings, say, env)] += 1
            delay = settings.watch.poll_seconds
            idle = not watch.candidates(areas) and not any(areas.processing.glob("claim-*"))
            if until_idle and idle:
                break
            if idle:  # between batches: the rolling fixity check, when one is due
                rolling_fixity(settings, say)
        except OSError as exc:
            say(f"watch folder problem: {exc}; retrying in {delay:g} s")
            delay = min(delay * 2, 300.0)
        except ServiceUnavailable as exc:  # a database or server restart: wait it out, never exit
            say(f"{exc}; retrying in {delay:g} s (claimed batches are resumed)")
            delay = min(delay * 2, 300.0)
        stop.wait(delay)
    return counts
