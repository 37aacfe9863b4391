"""Accounts, API tokens, web sessions and the failed-password counter.

Tokens and sessions belong to an account's immutable id, never to its name. The counter of
password checks is raised *before* a password is checked, in one atomic statement, so
simultaneous guesses cannot all slip past the limit.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from pipeline.store.base import StoreBase
from pipeline.store.schema import SessionRow, TokenRow, UserRow, now

TOUCH_SECONDS = 30  # a session's last-seen time is written at most this often


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class AccountStore(StoreBase):
    # ---------------------------------------------------------------- users
    def put_user(self, row: UserRow) -> None:
        with self.session() as session:
            session.merge(row)

    def user(self, username: str) -> UserRow | None:
        with self.session() as session:
            return session.get(UserRow, username)

    def user_by_id(self, user_id: str) -> UserRow | None:
        with self.session() as session:
            return session.scalars(select(UserRow).where(UserRow.id == user_id)).first()

    def users(self) -> list[UserRow]:
        with self.session() as session:
            return list(session.scalars(select(UserRow).order_by(UserRow.username)))

    def set_disabled(self, username: str, disabled: bool) -> UserRow | None:
        with self.session() as session:
            row = session.get(UserRow, username)
            if row is not None:
                row.disabled = disabled
            return row

    def delete_user(self, username: str) -> UserRow | None:
        """Remove the account; its tokens are revoked and its sessions ended in the same step."""
        with self.session() as session:
            row = session.get(UserRow, username)
            if row is None:
                return None
            _end_sessions(session, row.id, "account deleted")
            _revoke_tokens(session, row.id)
            session.delete(row)
            return row

    # ---------------------------------------------------------------- password checks
    def reserve_password_check(self, user_id: str, max_failures: int, since: datetime) -> bool:
        """Count one password check before it runs; False when the account is locked.

        `since` is where the current window would start if the last one has passed; the
        count starts again then. A check that succeeds clears the count afterwards.
        """
        if max_failures <= 0:
            return True
        with self.session() as session:
            session.execute(
                update(UserRow)
                .where(
                    UserRow.id == user_id, or_(UserRow.failed_since.is_(None), UserRow.failed_since < since)
                )
                .values(failed_logins=0, failed_since=now())
            )
            session.execute(
                update(UserRow).where(UserRow.id == user_id).values(failed_logins=UserRow.failed_logins + 1)
            )
            count = session.scalar(select(UserRow.failed_logins).where(UserRow.id == user_id))
        return count is not None and int(count) <= max_failures

    def clear_password_failures(self, user_id: str) -> None:
        with self.session() as session:
            session.execute(
                update(UserRow).where(UserRow.id == user_id).values(failed_logins=0, failed_since=None)
            )

    # ---------------------------------------------------------------- tokens
    def add_token(self, user: UserRow, token_sha256: str, label: str) -> None:
        with self.session() as session:
            session.add(
                TokenRow(username=user.username, user_id=user.id, token_sha256=token_sha256, label=label)
            )

    def token_user(self, token_sha256: str) -> UserRow | None:
        """The enabled account a live token belongs to (and note that it was used)."""
        with self.session() as session:
            token = session.scalars(
                select(TokenRow).where(TokenRow.token_sha256 == token_sha256, TokenRow.revoked_at.is_(None))
            ).first()
            if token is None or token.user_id is None:
                return None
            user = session.scalars(select(UserRow).where(UserRow.id == token.user_id)).first()
            if user is None or user.disabled:
                return None
            token.last_used_at = now()
            return user

    def revoke_tokens(self, user_id: str) -> int:
        with self.session() as session:
            return _revoke_tokens(session, user_id)

    # ---------------------------------------------------------------- web sessions
    def add_session(self, session_id: str, user: UserRow, csrf: str) -> None:
        with self.session() as session:
            session.add(SessionRow(id=session_id, user_id=user.id, username=user.username, csrf=csrf))

    def live_session(self, session_id: str, idle_since: datetime) -> tuple[SessionRow, UserRow] | None:
        """The session and its enabled account, if the session is open and was used since `idle_since`."""
        with self.session() as session:
            row = session.get(SessionRow, session_id)
            if row is None or row.ended_at is not None:
                return None
            if _aware(row.last_seen_at) < idle_since:
                row.ended_at, row.ended_reason = now(), "idle"
                return None
            user = session.scalars(select(UserRow).where(UserRow.id == row.user_id)).first()
            if user is None or user.disabled:
                return None
            if (now() - _aware(row.last_seen_at)).total_seconds() >= TOUCH_SECONDS:
                row.last_seen_at = now()
            return row, user

    def end_session(self, session_id: str, reason: str) -> None:
        with self.session() as session:
            session.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.ended_at.is_(None))
                .values(ended_at=now(), ended_reason=reason)
            )

    def end_sessions(self, user_id: str, reason: str, keep: str | None = None) -> int:
        """End every open session of an account (but `keep`); returns how many ended."""
        with self.session() as session:
            return _end_sessions(session, user_id, reason, keep)

    def forget_sessions_before(self, when: datetime) -> None:
        """Drop session rows that ended (or went idle) before `when`."""
        with self.session() as session:
            session.execute(delete(SessionRow).where(SessionRow.last_seen_at < when))


def _end_sessions(session: Session, user_id: str, reason: str, keep: str | None = None) -> int:
    query = update(SessionRow).where(SessionRow.user_id == user_id, SessionRow.ended_at.is_(None))
    if keep is not None:
        query = query.where(SessionRow.id != keep)
    result = session.execute(query.values(ended_at=now(), ended_reason=reason))
    return int(getattr(result, "rowcount", 0) or 0)


def _revoke_tokens(session: Session, user_id: str) -> int:
    result = session.execute(
        update(TokenRow)
        .where(TokenRow.user_id == user_id, TokenRow.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    return int(getattr(result, "rowcount", 0) or 0)
