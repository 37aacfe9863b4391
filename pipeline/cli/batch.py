"""`capture run` and `capture watch`: batches through the pipeline, with progress and a summary."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline.cli.catalogue import import_file
from pipeline.cli.common import app, console, working_settings
from pipeline.progress import ItemOutcome
from pipeline.settings import Settings


class RichObserver:
    """Progress bars: one for the batch (pages), one for the item being worked on."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.batch_task = progress.add_task("batch", total=None)
        self.item_tasks: dict[str, Any] = {}

    def batch_started(self, batch_id: str, items: int, pages: int) -> None:
        """Also when a batch's process starts again after one died: counted afresh (what the
        dead one finished comes back as reused items), its items' bars gone with it."""
        for task in self.item_tasks.values():
            self.progress.remove_task(task)
        self.item_tasks.clear()
        self.progress.update(
            self.batch_task, description=f"batch {batch_id} ({items} items)", total=pages, completed=0
        )

    def item_started(self, archive_code: str, pages: int) -> None:
        if archive_code not in self.item_tasks:
            self.item_tasks[archive_code] = self.progress.add_task(f"  {archive_code}", total=pages)

    def page_done(self, archive_code: str) -> None:
        self.progress.advance(self.batch_task)
        if archive_code in self.item_tasks:
            self.progress.advance(self.item_tasks[archive_code])

    def item_done(self, item: ItemOutcome) -> None:
        task = self.item_tasks.pop(item.archive_code, None)
        if task is not None:
            self.progress.remove_task(task)
        if item.reused:
            self.progress.advance(self.batch_task, item.pages)
        mark = {"passed": "[green]✓[/]", "needs_qa": "[yellow]QA[/]", "failed": "[red]✗[/]"}.get(
            item.verdict, item.verdict
        )
        note = " (already archived, reused)" if item.reused else ""
        self.progress.console.print(
            f"{mark} {item.archive_code}: {item.pages} pages, {item.findings} findings{note}", highlight=False
        )


def _submit(batch_dir: Path, batch_id: str, settings: Settings, columns: Any) -> dict[str, Any]:
    """Server mode: the cluster's workers do the batch; show its progress from the state store."""
    from pipeline.cluster import check_server_mode, prefect_environment, run_on_cluster
    from pipeline.errors import ConfigError
    from pipeline.store import open_store

    if settings.server.mode != "server":
        raise ConfigError(
            '--submit needs server mode: set server.mode = "server" (CAPTURE_SERVER__MODE=server)'
        )
    check_server_mode(settings)
    os.environ.update(prefect_environment(settings))
    store = open_store(settings)
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(f"batch {batch_id} on the cluster", total=None)

            def tick(state: Any) -> None:
                row = store.batch(batch_id)
                total = row.items_planned if row is not None and row.items_planned else None
                progress.update(
                    task,
                    total=total,
                    completed=store.items_done(batch_id),
                    description=f"batch {batch_id} ({state.name}, items)",
                )

            return run_on_cluster(
                settings,
                store,
                str(batch_dir),
                batch_id,
                None,
                tick=tick,
                say=lambda m: progress.console.print(m, highlight=False, markup=False),
            )
    finally:
        store.close()


@contextmanager
def prefect_api(
    settings: Settings, own: str = "", *, ready: bool = True, housekeeping: bool = True
) -> Iterator[dict[str, str]]:
    """The environment for batch processes: a Prefect server that dies with this command (the
    embedded mode), or, in server mode, the cluster's. `ready=False` returns while the embedded
    server is still starting: the batch process begins its pages meanwhile and waits for it
    before the flow run (`pipeline.supervise.await_prefect`). `housekeeping=False`: a server
    for one batch, without Prefect's background worker (`pipeline.prefect_app`)."""
    from pipeline.supervise import EmbeddedPrefect

    if settings.server.mode == "server":
        from pipeline.cluster import prefect_environment

        os.environ.update(prefect_environment(settings))
        yield dict(os.environ)
        return
    _prefect_environment(settings, own)
    env = dict(os.environ)
    if env.get("PREFECT_API_URL"):
        yield env
        return
    home = Path(env["PREFECT_HOME"])
    log_file = settings.home_dir / "logs" / "prefect-server.log"
    with EmbeddedPrefect(home, log_file, wait=ready, housekeeping=housekeeping) as server:
        env.update(server.environment())
        yield env


