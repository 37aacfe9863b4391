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

from pipeline.errors import CaptureError, ConfigError
from pipeline.models import ItemResult, PageResult
from pipeline.settings import Settings, load_settings

app = typer.Typer(
    help="Archive Capture: scanned batches to validated, searchable PDF/A items.",
    no_args_is_help=True,
    add_completion=False,
)
catalogue_app = typer.Typer(help="Catalogue (归档目录) commands.", no_args_is_help=True)
app.add_typer(catalogue_app, name="catalogue")
qa_app = typer.Typer(help="QA (质检) queue: list, show and decide cases.", no_args_is_help=True)
app.add_typer(qa_app, name="qa")
user_app = typer.Typer(help="Accounts: roles, clearances, passwords and API tokens.", no_args_is_help=True)
app.add_typer(user_app, name="user")
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
    store = Store(settings.state_url)
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

    settings = _settings()
    if folder is not None:
        settings = settings.model_copy(
            update={"watch": settings.watch.model_copy(update={"folder": str(folder)})}
        )
    settings.ensure_dirs()
    _prefect_environment(settings, own=f"watch-{socket.gethostname()}-{os.getpid()}")
    from pipeline.flows.watch import watch_folder

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        counts = watch_folder(
            settings, say=lambda m: console.print(m, highlight=False), stop=stop, until_idle=until_idle
        )
    except KeyboardInterrupt:
        stop.set()
        counts = {}
    if counts:
        console.print(
            f"stopped: {counts.get('done', 0)} batches done, {counts.get('quarantined', 0)} quarantined"
        )


# ------------------------------------------------------------------ QA


def _user(user: str | None) -> str:
    return user or os.environ.get("CAPTURE_USER") or os.environ.get("USER") or ""


def _qa_context(settings: Settings):  # type: ignore[no-untyped-def]
    from pipeline.index import open_backend
    from pipeline.store import Store

    return Store(settings.state_url), open_backend(settings)


