"""One exception tree for Archive Capture; the CLI and the HTTP API each map it in one place.

    exception                       exit  HTTP  meaning
    CaptureError                      1   500   anything else that stopped a command
     ├── ConfigError                  2   500   settings or a command-line value are wrong
     ├── QueryError                   2   400   a search request is unusable (too long, bad cursor...)
     ├── CatalogueError               3    -    a catalogue file cannot be read, or rows were rejected
     ├── BatchError                   4    -    a batch folder is missing, not a folder, or empty
     │    ├── UnsafeNameError         4    -    a name from outside would escape its folder
     │    └── BatchDied               4    -    the process running a batch died, every attempt
     ├── QaError                      5   400   a QA decision cannot be made (no open case, no reason)
     ├── IndexUnavailable             6   503   the search backend is unreachable after retries
     ├── ServiceUnavailable           8   503   a service the pipeline needs is away (retry later)
     │    ├── PrefectUnavailable      8   503   server mode: the Prefect server is unreachable or refuses
     │    ├── StateUnavailable        8   503   the state database cannot be reached
     │    └── BatchBusy               8    -    another process is running the same batch (retry when it ends)
     ├── AccessDenied                 7   401   unknown user, wrong token or password, ended session
     │    ├── AccountLocked           7   429   too many failed password checks; locked for a while
     │    └── Forbidden               7   403   the role does not allow the request at all
     ├── NotFound                     9   404   no such item, or none this user may reach (same answer)
     │    └── PageNotFound            9   404   the item has no such page in its PDF
     ├── AuditChainBroken            10    -    `capture audit-log verify` found a changed or missing row
     ├── FixityFailed                11    -    a package file is damaged, missing or unexpected
     │    ├── RepairRefused          11    -    the copy to repair from is damaged too (nothing changed)
     │    └── BagInvalid             11    -    a handover bag does not validate (a file changed or is gone)
     ├── DisposalError               12   409   a disposal step is not allowed (not approved, two-person rule)
     ├── AccessRequestError          13   400   an access request cannot be made or decided as asked
     ├── PageReadError                -    -    one page file cannot be decoded (becomes a finding)
     │    ├── PageTooLarge            -    -    its header promises more pixels than allowed (a finding)
     │    └── PageTooSmall            -    -    under 3 pt a side at its resolution (a finding)
     ├── PageNotRead                  -    -    not read for a reason outside the file (not cached)
     ├── OcrError                     -    -    an OCR engine failed on a page (a finding)
     │    └── OcrTimeoutError         -    -    it ran out of time (transient: retried)
     └── PackageError                 -    -    an item's PDF/A could not be written (a finding)

Errors marked '-' never reach a person as an exit code: inside a batch they become findings
on their item and the batch goes on. Anything that is not a CaptureError is a bug: the CLI
prints one line naming the log file that holds the traceback (exit 70), the API answers 500.
"""

from __future__ import annotations

INTERNAL_ERROR_EXIT = 70


class CaptureError(Exception):
    exit_code = 1
    http_status = 500


class ConfigError(CaptureError):
    exit_code = 2


class QueryError(CaptureError):
    """The search request itself is unusable (empty, too long, bad cursor...)."""

    exit_code = 2
    http_status = 400


class CatalogueError(CaptureError):
    exit_code = 3


class BatchError(CaptureError):
    exit_code = 4


class UnsafeNameError(BatchError):
    pass


class BatchDied(BatchError):
    """The process running a batch died (killed, out of memory, crashed) on every attempt."""


class QaError(CaptureError):
    exit_code = 5
    http_status = 400


class IndexUnavailable(CaptureError):
    """The search backend could not be reached or refused the writes, after retries."""

    exit_code = 6
    http_status = 503


class ServiceUnavailable(CaptureError):
    """A service the pipeline needs is away for now; the same request may work later."""

    exit_code = 8
    http_status = 503


class PrefectUnavailable(ServiceUnavailable):
    """The Prefect server could not be reached, refused a request, or (embedded) stopped while starting."""


class StateUnavailable(ServiceUnavailable):
    """The state database could not be reached (its settings are right, it is just away)."""


class BatchBusy(ServiceUnavailable):
    """Another process of this home is running the same batch (`pipeline.intake.batch_lock`):
    not the batch's fault, and the same command works once that process has ended."""


class AccessDenied(CaptureError):
    exit_code = 7
    http_status = 401


class AccountLocked(AccessDenied):
    """Too many failed password checks in a short time; the account takes no password for a while."""

    http_status = 429


class Forbidden(AccessDenied):
    """The user's role does not allow the request at all."""

    http_status = 403


class NotFound(CaptureError):
    """No such item, or none this user may reach (deliberately the same answer)."""

    exit_code = 9
    http_status = 404


class PageNotFound(NotFound):
    """The item exists but has no such page (or the page holds no image)."""


class AuditChainBroken(CaptureError):
    exit_code = 10


class FixityFailed(CaptureError):
    """A fixity check, a replication or a repair found a damaged, missing or unexpected file."""

    exit_code = 11


class RepairRefused(FixityFailed):
    """The copy a repair would restore from does not match the manifest or the state store either."""


class BagInvalid(FixityFailed):
    """A BagIt handover bag fails bagit's own validation."""


class DisposalError(CaptureError):
    """A disposal list step is not allowed: not approved, already closed, the two-person rule..."""

    exit_code = 12
    http_status = 409


class AccessRequestError(CaptureError):
    """An access request cannot be made or decided as asked (no purpose, already decided...)."""

    exit_code = 13
    http_status = 400


class PageReadError(CaptureError):
    finding = "unreadable_file"  # the code of the page's finding


class PageTooLarge(PageReadError):
    """The image header promises more pixels than `imaging.max_page_pixels`."""

    finding = "page_too_large"


class PageTooSmall(PageReadError):
    """The page is under 3 points (about 1 mm) on a side at its resolution: no scanned page, and
    no PDF/A page either (PDF/A's page boxes are 3 to 14,400 units a side)."""

    finding = "page_too_small"


class PageNotRead(CaptureError):
    """A page not read for a reason outside its file: its renderer stopped by a signal we did not
    send (the batch being stopped, the out-of-memory killer), or the system failing to read its
    copy (EIO). Nothing is known about the file: the page is not cached as unreadable, and its
    item is not packaged (verify.PROCESSING_FAILED)."""


class OcrError(CaptureError):
    pass


class OcrTimeoutError(OcrError):
    """Transient: the flow retries it."""


class PackageError(CaptureError):
    pass


def all_errors() -> list[type[CaptureError]]:
    """Every class of the tree (the docstring above draws them; a test keeps the two in step)."""
    found: list[type[CaptureError]] = []
    pending: list[type[CaptureError]] = [CaptureError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
