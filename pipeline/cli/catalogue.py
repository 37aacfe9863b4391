"""`capture catalogue import`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from pipeline.cli.common import acting_user, catalogue_app, console, err_console, working_settings
from pipeline.errors import CatalogueError, IndexUnavailable
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.cataloguing import ImportOutcome


def import_file(path: Path, config: Settings) -> ImportOutcome:
    """Import and print what happened."""
    from pipeline.cataloguing import import_catalogue

    outcome = import_catalogue(config, path, user=acting_user())
    console.print(
        f"Catalogue {path.name}: {outcome.written} rows imported, {len(outcome.loaded.problems)} rejected.",
        highlight=False,
        markup=False,
    )
    for problem in outcome.loaded.problems:
        code = f" ({problem.archive_code})" if problem.archive_code else ""
        err_console.print(
            Text.assemble((f"  row {problem.row}{code}: ", "yellow"), problem.reason), highlight=False
        )
    if outcome.refreshed:
        console.print(
            f"Search index updated for {len(outcome.refreshed)} archived items whose entry changed: "
            + ", ".join(outcome.refreshed[:20])
            + (" ..." if len(outcome.refreshed) > 20 else ""),
            highlight=False,
        )
    for code, reason in outcome.not_indexed:
        err_console.print(
            Text.assemble((f"  {code}: the search index could not be updated: ", "red"), reason)
        )
    return outcome


@catalogue_app.command("import")
def catalogue_import(file: Annotated[Path, typer.Argument(help="CSV (UTF-8 or GBK) or XLSX file")]) -> None:
    """Import a catalogue; rejected rows are listed with their row number and reason (exit 3).

    An archived item whose entry changed (security level, fonds, fields shown in search) is
    updated in the search index before the command returns.
    """
    config = working_settings()
    outcome = import_file(file, config)
    if outcome.not_indexed:
        raise IndexUnavailable(
            f"{len(outcome.not_indexed)} archived items changed but the search index could not be updated; "
            "they are marked and `capture reindex --pending` (or the watcher) updates them"
        )
    rejected = len(outcome.loaded.problems)
    if rejected:
        raise CatalogueError(
            f"{file.name}: {rejected} rows rejected (listed above); the other rows were imported"
        )
