"""`capture user ...`: accounts, API tokens, lock-out, disabling and deleting (admin commands)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from pipeline.cli.common import acting_user, console, settings, user_app
from pipeline.errors import ConfigError
from pipeline.store import Store, open_store

T = TypeVar("T")


@contextmanager
def _store(ensure: bool = False) -> Iterator[Store]:
    config = settings()
    if ensure:
        config.ensure_dirs()
    store = open_store(config)
    try:
        yield store
    finally:
        store.close()


def _account_change(username: str, action: str, change: Callable[[Store], T], **details: object) -> T:
    """Run one change to an account and audit it under the person at the command line."""
    with _store() as store:
        result = change(store)
        store.audit(acting_user(), action, username, dict(details))
        return result


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="searcher, qa, appraiser, archivist or admin")] = "searcher",
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
    """Create or update an account. A new password ends the account's open web sessions."""
    from pipeline.users import save_user

    secret: str | None = None
    if password_stdin:
        secret = sys.stdin.readline().rstrip("\n")
    elif password:
        secret = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with _store(ensure=True) as store:
        who = save_user(
            store, username, role=role, clearance=clearance, fonds=fonds, password=secret, display_name=name
        )
        store.audit(
            acting_user(),
            "user.save",
            who.username,
            {"role": role, "clearance": who.clearance, "fonds": list(who.fonds), "password": bool(secret)},
        )
    console.print(f"saved {who.describe()}", highlight=False, markup=False)


@user_app.command("list")
def user_list() -> None:
    """Accounts with their role, clearance, fonds and state."""
    from pipeline.security import level_name

    with _store() as store:
        rows = store.users()
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
    from pipeline.users import make_token

    token = _account_change(username, "token.create", lambda s: make_token(s, username, label), label=label)
    sys.stdout.write(token + "\n")


def _existing(store: Store, username: str) -> str:
    row = store.user(username)
    if row is None:
        raise ConfigError(f"no user {username!r} (see `capture user list`)")
    return row.id


@user_app.command("unlock")
def user_unlock(username: str) -> None:
    """Let a user locked out by failed password checks (web.max_failed_logins) try again at once."""
    _account_change(username, "user.unlock", lambda s: s.clear_password_failures(_existing(s, username)))
    console.print(f"{username} may log in again", markup=False)


@user_app.command("revoke")
def user_revoke(username: str) -> None:
    """Revoke every API token of a user and end their web sessions (the account stays enabled)."""

    def revoke(store: Store) -> tuple[int, int]:
        user_id = _existing(store, username)
        return store.revoke_tokens(user_id), store.end_sessions(user_id, "tokens revoked")

    tokens, sessions = _account_change(username, "token.revoke", revoke)
    console.print(f"revoked {tokens} tokens of {username}; ended {sessions} web sessions", markup=False)


@user_app.command("disable")
def user_disable(username: str) -> None:
    """Disable an account at once: web sessions end, tokens and passwords stop working."""
    from pipeline.users import set_disabled

    _account_change(username, "user.disable", lambda s: set_disabled(s, username, True))
    console.print(f"{username} is disabled", markup=False)


@user_app.command("enable")
def user_enable(username: str) -> None:
    """Enable a disabled account again (its tokens that were not revoked work again)."""
    from pipeline.users import set_disabled

    _account_change(username, "user.enable", lambda s: set_disabled(s, username, False))
    console.print(f"{username} is enabled", markup=False)


@user_app.command("delete")
def user_delete(username: str) -> None:
    """Delete an account: its tokens and sessions end with it; the name may be given to someone new."""
    from pipeline.users import delete_user

    _account_change(username, "user.delete", lambda s: delete_user(s, username))
    console.print(f"{username} is deleted", markup=False)
