"""Accounts: roles, clearances, fonds, Argon2 password hashes, API tokens and web sessions.

Roles: `searcher` (search and view within their clearance), `qa` (also sees items held for
QA and decides cases), `admin` (everything, including managing users). A token is shown
once when it is made; the state store keeps only its SHA-256. Web sessions live in the state
store too (the cookie holds a random token, the store its SHA-256), so log-out, a password
change, disabling or deleting an account end them at once. Tokens and sessions belong to the
account's immutable id: a name deleted and created again starts with nothing.

Every password check, at log-in or on "my account", goes through one guard: the check is
counted before it runs (atomically, so simultaneous guesses cannot overrun the limit); past
`max_failures` within `lockout_minutes` the account takes no password, not even the right
one, until the window passes or an admin unlocks it.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pipeline.access import ROLES, Principal, operator
from pipeline.accounts import find_account, name_key, principal_of, valid_name
from pipeline.errors import AccessDenied, AccountLocked, ConfigError
from pipeline.security import parse_clearance
from pipeline.store import Store, UserRow, now

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "Lockout",
    "Principal",
    "change_password",
    "check_password",
    "delete_user",
    "end_session",
    "log_in",
    "make_token",
    "operator",
    "principal_of",
    "save_user",
    "session_user",
    "set_disabled",
    "start_session",
    "user_for_token",
    "find_account",
    "name_key",
    "valid_name",
]

TOKEN_PREFIX = "cap_"
MIN_PASSWORD_LENGTH = 8
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Lockout:
    max_failures: int = 5  # 0: no lock-out
    minutes: int = 15


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
    """Create or update an account (an existing password is kept unless a new one is given).

    A new password ends the account's web sessions (they were opened with the old one)."""
    name = valid_name(username)
    lookalike = find_account(store, name)
    if lookalike is not None and lookalike.username != name:
        raise ConfigError(f"user name {name!r} looks like the existing account {lookalike.username!r}")
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
    try:
        rank = parse_clearance(clearance)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if any(not f.strip() for f in fonds or []):
        raise ConfigError("--fonds needs a fonds code (an empty one would mean nothing, not every fonds)")
    if len(display_name) > 200 or any(unicodedata.category(c) in ("Cc", "Cf") for c in display_name):
        raise ConfigError("a display name has at most 200 characters and no control or invisible characters")
    existing = store.user(name)
    row = UserRow(
        username=name,
        display_name=display_name or (existing.display_name if existing else ""),
        role=role,
        clearance=rank,
        fonds=sorted({f.strip() for f in fonds or [] if f.strip()}),
        password_hash=_hasher.hash(password) if password else (existing.password_hash if existing else None),
        disabled=existing.disabled if existing else False,
    )
    if existing is not None:
        row.id, row.created_at = existing.id, existing.created_at
        row.failed_logins, row.failed_since = existing.failed_logins, existing.failed_since
    store.put_user(row)
    saved = store.user(name)
    assert saved is not None
    if password and existing is not None:
        store.end_sessions(saved.id, "password changed")
    return principal_of(saved)


def set_disabled(store: Store, username: str, disabled: bool) -> Principal:
    """Disable (every session ends, tokens and passwords stop working) or enable an account."""
    row = store.set_disabled(username, disabled)
    if row is None:
        raise ConfigError(f"no user {username!r} (see `capture user list`)")
    if disabled:
        store.end_sessions(row.id, "account disabled")
    return principal_of(row)


def delete_user(store: Store, username: str) -> Principal:
    """Remove an account; its tokens and sessions end with it."""
    row = store.delete_user(username)
    if row is None:
        raise ConfigError(f"no user {username!r} (see `capture user list`)")
    return principal_of(row)


def check_password(store: Store, username: str, password: str, lockout: Lockout) -> Principal:
    """The one password check: counted first, refused while locked, audited by the callers."""
    row = store.user(username.strip()[:100])
    if row is None or row.disabled or not row.password_hash:
        _hasher.hash(password)  # same work either way: no timing hint that the user exists
        raise AccessDenied("wrong user name or password")
    since = now() - timedelta(minutes=lockout.minutes)
    if not store.reserve_password_check(row.id, lockout.max_failures, since):
        _hasher.hash(password)  # the same work as a real check
        raise AccountLocked(f"too many failed password checks; try again in {lockout.minutes} minutes")
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError) as exc:
        raise AccessDenied("wrong user name or password") from exc
    store.clear_password_failures(row.id)
    return principal_of(row)


def log_in(store: Store, username: str, password: str, lockout: Lockout, *, via: str) -> Principal:
    """check_password for a log-in; every attempt is audited (success, failure, locked)."""
    name = username.strip()[:100]
    try:
        who = check_password(store, name, password, lockout)
    except AccountLocked:
        store.audit(name, "login.locked", "", {"via": via})
        raise
    except AccessDenied:
        store.audit(name, "login.failed", "", {"via": via})
        raise
    store.audit(who.username, "login", "", {"via": via})
    return who


def change_password(
    store: Store, username: str, current: str, new: str, lockout: Lockout, *, keep_session: str | None = None
) -> None:
    """A user's own password change: the current password (through the same guard), then the new
    one. Every other session of the account ends; `keep_session` (the one asking) stays."""
    try:
        who = check_password(store, username, current, lockout)
    except AccessDenied as exc:
        store.audit(username, "password.refused", username, {"why": str(exc)})
        raise
    if len(new) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    row = store.user(who.username)
    assert row is not None
    row.password_hash = _hasher.hash(new)
    store.put_user(row)
    ended = store.end_sessions(row.id, "password changed", keep=keep_session)
    store.audit(username, "password.changed", username, {"sessions_ended": ended})


# ---------------------------------------------------------------- tokens


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def make_token(store: Store, username: str, label: str = "") -> str:
    row = store.user(username)
    if row is None:
        raise ConfigError(f"no user {username!r}; create it first with `capture user add`")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_token(row, _digest(token), label)
    return token


def user_for_token(store: Store, token: str) -> Principal:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise AccessDenied("the API token is not valid")
    row = store.token_user(_digest(token))
    if row is None:
        raise AccessDenied("the API token is not valid (unknown, revoked, or its user is disabled)")
    return principal_of(row)


# ---------------------------------------------------------------- web sessions


@dataclass(frozen=True)
class WebSession:
    token: str  # what the cookie holds (only its SHA-256 is stored)
    csrf: str


def start_session(store: Store, who: Principal) -> WebSession:
    row = store.user(who.username)
    if row is None or row.id != who.user_id:
        raise AccessDenied("the account changed while logging in; log in again")
    session = WebSession(secrets.token_urlsafe(32), secrets.token_urlsafe(24))
    store.add_session(_digest(session.token), row, session.csrf)
    return session


def session_user(store: Store, token: str, idle_minutes: int) -> tuple[Principal, WebSession] | None:
    """The account behind a session cookie, if the session is open and not idle too long."""
    if not token or len(token) > 200:
        return None
    found = store.live_session(_digest(token), now() - timedelta(minutes=idle_minutes))
    if found is None:
        return None
    row, user = found
    return principal_of(user), WebSession(token, row.csrf)


def session_id(token: str) -> str:
    return _digest(token)


def end_session(store: Store, token: str, reason: str) -> None:
    store.end_session(_digest(token), reason)
