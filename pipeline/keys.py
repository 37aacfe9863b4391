"""Secret keys kept in the home folder: `<home>/keys/<name>.key`, readable by the owner only.

They sign what comes back from outside (paging cursors) and key the audit log's hash chain,
so neither can be forged by someone who can read or write the databases but not the keys.
In server mode the home folder is shared, so every machine uses the same keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

KEY_BYTES = 32


def secret(home: Path, name: str) -> bytes:
    """The key called `name`, made on first use (two processes racing make one)."""
    folder = home / "keys"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{name}.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        data = path.read_bytes()
        if len(data) == KEY_BYTES:
            return data
        # a writer that was interrupted, or a damaged key: wait for a whole one, else refuse
        for _ in range(50):
            data = path.read_bytes()
            if len(data) == KEY_BYTES:
                return data
            time.sleep(0.1)
        from pipeline.errors import ConfigError

        raise ConfigError(
            f"{path} is not a key this program made ({len(data)} bytes); remove it to make a new one"
        ) from None
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def fingerprint(key: bytes) -> str:
    """Names a key without revealing it (stored beside what it signed)."""
    return hashlib.sha256(b"fingerprint:" + key).hexdigest()[:16] if key else ""


def sign(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()
