"""The `capture` command: one entry point, and the one place that turns errors into messages."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline.errors import CaptureError
from pipeline.models import ItemResult, PageResult
from pipeline.settings import Settings, load_settings

app = typer.Typer(
    help="Archive Capture: scanned batches to validated, searchable PDF/A items.",
    no_args_is_help=True,
    add_completion=False,
)
catalogue_app = typer.Typer(help="Catalogue (归档目录) commands.", no_args_is_help=True)
app.add_typer(catalogue_app, name="catalogue")
# Piped output (CI logs, `make run | tee`) gets a readable width instead of Rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 132)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 132)


def _fail(exc: CaptureError) -> None:
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(exc.exit_code)


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:  # pydantic's ValidationError names the bad setting
        err_console.print(f"[bold red]error:[/] invalid settings: {exc}")
        raise typer.Exit(2) from exc


# ------------------------------------------------------------------ catalogue


def _import_catalogue(path: Path, settings: Settings) -> None:
    from pipeline.catalog import read_catalogue
    from pipeline.store import Store

    loaded = read_catalogue(path)
    store = Store(settings.state_path)
    try:
        count = store.import_catalogue(loaded.entries, str(path))
    finally:
        store.close()
    console.print(f"Catalogue [bold]{path.name}[/]: {count} rows imported, {len(loaded.problems)} rejected.")
    for problem in loaded.problems:
        code = f" ({problem.archive_code})" if problem.archive_code else ""
        err_console.print(f"  [yellow]row {problem.row}{code}:[/] {problem.reason}")


@catalogue_app.command("import")
def catalogue_import(file: Annotated[Path, typer.Argument(help="CSV (UTF-8 or GBK) or XLSX file")]) -> None:
    """Import a catalogue; bad rows are listed with their row number and reason."""
    settings = _settings()
    settings.ensure_dirs()
    try:
        _import_catalogue(file, settings)
    except CaptureError as exc:
        _fail(exc)


# ------------------------------------------------------------------ run


class RichObserver:
    """Progress bars: one for the batch (pages), one for the item being worked on."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.batch_task = progress.add_task("batch", total=None)
        self.item_tasks: dict[str, Any] = {}

    def batch_started(self, batch_id: str, items: int, pages: int) -> None:
        self.progress.update(self.batch_task, description=f"batch {batch_id} ({items} items)", total=pages)

    def item_started(self, archive_code: str, pages: int) -> None:
        if archive_code not in self.item_tasks:
            self.item_tasks[archive_code] = self.progress.add_task(f"  {archive_code}", total=pages)

    def page_done(self, archive_code: str, page: PageResult) -> None:
        self.progress.advance(self.batch_task)
        if archive_code in self.item_tasks:
            self.progress.advance(self.item_tasks[archive_code])

    def item_done(self, item: ItemResult) -> None:
        task = self.item_tasks.pop(item.archive_code, None)
        if task is not None:
            self.progress.remove_task(task)
        if item.reused:
            self.progress.advance(self.batch_task, item.page_count)
        mark = {"passed": "[green]✓[/]", "needs_qa": "[yellow]QA[/]", "failed": "[red]✗[/]"}[
            str(item.verdict)
        ]
        note = " (already archived, reused)" if item.reused else ""
        self.progress.console.print(
            f"{mark} {item.archive_code}: {item.page_count} pages, {len(item.findings)} findings{note}"
        )


def _prefect_environment(settings: Settings) -> None:
    """Prefect keeps its ephemeral database in CAPTURE_HOME; quiet logs; no telemetry."""
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
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
) -> None:
    """Process a batch folder end to end: clean, OCR, verify, package as PDF/A, index."""
    from pipeline.intake import read_layout

    settings = _settings()
    settings.ensure_dirs()
    try:
        read_layout(batch_dir)  # fail fast, before Prefect starts, on a missing or empty batch
        if catalogue is not None:
            _import_catalogue(catalogue, settings)
    except CaptureError as exc:
        _fail(exc)
    _prefect_environment(settings)
    from pipeline.flows.batch import run_batch
    from pipeline.progress import set_observer

    console.print(
        f"Processing [bold]{batch_dir}[/] (OCR engine: {settings.ocr.engine}, output: {settings.home_dir})"
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        set_observer(RichObserver(progress))
        try:
            report = run_batch(batch_dir, settings)
        except CaptureError as exc:
            _fail(exc)
        finally:
            set_observer(None)
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


# ------------------------------------------------------------------ search


def _marked(snippet: str, spans: list[tuple[int, int]] | list[list[int]]) -> Text:
    text = Text(snippet)
    for start, end in spans:
        text.stylize("bold black on yellow", start, end)
    return text


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words to find, e.g. 养老保险 or a policy number")],
    year: Annotated[str | None, typer.Option(help="Only this year (年度)")] = None,
    stage: Annotated[str | None, typer.Option(help="Only this business stage (业务环节)")] = None,
    archive_code: Annotated[str | None, typer.Option("--archive-code", help="Only this item")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Hits per page")] = 10,
    page: Annotated[int, typer.Option(min=1, help="Result page")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON")] = False,
) -> None:
    """Full-text search over archived pages (embedded index; does not start Prefect)."""
    from pipeline.index import SearchQuery, open_backend

    settings = _settings()
    if not settings.index_path.exists():
        err_console.print(f"[bold red]error:[/] no index at {settings.index_path}; run `capture run` first")
        raise typer.Exit(2)
    backend = open_backend(settings)
    try:
        result = backend.search(
            SearchQuery(
                query,
                year=year,
                stage=stage,
                archive_code=archive_code,
                limit=limit,
                offset=(page - 1) * limit,
            )
        )
    finally:
        backend.close()
    if as_json:
        sys.stdout.write(json.dumps([h.to_dict() for h in result.hits], ensure_ascii=False, indent=2) + "\n")
        return
    if not result.hits:
        console.print(f"No page matches {query!r}.")
        return
    console.print(f"{result.total} pages match {query!r}" + (f" (page {page})" if page > 1 else "") + ":")
    for hit in result.hits:
        console.print(
            Text.assemble((hit.archive_code, "bold cyan"), f"  page {hit.page}  ", (hit.title, "bold"))
        )
        console.print(Text("    ") + _marked(hit.snippet, hit.highlights))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
