"""A batch in a process of its own: a batch that kills its process never kills the command.

`capture run` and `capture watch` (embedded mode) start each batch as a child process
(`python -m pipeline.batchrun`) that runs the batch flow, and stay small themselves: the child
is the kernel's first choice when memory runs out. The child sends progress and its report as
JSON lines on a pipe; its settings, secrets included, arrive on its standard input (a pipe,
never a Prefect parameter or a command line). When the child dies (killed, out of memory, a
crashed engine), the batch is started again, redoing nothing that was finished (page results
and packages are keyed by content), at most `watch.max_attempts` processes in all; then the
caller quarantines it (watch) or reports it failed (run), with the reason.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline import supervise
from pipeline.errors import BatchDied, CaptureError
from pipeline.progress import BatchObserver, ItemOutcome
from pipeline.settings import Settings

EVENTS_FD_ENV = "CAPTURE_EVENTS_FD"


def settings_with_secrets(settings: Settings) -> dict[str, Any]:
    """The settings as plain JSON values, secrets revealed (for a private pipe only)."""
    from pydantic import SecretStr

    def reveal(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: reveal(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [reveal(v) for v in value]
        return value

    data: dict[str, Any] = reveal(settings.model_dump(mode="python"))
    return json.loads(json.dumps(data, default=str))


@dataclass
class Attempt:
    number: int
    returncode: int | None
    report: dict[str, Any] | None
    error: dict[str, Any] | None

    @property
    def died(self) -> bool:
        return self.report is None and self.error is None

    def describe(self) -> str:
        return supervise.describe_exit(self.returncode)


class _Relay:
    """Reads the child's events and hands them to the observer."""

    def __init__(self, stream: IO[bytes], observer: BatchObserver) -> None:
        self.stream, self.observer = stream, observer
        self.report: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None

    def run(self) -> None:
        for raw in self.stream:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            kind = event.get("e")
            if kind == "batch_started":
                self.observer.batch_started(event["batch_id"], event["items"], event["pages"])
            elif kind == "item_started":
                self.observer.item_started(event["code"], event["pages"])
            elif kind == "page_done":
                self.observer.page_done(event["code"])
            elif kind == "item_done":
                self.observer.item_done(ItemOutcome(**event["item"]))
            elif kind == "report":
                self.report = event["report"]
            elif kind == "error":
                self.error = event


def run_once(
    batch_dir: Path,
    settings: Settings,
    observer: BatchObserver,
    *,
    batch_id: str | None = None,
    manifest: dict[str, Any] | None = None,
    number: int = 1,
    env: dict[str, str] | None = None,
) -> Attempt:
    """One child process running the batch to its end (or its death)."""
    read_end, write_end = os.pipe()
    job = {
        "batch_dir": str(batch_dir),
        "batch_id": batch_id,
        "manifest": manifest,
        "settings": settings_with_secrets(settings),
    }
    environment = {**(env if env is not None else _inherited_environment()), EVENTS_FD_ENV: str(write_end)}
    try:
        child = supervise.start(
            "pipeline.batchrun",
            [],
            name=f"batch {batch_id or batch_dir.name}",
            env=environment,
            stdin=-1,  # subprocess.PIPE
            pass_fds=(write_end,),
            oom_first=True,
        )
    finally:
        os.close(write_end)
    relay = _Relay(os.fdopen(read_end, "rb"), observer)
    reader = threading.Thread(target=relay.run, daemon=True)
    reader.start()
    assert child.process.stdin is not None
    try:
        child.process.stdin.write(json.dumps(job, ensure_ascii=False).encode("utf-8"))
        child.process.stdin.close()
    except BrokenPipeError:
        pass
    try:
        code = child.wait()
    except BaseException:  # Ctrl-C or SIGTERM of the command: the batch stops with it
        child.stop(grace=10)
        raise
    reader.join(timeout=30)
    relay.stream.close()
    return Attempt(number, code, relay.report, relay.error)


def _inherited_environment() -> dict[str, str]:
    """Our environment, plus the Prefect server this process talks to if it has one (a test
    harness or an embedded server sets it in Prefect's settings, not in the environment)."""
    environment = dict(os.environ)
    if "PREFECT_API_URL" not in environment and "prefect" in sys.modules:
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
        if url:
            environment["PREFECT_API_URL"] = str(url)
    return environment


