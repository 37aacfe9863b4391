"""Who a command acts as, and the service it acts through (the same one the web and API use)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.access import Principal, operator
from pipeline.cli.common import acting_user
from pipeline.errors import AccessDenied

if TYPE_CHECKING:  # the service pulls in the page and packaging stack: imported when used
    from pipeline.service import ArchiveService
    from pipeline.settings import Settings
    from pipeline.settingsnap import SearchSettings
    from pipeline.statedb import Account
    from pipeline.store.schema import UserRow


class PrincipalStore(Protocol):
    """What `principal` and a search need of a state store (`Store` and `LeanStore` have it)."""

    def user(self, username: str) -> UserRow | Account | None: ...

    def users(self) -> Sequence[UserRow | Account]: ...

    def live_grant_codes(self, user_id: str) -> tuple[str, ...]: ...

    def audit(
        self, user: str, action: str, target: str = "", details: dict[str, Any] | None = None
    ) -> None: ...

    def close(self) -> None: ...


def principal(store: PrincipalStore, as_user: str | None, *, strict: bool = True) -> Principal:
    """The account named by --as-user (its role, clearance and fonds), else the operator:
    the person at the server's own command line, an administrator of every level and fonds.
    `store`: the ORM store (`service.store`) or the lean one a search opens; both read the
    account rows, and this decides the same way over either.

    With `strict` False (the QA commands' --user, which names who decides), a name that is
    no account is the operator recorded under that name; a name that is an account always
    brings that account's reach, so no record can claim a person decided beyond it."""
    from pipeline.accounts import find_account, principal_of, valid_name

    name = valid_name(as_user or acting_user())
    row = find_account(store, name)
    if row is None:
        if strict and as_user:
            store.audit(acting_user(), "cli.refused", name, {"why": "no such account"})
            raise AccessDenied(f"no active user {name!r} (see `capture user list`)")
        return operator(name)
    if row.disabled:  # a disabled account never acts, and never falls back to the operator
        store.audit(acting_user(), "cli.refused", name, {"why": "account disabled"})
        raise AccessDenied(f"the account {row.username!r} is disabled")
    return principal_of(row)


@contextmanager
def search_state(settings: Settings | SearchSettings) -> Iterator[PrincipalStore]:
    """The state store for a search: the lean one (no ORM, pipeline.statedb) when the database
    is current, else the full store (which upgrades it, or says why it cannot be opened)."""
    from pipeline.statedb import LeanStore

    store: PrincipalStore | None = LeanStore.open(settings.state_url, home=settings.home_dir)
    if store is None:
        from pipeline.store import open_store

        store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def archive_service(settings: Settings, backend: str | None = None) -> Iterator[ArchiveService]:
    from pipeline.index import open_backend
    from pipeline.service import ArchiveService
    from pipeline.store import open_store

    store = open_store(settings)
    try:
        service = ArchiveService(settings, store, open_backend(settings, backend))
    except BaseException:
        store.close()
        raise
    try:
        yield service
    finally:
        service.close()
