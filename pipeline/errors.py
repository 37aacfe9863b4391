"""One exception tree for Archive Capture; the CLI maps it to messages and exit codes.

    CaptureError (exit 1)
     ├── ConfigError (exit 2)          settings or a command-line value are wrong
     ├── CatalogueError (exit 3)       a catalogue file cannot be read at all
     ├── BatchError (exit 4)           a batch folder is missing, not a folder, or empty
     │    └── UnsafeNameError          a name from outside would escape its folder
     ├── PageReadError                 one page file cannot be decoded (becomes a finding)
     ├── OcrError                      an OCR engine failed on a page
     │    └── OcrTimeoutError          it ran out of time (transient: retried)
     ├── PackageError                  an item's PDF/A could not be written
     ├── QueryError (exit 2)           a search request is unusable (too long, bad cursor...)
     ├── IndexUnavailable (exit 6)     the search backend is unreachable after retries
     └── AccessDenied (exit 7)         unknown user, wrong token or password, too low a clearance

Bad rows, unreadable pages and PDF/A validation failures inside a batch are not raised
to the user: they become findings on the item, and the batch goes on.
"""

from __future__ import annotations


class CaptureError(Exception):
    exit_code = 1


class ConfigError(CaptureError):
    exit_code = 2


class CatalogueError(CaptureError):
    exit_code = 3


class BatchError(CaptureError):
    exit_code = 4


class UnsafeNameError(BatchError):
    pass


class PageReadError(CaptureError):
    pass


class OcrError(CaptureError):
    pass


class OcrTimeoutError(OcrError):
    """Transient: the flow retries it."""


class PackageError(CaptureError):
    pass


class QueryError(CaptureError):
    """The search request itself is unusable (empty, too long, bad cursor...)."""

    exit_code = 2


class IndexUnavailable(CaptureError):
    """The search backend could not be reached or refused the writes, after retries."""

    exit_code = 6


class AccessDenied(CaptureError):
    exit_code = 7


class AccountLocked(AccessDenied):
    """Too many failed log-ins in a short time; the account takes no password for a while."""