def run_attempts(
    batch_dir: Path,
    settings: Settings,
    observer: BatchObserver,
    *,
    batch_id: str | None = None,
    manifest: dict[str, Any] | None = None,
    first: int = 1,
    env: dict[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_death: Callable[[Attempt], None] | None = None,
) -> dict[str, Any]:
    """Run the batch in child processes until one finishes, at most `watch.max_attempts` in all
    (counting from `first`: earlier processes on the same batch, e.g. under a watcher that was
    itself killed, count too). Returns the report; raises the child's own CaptureError again,
    or BatchDied when every process died."""
    limit = settings.watch.max_attempts
    deaths: list[str] = []
    for number in range(first, limit + 1):
        if on_start is not None:
            on_start(number)
        attempt = run_once(
            batch_dir, settings, observer, batch_id=batch_id, manifest=manifest, number=number, env=env
        )
        if attempt.report is not None:
            return attempt.report
        if attempt.error is not None:
            raise _error_from(attempt.error)
        deaths.append(f"process {number}: {attempt.describe()}")
        if on_death is not None:
            on_death(attempt)
    already = f"{first - 1} earlier, " if first > 1 else ""
    raise BatchDied(
        f"the batch's process died {len(deaths)} time(s) ({already}at most {limit} in all, "
        f"watch.max_attempts): {'; '.join(deaths) or 'no process was started'}"
    )


def record_failure(settings: Settings, batch_id: str, batch_dir: Path, status: str, reason: str) -> Path:
    """A batch whose processes all died: its state row and a report saying so, with the items
    that were finished before (they stay archived)."""
    from datetime import UTC, datetime

    from pipeline.store import open_store

    store = open_store(settings)
    try:
        done = [
            {"archive_code": row.archive_code, "verdict": row.verdict, "pages": row.pages}
            for row in store.items()
            if row.batch_id == batch_id
        ]
        report = {
            "batch_id": batch_id,
            "batch_dir": str(batch_dir),
            "status": status,
            "reason": reason,
            "manifest": None,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "items_finished": done,
        }
        settings.reports_dir.mkdir(parents=True, exist_ok=True)
        path = settings.reports_dir / f"{batch_id}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(tmp, path)
        store.finish_batch(batch_id, status, str(path), {"items": len(done)}, reason)
        store.audit("pipeline", f"batch.{status}", batch_id, {"reason": reason[:1000]})
        return path
    finally:
        store.close()


def _error_from(event: dict[str, Any]) -> CaptureError:
    import pipeline.errors as errors

    cls = getattr(errors, str(event.get("cls", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, CaptureError)):
        cls = CaptureError
    return cls(str(event.get("message", "the batch failed")))


# ---------------------------------------------------------------- the child's side


class _Emitter:
    """The child's observer: every event a JSON line on the pipe to the parent."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            self.stream.write(line)
            self.stream.flush()

    def batch_started(self, batch_id: str, items: int, pages: int) -> None:
        self.send({"e": "batch_started", "batch_id": batch_id, "items": items, "pages": pages})

    def item_started(self, archive_code: str, pages: int) -> None:
        self.send({"e": "item_started", "code": archive_code, "pages": pages})

    def page_done(self, archive_code: str) -> None:
        self.send({"e": "page_done", "code": archive_code})

    def item_done(self, item: ItemOutcome) -> None:
        self.send({"e": "item_done", "item": item.to_dict()})


def main() -> None:
    from pipeline import startup
    from pipeline.progress import set_observer
    from pipeline.tempfiles import use_private_tmp

    events = os.fdopen(int(os.environ[EVENTS_FD_ENV]), "wb")
    emitter = _Emitter(events)
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    try:
        settings = Settings(**job["settings"])
        settings.ensure_dirs()
        use_private_tmp(settings.home_dir)
        if settings.server.mode != "server":  # the engines compile while Prefect is imported
            from pipeline import ocr, process

            ocr.import_engine(settings.ocr)  # imports in this thread: no import lock shared with the loader
            process.engine_pool(settings).load_in_background(settings.ocr.workers)
        from pipeline.flows.batch import run_batch

        startup.settle()  # the imports are done: the pages' own objects are collected as usual
        set_observer(emitter)
        report = run_batch(Path(job["batch_dir"]), settings, job.get("batch_id"), job.get("manifest"))
    except CaptureError as exc:
        emitter.send({"e": "error", "cls": type(exc).__name__, "message": str(exc)})
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug, not a dying process: report it, do not retry it
        import traceback

        traceback.print_exc()
        emitter.send(
            {"e": "error", "cls": "CaptureError", "message": f"internal error: {type(exc).__name__}: {exc}"}
        )
        sys.exit(70)
    emitter.send({"e": "report", "report": report})
    events.close()


def _leave() -> None:
    """Exit once the batch is done and its report sent, without tearing the interpreter down.

    Every file, database row and Prefect API call of the batch is written and closed by then;
    what is left is Prefect's event and log queues, drained here (the run's last events reach
    the server), and the logging handlers, flushed. The teardown this skips freed the OCR
    engines and joined Prefect's threads one by one: 0.8 s of one core after every batch, which
    the command waited for (benchmarks/README.md)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from pipeline.quickexit import exit_at_once

    for service in (EventsWorker, APILogWorker):
        service.drain_all(timeout=30)
    exit_at_once(0)


if __name__ == "__main__":
    main()
    _leave()
