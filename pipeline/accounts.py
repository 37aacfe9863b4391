"""Which account a name means, and the Principal it acts as: for every store and every path.

The ORM store's UserRow (pipeline.store) and the lean search path's Account
(pipeline.statedb) both carry the columns read here, so a name is resolved, a look-alike
matched and an account turned into a Principal by this one code whichever store a process
opened. `pipeline.users` re-exports these; it also holds passwords, tokens and sessions,
whose imports (Argon2, the ORM) a search does not need.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from pipeline.access import Principal
from pipeline.errors import ConfigError

__all__ = ["AccountRows", "find_account", "name_key", "principal_of", "valid_name"]

Row = TypeVar("Row", covariant=True)


class AccountRows(Protocol[Row]):
    """A store that reads accounts: `pipeline.store.Store` and `pipeline.statedb.LeanStore`."""

    def user(self, username: str) -> Row | None: ...

    def users(self) -> Sequence[Row]: ...


def principal_of(row: Any) -> Principal:
    """The Principal an account row (UserRow or Account) acts as."""
    return Principal(row.username, row.role, row.clearance, tuple(row.fonds or ()), row.display_name, row.id)


def valid_name(username: str) -> str:
    """A user name as people will read it: no spaces, no control or invisible characters (a
    zero-width space would make 'qa1\u200b' look like 'qa1' in every record)."""
    name = username.strip()
    if (
        not name
        or len(name) > 100
        or any(
            c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in name
        )
    ):
        raise ConfigError(
            f"user name {username[:100]!r} must be 1-100 characters without spaces or invisible characters"
        )
    return name


def name_key(username: str) -> str:
    """Names that look alike compare alike (width, case: 'ＱＡ1' and 'qa1')."""
    return unicodedata.normalize("NFKC", username).casefold()


def find_account(store: AccountRows[Row], username: str) -> Row | None:
    """The account a name means: the exact name, else one that looks the same."""
    row = store.user(username)
    if row is not None:
        return row
    key = name_key(username)
    return next((r for r in store.users() if name_key(getattr(r, "username", "")) == key), None)
