"""`capture search` and `capture reindex`."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, cast

import typer

from pipeline.cli import common
from pipeline.cli.common import AsUserOption, BackendOption, acting_user, app, working_settings
from pipeline.cli.session import principal, search_state
from pipeline.errors import ConfigError, IndexUnavailable

if TYPE_CHECKING:  # Rich is imported when there is something to print (not for --json)
    from rich.text import Text

    from pipeline.settings import Settings


def _marked(snippet: str, spans: list[tuple[int, int]] | list[list[int]]) -> Text:
    from rich.text import Text

    text = Text(snippet)
    for start, end in spans:
        text.stylize("bold black on yellow", start, end)
    return text


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
    as_user: AsUserOption = None,
    include_held: Annotated[
        bool, typer.Option("--include-held", help="QA staff: include items waiting for a QA decision")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Full-text search over archived pages (does not start Prefect). Every search is audited."""
    from pipeline.index.base import given_filters
    from pipeline.settingsnap import search_settings

    # the settings the full loader gave last time, when none of its inputs changed (no pydantic
    # at start-up); the full loader otherwise, and for any backend but the embedded index
    config = search_settings(full=backend not in (None, "sqlite"))
    name = backend or config.index.backend
    if name == "sqlite" and not config.index_path.exists():
        raise ConfigError(f"no index at {config.index_path}; run `capture run` first")
    filters = given_filters(
        year=year,
        stage=stage,
        retention=retention,
        box=box,
        security_level=security_level,
        archive_code=archive_code,
    )
    from pipeline.index.base import open_backend
    from pipeline.searching import audited_search

    # the state store without the ORM when it is current (pipeline.statedb): the same account
    # decision, grants and audit chain as every other route, at a fraction of the start-up
    with search_state(config) as store:
        index = open_backend(cast("Settings", config), name)  # (a snapshot is SQLite's only)
        try:
            who = principal(store, as_user)
            result = audited_search(
                store,
                index,
                who,
                query,
                filters,
                limit=limit,
                offset=(page - 1) * limit,
                cursor=cursor,
                facets=facets,
                include_held=include_held,
                via="cli",
            )
        finally:
            index.close()
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return
    from rich.text import Text

    console = common.console
    if not result.hits:
        console.print(f"No page matches {query!r}.")
        return
    first = (page - 1) * limit + 1 if not cursor else None
    shown = f" (hits {first}-{first + len(result.hits) - 1})" if first else ""
    console.print(f"{result.total_text} pages match {query!r}{shown}:")
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


@app.command()
def reindex(
    backend: BackendOption = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Only the items whose indexing failed earlier")
    ] = False,
) -> None:
    """Rebuild the search index from the archive folder (searchers switch over in one step)."""
    from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.index import open_backend
    from pipeline.reindex import reindex_all, reindex_pending
    from pipeline.store import open_store

    console, err_console = common.console, common.err_console
    config = working_settings()
    store = open_store(config)
    try:
        index = open_backend(config, backend)
        try:
            with Progress(
                TextColumn("{task.description}"), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            ) as progress:
                task = progress.add_task("re-indexing items", total=None)
                run = reindex_pending if pending else reindex_all
                outcome = run(config, index, store, tick=lambda _code: progress.advance(task))
        finally:
            index.close()
        store.audit(acting_user(), "reindex", index.name, {"items": outcome.items, "pending_only": pending})
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
        raise IndexUnavailable(f"{len(outcome.still_pending)} items are still not indexed (listed above)")
