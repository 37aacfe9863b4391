"""Local accounts: roles, clearances, fonds, Argon2 password hashes and API tokens.

Roles: `searcher` (search and view within their clearance), `qa` (also sees items held for
QA and decides cases), `admin` (everything, including managing users). A token is shown
once when it is made; the state store keeps only its SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pipeline.errors import AccessDenied, AccountLocked, ConfigError
from pipeline.security import HIGHEST, Access, level_name, parse_clearance
from pipeline.store import Store, UserRow, now

ROLES = ("searcher", "qa", "admin")
TOKEN_PREFIX = "cap_"
MIN_PASSWORD_LENGTH = 8
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    """Who is asking, and what they may reach."""

    username: str
    role: str
    clearance: int
    fonds: tuple[str, ...]
    display_name: str = ""

    @property
    def access(self) -> Access:
        return Access(self.clearance, self.fonds, see_held=self.role in ("qa", "admin"))

    @property
    def is_qa(self) -> bool:
        return self.role in ("qa", "admin")

    def describe(self) -> str:
        where = ", ".join(self.fonds) if self.fonds else "all fonds"
        return f"{self.username} ({self.role}, cleared to {level_name(self.clearance)}, {where})"


def principal_of(row: UserRow) -> Principal:
    return Principal(row.username, row.role, row.clearance, tuple(row.fonds or ()), row.display_name)


def save_user(
    store: Store,
    username: str,
    *,
    role: str,
    clearance: str,
    fonds: list[str] | None = None,
    password: str | None = None,
    display_name: str = "",
) -> Principal:
    """Create or update an account (an existing password is kept unless a new one is given)."""
    name = username.strip()
    if not name or len(name) > 100 or any(c.isspace() or ord(c) < 32 for c in name):
        raise ConfigError(f"user name {username!r} must be 1-100 characters without spaces")
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
    try:
        rank = parse_clearance(clearance)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    existing = store.user(name)
    row = UserRow(
        username=name,
        display_name=display_name or (existing.display_name if existing else ""),
        role=role,
        clearance=rank,
        fonds=sorted({f.strip() for f in fonds or [] if f.strip()}),
        password_hash=_hasher.hash(password) if password else (existing.password_hash if existing else None),
        disabled=False,
    )
    store.put_user(row)
    return principal_of(row)


def check_password(store: Store, username: str, password: str) -> Principal:
    row = store.user(username.strip())
    if row is None or row.disabled or not row.password_hash:
        _hasher.hash(password)  # same work either way: no timing hint that the user exists
        raise AccessDenied("wrong user name or password")
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError) as exc:
        raise AccessDenied("wrong user name or password") from exc
    return principal_of(row)


def log_in(
    store: Store, username: str, password: str, *, max_failures: int, lockout_minutes: int, via: str
) -> Principal:
    """check_password with a lock-out: after `max_failures` failures within `lockout_minutes`
    the account refuses every password until the window has passed or an admin unlocks it
    (`capture user unlock`). Every attempt is audited."""
    name = username.strip()[:100]
    since = now() - timedelta(minutes=lockout_minutes)
    if max_failures and store.failed_logins(name, since) >= max_failures:
        _hasher.hash(password)  # the same work as a real check
        store.audit(name, "login.locked", "", {"via": via})
        raise AccountLocked(f"too many failed log-ins; try again in {lockout_minutes} minutes")
    try:
        who = check_password(store, name, password)
    except AccessDenied:
        store.audit(name, "login.failed", "", {"via": via})
        raise
    store.audit(who.username, "login", "", {"via": via})
    return who


def change_password(store: Store, username: str, current: str, new: str) -> None:
    """A user's own password change: the current password first, then the new one (8+ chars)."""
    who = check_password(store, username, current)
    save_user(
        store, who.username, role=who.role, clearance=str(who.clearance), fonds=list(who.fonds), password=new
    )
    store.audit(username, "password.changed", username, {})


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def make_token(store: Store, username: str, label: str = "") -> str:
    if store.user(username) is None:
        raise ConfigError(f"no user {username!r}; create it first with `capture user add`")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_token(username, _digest(token), label)
    return token


def user_for_token(store: Store, token: str) -> Principal:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise AccessDenied("the API token is not valid")
    row = store.token_user(_digest(token))
    if row is None:
        raise AccessDenied("the API token is not valid (unknown, revoked, or its user is disabled)")
    return principal_of(row)


def operator(name: str) -> Principal:
    """The person at the server's own command line: every level and fonds, no QA-held items."""
    return Principal(name, "operator", HIGHEST, ())