def _prefect_environment(settings: Settings, own: str = "") -> None:
    """Prefect keeps its ephemeral database in CAPTURE_HOME; quiet logs; no telemetry.

    `own` gives a long-lived process its own Prefect database, so two watchers sharing one
    CAPTURE_HOME never contend for it.
    """
    home = settings.prefect_home / own if own else settings.prefect_home
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # its first start creates a database (about 15 s here); Prefect's default wait is 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"Batch {report['batch_id']}", show_lines=False)
    table.add_column("archive code", no_wrap=True)
    table.add_column("title")
    for column in ("pages", "blank", "catalogue"):
        table.add_column(column, justify="right")
    table.add_column("verdict", no_wrap=True)
    table.add_column("findings")
    colours = {"passed": "green", "needs_qa": "yellow", "failed": "red"}
    for item in report["items"]:
        flags = [f["code"] for f in item["findings"] if f["severity"] != "info"]
        table.add_row(
            item["archive_code"],
            item["title"] or "",
            str(item["pages"]),
            str(item["blank_pages"]),
            "" if item["catalogue_pages"] is None else str(item["catalogue_pages"]),
            Text(item["verdict"], style=colours[item["verdict"]]),
            ", ".join(sorted(set(flags))) or "-",
        )
    return table


@app.command()
def run(
    batch_dir: Annotated[
        Path, typer.Argument(help="Batch folder: one subfolder per item, named by archive code")
    ],
    catalogue: Annotated[
        Path | None, typer.Option("--catalogue", "-c", help="Import this catalogue first")
    ] = None,
    submit: Annotated[
        bool,
        typer.Option(
            "--submit", help="Server mode: hand the batch to the cluster's workers and follow its progress"
        ),
    ] = False,
) -> None:
    """Process a batch folder end to end: clean, OCR, verify, package as PDF/A, index."""
    from pipeline.batchrun import record_failure, run_attempts
    from pipeline.errors import BatchDied
    from pipeline.intake import read_layout

    settings = working_settings()
    layout = read_layout(batch_dir)  # fail fast, before Prefect starts, on a missing or empty batch

    def begin() -> None:
        if catalogue is not None:
            import_file(catalogue, settings)
        console.print(
            f"Processing [bold]{batch_dir}[/] (OCR engine: {settings.ocr.engine}, "
            f"output: {settings.home_dir})",
            highlight=False,
        )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())

    def died(attempt: Any) -> None:
        console.print(
            f"[red]the batch's process {attempt.number} ended without finishing: {attempt.describe()}[/]"
            + (" - starting it again; finished work is kept" if attempt.number < limit else ""),
            highlight=False,
        )

    limit = settings.watch.max_attempts
    if submit or settings.server.mode == "server":
        begin()
        report = _submit(batch_dir.resolve(), layout.batch_id, settings, columns)
    else:
        # the server starts while the catalogue imports; it serves this one batch
        with prefect_api(settings, ready=False, housekeeping=False) as env:
            begin()
            with Progress(*columns, console=console, transient=False) as progress:
                try:
                    report = run_attempts(batch_dir, settings, RichObserver(progress), env=env, on_death=died)
                except BatchDied as exc:
                    path = record_failure(settings, layout.batch_id, batch_dir, "failed", str(exc))
                    raise BatchDied(f"{exc}; report: {path}") from None
                except KeyboardInterrupt:  # the batch's process stopped with us: say so in its state
                    record_failure(
                        settings,
                        layout.batch_id,
                        batch_dir,
                        "stopped",
                        "stopped (Ctrl-C) before it finished; run it again to finish it "
                        "(the items finished are kept)",
                    )
                    raise
    console.print(_summary_table(report))
    totals = report["totals"]
    console.print(
        f"{totals['items']} items, {totals['pages']} pages ({totals['blank_pages']} blank), "
        f"{totals['passed']} passed, {totals['needs_qa']} need QA, {totals['failed']} failed, "
        f"{totals['flags']} flags; {totals['seconds']} s ({totals['pages_per_minute']} pages/min)."
    )
    for rejected in report["rejected_folders"]:
        console.print(f"[red]rejected folder[/] {rejected['folder']!r}: {rejected['reason']}")
    for name in report["loose_files"]:
        console.print(f"[yellow]ignored file[/] {name!r}: files belong inside an item folder")
    console.print(f"Archive: {settings.archive_dir}\nReport:  {report['report_path']}")
    if totals["failed"]:
        raise typer.Exit(1)


# ------------------------------------------------------------------ watch


@app.command("watch")
def watch_command(
    folder: Annotated[Path | None, typer.Option(help="Watch folder (default: watch.folder setting)")] = None,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop once nothing is left to wait for")
    ] = False,
) -> None:
    """Poll the watch folder and process every complete batch (runs until stopped)."""
    import signal
    import socket
    import threading

    settings = working_settings()
    if folder is not None:
        settings = settings.model_copy(
            update={"watch": settings.watch.model_copy(update={"folder": str(folder)})}
        )
    from pipeline.flows.watch import watch_folder

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts: dict[str, int] = {}
    try:
        with prefect_api(settings, own=f"watch-{socket.gethostname()}-{os.getpid()}") as env:
            counts = watch_folder(
                settings,
                say=lambda m: console.print(m, highlight=False, markup=False),
                stop=stop,
                until_idle=until_idle,
                env=env,
            )
    except KeyboardInterrupt:
        stop.set()
    if counts:
        console.print(
            f"stopped: {counts.get('done', 0)} batches done, {counts.get('quarantined', 0)} quarantined"
        )
