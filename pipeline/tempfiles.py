"""Temporary files live in CAPTURE_HOME: `<home>/tmp`, private to us, never the system's /tmp.

pytesseract writes its input image and tesseract's output to `tempfile.gettempdir()`; child
processes (tesseract, poppler) use TMPDIR. `use_private_tmp` points both at `<home>/tmp`, a
directory of mode 0700 owned by us, so nothing we write lands in a shared, world-writable folder
where another user could plant links or read page images.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from pipeline.errors import ConfigError

TMP_NAME = "tmp"


def private_tmp(home: Path) -> Path:
    """Create (or check) `<home>/tmp`: a real directory, not a link, owned by us, mode 0700."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    folder = home / TMP_NAME
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:  # ELOOP: a link; ENOTDIR: a file
        raise ConfigError(
            f"{folder} must be a directory of ours, not a link or a file ({exc.strerror}); "
            "remove it and run again"
        ) from exc
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise ConfigError(f"{folder} belongs to another user (uid {st.st_uid}); remove it and run again")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return folder


def use_private_tmp(home: Path) -> Path:
    """Send this process's and its children's temporary files to `<home>/tmp`; return that folder.

    Sets `tempfile.tempdir` (tempfile, and so pytesseract, in this process) and TMPDIR (children,
    and tempfile if its cache is ever reset). Call it once per process, before any OCR.
    """
    folder = private_tmp(home)
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)
    return folder
