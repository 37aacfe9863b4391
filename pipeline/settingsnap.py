"""The settings a search needs, from a snapshot the full settings loader left, without pydantic.

Loading the settings (pipeline.settings: pydantic-settings over config/default.toml, the
CAPTURE_CONFIG file and CAPTURE_* environment variables) costs a cold `capture search` about
0.1 s, most of it importing pydantic and pydantic-settings. The loader is a pure function of
its inputs, so its answer can be kept: after a full load, `capture search` writes what it needs
of the result (the home folder, the index path and backend, the snippet length, the state
database's URL) to `<home>/settings-snapshot.json`, with the fingerprint of every input the
loader read, and an HMAC under a key of the home folder. A later search uses the snapshot only
when every input is byte for byte the same:

- the text of config/default.toml, and the name and text of the CAPTURE_CONFIG file;
- every environment variable whose name starts with CAPTURE_ (any case), names and values;
- HOME, and the working directory unless CAPTURE_HOME names an absolute folder (a relative
  home folder resolves against it; the CAPTURE_CONFIG file is taken by its resolved path);
- pipeline/settings.py (the models, their defaults and checks) and the installed pydantic,
  pydantic-core and pydantic-settings (their files' size and time);

and only for the SQLite index (Elasticsearch's settings are not kept). Anything else (a changed
input, no snapshot, an unreadable or foreign one, another backend) goes to the full loader,
which also reports any error in the settings exactly as every other command does. A snapshot
is only written from a load that succeeded, so the answer is the one the full loader gives.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.settings import Settings

SNAPSHOT = "settings-snapshot.json"
_PACKAGE = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE.parent  # pipeline.settings.REPO_ROOT (the default home and default.toml)
_VERSION = 1


def protect_home(home: Path) -> None:
    """The home folder readable by its owner only (if it exists and is ours)."""
    try:
        if home.is_dir() and home.stat().st_uid == os.getuid():
            home.chmod(0o700)
    except OSError:
        pass


@dataclass(frozen=True)
class IndexView:
    backend: str
    snippet_chars: int


@dataclass(frozen=True)
class SearchSettings:
    """What `capture search` reads of the settings, as the full loader gave it."""

    home_dir: Path
    index_path: Path
    state_url: str
    index: IndexView

    def protect_home(self) -> None:
        protect_home(self.home_dir)


def _file_bytes(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "-"


def _installed(package: str) -> str:
    try:
        spec = find_spec(package)
    except (ImportError, ValueError):
        return "-"
    if spec is None or not spec.origin:
        return "-"
    folder = Path(spec.origin).parent
    try:
        return ";".join(
            f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(folder.iterdir())
        )
    except OSError:
        return "-"


def fingerprint() -> str:
    """Every input of `pipeline.settings.load_settings`, hashed."""
    named = os.environ.get("CAPTURE_CONFIG", "")
    config = Path(named).expanduser()
    home = os.environ.get("CAPTURE_HOME", "")
    anchored = bool(home.strip()) and Path(home).expanduser().is_absolute()
    inputs = {
        "version": _VERSION,
        "default.toml": _file_bytes(_REPO_ROOT / "config" / "default.toml"),
        "config": [named, str(config.resolve()), _file_bytes(config)] if named.strip() else [named],
        "environment": sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("CAPTURE_")),
        "cwd": "" if anchored else os.getcwd(),
        "HOME": os.environ.get("HOME", ""),
        "settings.py": _file_bytes(_PACKAGE / "settings.py"),
        "pydantic": [_installed(p) for p in ("pydantic", "pydantic_core", "pydantic_settings")],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()


def _home_guess() -> Path | None:
    """Where the snapshot would be: CAPTURE_HOME, else the default home (the snapshot's own
    home must be this folder, or it is not used); None when more than one variable spells
    CAPTURE_HOME (which of them the loader takes is not this module's to guess)."""
    if sum(1 for name in os.environ if name.upper() == "CAPTURE_HOME") > 1:
        return None
    home = os.environ.get("CAPTURE_HOME", "")
    return (Path(home).expanduser() if home.strip() else _REPO_ROOT / "capture-home").resolve()


def _mac(home: Path, body: str) -> str:
    from pipeline.keys import secret

    return hmac.new(secret(home, "settings-snapshot"), body.encode("utf-8"), hashlib.sha256).hexdigest()


def read_snapshot() -> SearchSettings | None:
    """The snapshot's settings if every input is unchanged, else None."""
    home = _home_guess()
    if home is None:
        return None
    path = home / SNAPSHOT
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        body, mac = stored["body"], stored["mac"]
        if not (home / "keys").is_dir() or not hmac.compare_digest(mac, _mac(home, body)):
            return None
        data = json.loads(body)
        if data["fingerprint"] != fingerprint() or Path(data["home_dir"]) != home:
            return None
        if data["index_backend"] != "sqlite":
            return None
        return SearchSettings(
            home_dir=home,
            index_path=Path(data["index_path"]),
            state_url=str(data["state_url"]),
            index=IndexView(backend="sqlite", snippet_chars=int(data["snippet_chars"])),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_snapshot(settings: Settings, at_fingerprint: str) -> None:
    """Keep what a search needs of `settings`, loaded from the inputs `at_fingerprint` names."""
    home = settings.home_dir
    if home != _home_guess() or settings.index.backend != "sqlite" or not home.is_dir():
        return
    body = json.dumps(
        {
            "fingerprint": at_fingerprint,
            "home_dir": str(home),
            "index_path": str(settings.index_path),
            "state_url": settings.state_url,
            "index_backend": settings.index.backend,
            "snippet_chars": settings.index.snippet_chars,
        },
        sort_keys=True,
    )
    path = home / SNAPSHOT
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"body": body, "mac": _mac(home, body)}, handle)
        os.replace(tmp, path)
    except OSError:  # a search does not fail for want of a snapshot
        tmp.unlink(missing_ok=True)


def search_settings(*, full: bool = False) -> SearchSettings | Settings:
    """The settings for `capture search`, checked: the snapshot's when the inputs are unchanged
    (and `full` is not asked for), else the full loader's (ConfigError as for every command)."""
    if not full:
        snapshot = read_snapshot()
        if snapshot is not None:
            snapshot.protect_home()
            return snapshot
    from pipeline.settings import load_settings

    before = fingerprint()
    settings = load_settings()
    settings.protect_home()
    if fingerprint() == before:  # nothing changed while loading
        write_snapshot(settings, before)
    return settings
