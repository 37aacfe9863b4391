"""Web sessions: a signed cookie (itsdangerous) carrying the user name, a CSRF token and the time.

The signature key lives in CAPTURE_HOME (created once, readable by the owner only). A session
ends after `web.session_minutes` without a request (the cookie is re-signed on each one);
the user's account is read again on every request, so a disabled account is out at once.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

COOKIE = "capture_session"
LOGIN_COOKIE = "capture_login"


@dataclass(frozen=True)
class WebSession:
    username: str
    csrf: str


def secret_key(home: Path) -> bytes:
    path = home / "web-secret.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class SessionCodec:
    def __init__(self, key: bytes, max_age_seconds: int) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="capture-session")
        self.max_age = max_age_seconds

    def dump(self, session: WebSession) -> str:
        return self._serializer.dumps({"u": session.username, "c": session.csrf})

    def load(self, cookie: str | None) -> tuple[WebSession | None, bool]:
        """The session, and whether a cookie was there but expired."""
        if not cookie:
            return None, False
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age)
        except SignatureExpired:
            return None, True
        except BadSignature:
            return None, False
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("u"), str)
            or not isinstance(data.get("c"), str)
        ):
            return None, False
        return WebSession(data["u"], data["c"]), False


def new_session(username: str) -> WebSession:
    return WebSession(username, secrets.token_urlsafe(24))
