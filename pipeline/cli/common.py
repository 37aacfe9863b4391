"""What every `capture` command shares: the Typer apps, the consoles, settings and the acting user."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

app = typer.Typer(
    help="Archive Capture: scanned batches to validated, searchable PDF/A items.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
catalogue_app = typer.Typer(help="Catalogue (归档目录) commands.", no_args_is_help=True)
app.add_typer(catalogue_app, name="catalogue")
qa_app = typer.Typer(help="QA (质检) queue: list, show and decide cases.", no_args_is_help=True)
app.add_typer(qa_app, name="qa")
user_app = typer.Typer(
    help="Accounts: roles, clearances, passwords, API tokens, sessions.", no_args_is_help=True
)
app.add_typer(user_app, name="user")
audit_app = typer.Typer(help="The audit log: check that no row was changed or removed.", no_args_is_help=True)
app.add_typer(audit_app, name="audit-log")
fixity_app = typer.Typer(
    help="Fixity: recompute every package file's SHA-256 against its manifest and the state store.",
    no_args_is_help=True,
)
app.add_typer(fixity_app, name="fixity")
retention_app = typer.Typer(help="Retention (保管期限): due dates of archived items.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")
disposal_app = typer.Typer(
    help="Appraisal and disposal (鉴定, 销毁): lists, decisions, approval, execution.", no_args_is_help=True
)
app.add_typer(disposal_app, name="disposal")
access_app = typer.Typer(help="Access requests (调阅申请) and time-limited grants.", no_args_is_help=True)
app.add_typer(access_app, name="access")
lookups_app = typer.Typer(
    help="The lookup register (查档登记): every view and download.", no_args_is_help=True
)
app.add_typer(lookups_app, name="lookups")

if TYPE_CHECKING:  # pydantic and Rich: imported when a command loads settings or prints
    from rich.console import Console

    from pipeline.settings import Settings

    console: Console
    err_console: Console


def __getattr__(name: str) -> Any:
    """`console` and `err_console`, made (and Rich imported) when a command first prints:
    `capture search --json` never does."""
    if name not in ("console", "err_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    # Piped output (CI logs, `make run | tee`) gets a readable width instead of Rich's 80 columns.
    made = (
        Console(width=None if sys.stdout.isatty() else 132)
        if name == "console"
        else Console(stderr=True, width=None if sys.stderr.isatty() else 132)
    )
    globals()[name] = made
    return made


def settings() -> Settings:
    """The settings, checked; a ConfigError names the key or file that is wrong."""
    from pipeline.settings import load_settings

    config = load_settings()
    config.protect_home()
    return config


def working_settings() -> Settings:
    """Settings for a command that writes: the home folder made (owner-only), and every temporary
    file of this process and its children kept inside it."""
    from pipeline.settings import load_settings
    from pipeline.tempfiles import use_private_tmp

    config = load_settings()
    config.ensure_dirs()
    use_private_tmp(config.home_dir)
    return config


def acting_user(user: str | None = None) -> str:
    """Who runs the command: --user, else CAPTURE_USER, else the login name."""
    return user or os.environ.get("CAPTURE_USER") or os.environ.get("USER") or "unknown"


BackendOption = Annotated[
    str | None, typer.Option("--backend", help="sqlite or elasticsearch (default: index.backend)")
]
AsUserOption = Annotated[
    str | None,
    typer.Option("--as-user", help="Act as this account: its role, clearance and fonds apply"),
]