@qa_app.command("list")
def qa_list(
    status: Annotated[
        str, typer.Option(help="open, approved, rescan, corrected, superseded or all")
    ] = "open",
    batch: Annotated[str | None, typer.Option(help="Only cases from this batch id")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List QA cases (default: the open ones)."""
    from pipeline.store import Store

    settings = _settings()
    store = Store(settings.state_url)
    try:
        cases = store.cases(None if status == "all" else status, batch)
    finally:
        store.close()
    rows = [
        {
            "archive_code": c.archive_code,
            "batch": c.batch_id,
            "status": c.status,
            "opened_at": c.opened_at.isoformat(timespec="seconds"),
            "findings": [f["code"] for f in c.findings],
        }
        for c in cases
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    table = Table(title=f"QA cases ({status})")
    for column in ("archive code", "batch", "status", "opened", "findings"):
        table.add_column(column)
    for r in rows:
        codes = ", ".join(sorted(set(r["findings"])))
        table.add_row(str(r["archive_code"]), str(r["batch"]), str(r["status"]), str(r["opened_at"]), codes)
    console.print(table)
    console.print(f"{len(rows)} cases")


@qa_app.command("show")
def qa_show(archive_code: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The catalogue entry, findings, per-page facts, thumbnails and the PDF of an item."""
    from pipeline.qa import load_record, thumbnails

    settings = _settings()
    store, index = _qa_context(settings)
    try:
        item = store.item(archive_code)
        if item is None:
            _fail(CaptureError(f"{archive_code} has not been processed"))
        record = load_record(settings, archive_code)
        entry = store.catalogue_entry(archive_code)
        thumbs = thumbnails(settings, archive_code, record)
        case = store.open_case(archive_code)
        decisions = store.decisions(archive_code)
        store.audit(_user(None) or "unknown", "qa.view", archive_code)
    except CaptureError as exc:
        _fail(exc)
    finally:
        index.close()
        store.close()
    data = {
        "archive_code": archive_code,
        "qa_status": item.qa_status,
        "visible": item.visible,
        "catalogue": entry.to_dict() if entry else None,
        "pdf": item.pdf_path,
        "findings": case.findings if case else [f for f in record["findings"]],
        "pages": [
            {k: p[k] for k in ("page", "source", "dpi", "rotation", "skew_deg", "blank", "confidence")}
            for p in record["pages"]
        ],
        "thumbnails": [str(t) for t in thumbs.values()],
        "decisions": [
            {"action": d.action, "reason": d.reason, "user": d.user, "at": d.at.isoformat()}
            for d in decisions
        ],
    }
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        return
    console.print(
        f"[bold]{archive_code}[/]  QA: {item.qa_status}  searchable: {'yes' if item.visible else 'no'}"
    )
    if entry:
        console.print(
            "catalogue: " + ", ".join(f"{k}={v}" for k, v in entry.to_dict().items() if v not in ("", None))
        )
    else:
        console.print("[red]not in the catalogue[/]")
    for f in data["findings"]:
        console.print(f"  [yellow]{f['code']}[/]: {f['message']}")
    pages = Table()
    for column in ("page", "source", "dpi", "rotation", "skew", "blank", "confidence", "thumbnail"):
        pages.add_column(column)
    for p in record["pages"]:
        pages.add_row(
            str(p["page"]),
            p["source"],
            str(p["dpi"]),
            str(p["rotation"]),
            str(p["skew_deg"]),
            "yes" if p["blank"] else "",
            "" if p["confidence"] is None else f"{p['confidence']:.3f}",
            str(thumbs.get(p["page"], "")),
        )
    console.print(pages)
    console.print(f"PDF: {item.pdf_path}")
    for d in data["decisions"]:
        console.print(f"decision: {d['action']} by {d['user']} at {d['at']}: {d['reason']}")


def _qa_decision(
    action: str, archive_code: str, reason: str, user: str | None, pages: int | None = None
) -> None:
    from pipeline import qa

    settings = _settings()
    store, index = _qa_context(settings)
    try:
        if action == "approve":
            outcome = qa.approve(store, index, settings, archive_code, reason, _user(user))
        elif action == "rescan":
            outcome = qa.rescan(store, index, settings, archive_code, reason, _user(user))
        else:
            assert pages is not None
            outcome = qa.correct(store, index, settings, archive_code, pages, reason, _user(user))
    except CaptureError as exc:
        _fail(exc)
    finally:
        index.close()
        store.close()
    state = "searchable" if outcome.visible else "held back from search"
    console.print(f"{archive_code}: {action} recorded; case {outcome.case_status}; item {state}.")
    for f in outcome.remaining:
        console.print(f"  still open: [yellow]{f['code']}[/] {f['message']}")


ReasonOption = Annotated[str, typer.Option("--reason", help="Why (required)")]
UserOption = Annotated[str | None, typer.Option("--user", help="Who decides (default: CAPTURE_USER or USER)")]


@qa_app.command("approve")
def qa_approve(archive_code: str, reason: ReasonOption, user: UserOption = None) -> None:
    """Accept the item as it is; it becomes searchable."""
    _qa_decision("approve", archive_code, reason, user)


@qa_app.command("rescan")
def qa_rescan(archive_code: str, reason: ReasonOption, user: UserOption = None) -> None:
    """Send the item back for rescanning; it stays out of search until a rescan supersedes it."""
    _qa_decision("rescan", archive_code, reason, user)


@qa_app.command("correct")
def qa_correct(
    archive_code: str,
    pages: Annotated[int, typer.Option("--pages", help="The right page count (页数)")],
    reason: ReasonOption,
    user: UserOption = None,
) -> None:
    """Correct the catalogue's page count and verify the item again."""
    _qa_decision("correct", archive_code, reason, user, pages)


# ------------------------------------------------------------------ search


def _marked(snippet: str, spans: list[tuple[int, int]] | list[list[int]]) -> Text:
    text = Text(snippet)
    for start, end in spans:
        text.stylize("bold black on yellow", start, end)
    return text


BackendOption = Annotated[
    str | None, typer.Option("--backend", help="sqlite or elasticsearch (default: index.backend)")
]


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words to find, e.g. 养老保险 or a policy number")],
    year: Annotated[str | None, typer.Option(help="Only this year (年度)")] = None,
    stage: Annotated[str | None, typer.Option(help="Only this business stage (业务环节)")] = None,
    retention: Annotated[str | None, typer.Option(help="Only this retention period (保管期限)")] = None,
    box: Annotated[str | None, typer.Option(help="Only this box (盒号)")] = None,
    security_level: Annotated[
        str | None, typer.Option("--security-level", help="Only this level (密级)")
    ] = None,
    archive_code: Annotated[str | None, typer.Option("--archive-code", help="Only this item")] = None,
    backend: BackendOption = None,
    facets: Annotated[bool, typer.Option("--facets", help="Also count hits per year, stage, ...")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Hits per page")] = 10,
    page: Annotated[int, typer.Option(min=1, help="Result page (for deep paging use --cursor)")] = 1,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous result (next_cursor)")] = None,
    as_user: Annotated[
        str | None, typer.Option("--as-user", help="Search with this account's clearance, fonds and role")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Full-text search over archived pages (does not start Prefect). Every search is audited."""
    from pipeline.index import SearchQuery, open_backend
    from pipeline.index.base import given_filters
    from pipeline.store import Store
    from pipeline.users import operator, principal_of

    settings = _settings()
    name = backend or settings.index.backend
    if name == "sqlite" and not settings.index_path.exists():
        err_console.print(f"[bold red]error:[/] no index at {settings.index_path}; run `capture run` first")
        raise typer.Exit(2)
    filters = given_filters(
        year=year,
        stage=stage,
        retention=retention,
        box=box,
        security_level=security_level,
        archive_code=archive_code,
    )
    store = Store(settings.state_url)
    try:
        if as_user:
            row = store.user(as_user)
            if row is None or row.disabled:
                _fail(CaptureError(f"no active user {as_user!r} (see `capture user list`)"))
            who = principal_of(row)  # type: ignore[arg-type]
        else:
            who = operator(_user(None) or "unknown")
        request = SearchQuery(
            query, filters, who.access, limit=limit, offset=(page - 1) * limit, cursor=cursor, facets=facets
        )
        index = open_backend(settings, name)
        try:
            result = index.search(request)
        finally:
            index.close()
        store.audit(
            who.username,
            "search",
            query,
            {
                "filters": filters,
                "hits": result.total,
                "backend": name,
                "via": "cli",
                "offset": request.offset,
            },
        )
    except CaptureError as exc:
        _fail(exc)
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return
    if not result.hits:
        console.print(f"No page matches {query!r}.")
        return
    first = (page - 1) * limit + 1 if not cursor else None
    shown = f" (hits {first}-{first + len(result.hits) - 1})" if first else ""
    console.print(f"{result.total} pages match {query!r}{shown}:")
    for hit in result.hits:
        console.print(
            Text.assemble((hit.archive_code, "bold cyan"), f"  page {hit.page}  ", (hit.title, "bold"))
        )
        console.print(Text("    ") + _marked(hit.snippet, hit.highlights))
    for facet, counts in result.facets.items():
        if counts:
            console.print(f"[dim]{facet}:[/] " + ", ".join(f"{v} ({n})" for v, n in counts))
    if result.next_cursor:
        console.print(f"[dim]more: --page {page + 1}, or --cursor {result.next_cursor}[/]")


# ------------------------------------------------------------------ reindex


@app.command()
def reindex(
    backend: BackendOption = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Only the items whose indexing failed earlier")
    ] = False,
) -> None:
    """Rebuild the search index from the archive folder (searchers switch over in one step)."""
    from pipeline.index import open_backend
    from pipeline.reindex import reindex_all, reindex_pending
    from pipeline.store import Store

    settings = _settings()
    settings.ensure_dirs()
    store = Store(settings.state_url)
    try:
        index = open_backend(settings, backend)
        try:
            with Progress(
                TextColumn("{task.description}"), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            ) as progress:
                task = progress.add_task("re-indexing items", total=None)
                run = reindex_pending if pending else reindex_all
                outcome = run(settings, index, store, tick=lambda _code: progress.advance(task))
        finally:
            index.close()
    except CaptureError as exc:
        _fail(exc)
    finally:
        store.close()
    console.print(f"Re-indexed {outcome.items} items, {outcome.pages} pages ({index.name}).")
    if outcome.caught_up:
        console.print(
            f"Indexed again after the switch, changed while the rebuild ran: {', '.join(outcome.caught_up)}"
        )
    for folder, reason in outcome.skipped:
        err_console.print(f"  [yellow]skipped {folder}:[/] {reason}")
    for code, reason in outcome.still_pending:
        err_console.print(f"  [red]still not indexed {code}:[/] {reason}")
    if outcome.still_pending:
        raise typer.Exit(6)


# ------------------------------------------------------------------ users


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="searcher, qa or admin")] = "searcher",
    clearance: Annotated[str, typer.Option(help="Highest security level (密级) they may see")] = "内部",
    fonds: Annotated[
        list[str] | None, typer.Option("--fonds", help="Restrict to this fonds (repeatable; default all)")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Display name")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    password: Annotated[
        bool, typer.Option("--password/--no-password", help="Ask for a password (web log-in)")
    ] = False,
) -> None:
    """Create or update an account (admin command)."""
    from pipeline.store import Store
    from pipeline.users import save_user

    secret: str | None = None
    if password_stdin:
        secret = sys.stdin.readline().rstrip("\n")
    elif password:
        secret = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    settings = _settings()
    settings.ensure_dirs()
    store = Store(settings.state_url)
    try:
        who = save_user(
            store, username, role=role, clearance=clearance, fonds=fonds, password=secret, display_name=name
        )
        store.audit(
            _user(None) or "unknown", "user.save", who.username, {"role": role, "clearance": who.clearance}
        )
    except CaptureError as exc:
        _fail(exc)
    finally:
        store.close()
    console.print(f"saved {who.describe()}")


@user_app.command("list")
def user_list() -> None:
    """Accounts with their role, clearance and fonds."""
    from pipeline.security import level_name
    from pipeline.store import Store

    settings = _settings()
    store = Store(settings.state_url)
    try:
        rows = store.users()
    finally:
        store.close()
    table = Table(title="users")
    for column in ("user", "name", "role", "clearance", "fonds", "password", "disabled"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.username,
            r.display_name,
            r.role,
            level_name(r.clearance),
            ", ".join(r.fonds) or "all",
            "yes" if r.password_hash else "no",
            "yes" if r.disabled else "",
        )
    console.print(table)


@user_app.command("token")
def user_token(username: str, label: Annotated[str, typer.Option(help="What the token is for")] = "") -> None:
    """Make an API token for a user; it is printed once and only its hash is kept."""
    from pipeline.store import Store
    from pipeline.users import make_token

    settings = _settings()
    store = Store(settings.state_url)
    try:
        token = make_token(store, username, label)
        store.audit(_user(None) or "unknown", "token.create", username, {"label": label})
    except CaptureError as exc:
        _fail(exc)
    finally:
        store.close()
    sys.stdout.write(token + "\n")


@user_app.command("unlock")
def user_unlock(username: str) -> None:
    """Let a user locked out by failed log-ins (web.max_failed_logins) try again at once."""
    from pipeline.store import Store

    settings = _settings()
    store = Store(settings.state_url)
    try:
        if store.user(username) is None:
            _fail(ConfigError(f"no user {username!r}"))
        store.audit(_user(None) or "unknown", "user.unlock", username, {})
    finally:
        store.close()
    console.print(f"{username} may log in again")


@user_app.command("revoke")
def user_revoke(username: str) -> None:
    """Revoke every API token of a user."""
    from pipeline.store import Store

    settings = _settings()
    store = Store(settings.state_url)
    try:
        count = store.revoke_tokens(username)
        store.audit(_user(None) or "unknown", "token.revoke", username, {"count": count})
    finally:
        store.close()
    console.print(f"revoked {count} tokens of {username}")


# ------------------------------------------------------------------ serve


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: web.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: web.port)")] = None,
) -> None:
    """Serve the web interface for searchers and QA staff, and the HTTP API (OpenAPI at /docs)."""
    import uvicorn

    from pipeline.web.app import create_web_app

    settings = _settings()
    settings.ensure_dirs()
    host = host or settings.web.host
    port = port or settings.web.port
    console.print(f"Archive Capture on http://{host}:{port}/ (API: /api, OpenAPI: /docs); Ctrl-C stops it")
    uvicorn.run(create_web_app(settings), host=host, port=port, log_level="warning", server_header=False)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
