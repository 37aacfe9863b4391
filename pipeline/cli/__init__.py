"""The `capture` command: one entry point, and the one place that turns errors into messages.

Commands raise errors from pipeline.errors; `main` prints `error: <message>` and exits with the
error's code (drawn in pipeline/errors.py). Bad input never shows a traceback; anything else
is a bug, reported in one line that names the log file holding its traceback (exit 70).
"""

from __future__ import annotations

import sys
import traceback
from datetime import UTC, datetime

from rich.text import Text

from pipeline.cli import (  # noqa: F401 - registers
    access,
    audit,
    batch,
    catalogue,
    cluster,
    disposal,
    lifecycle,
    qa,
    search,
    serve,
    users,
)
from pipeline.cli.common import app, err_console
from pipeline.errors import INTERNAL_ERROR_EXIT, CaptureError

__all__ = ["app", "main"]


def _log_internal_error(exc: BaseException) -> str:
    """Write the traceback beside the other logs; the path, or '' when there is nowhere to write."""
    try:
        from pipeline.settings import load_settings

        folder = load_settings().home_dir / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "errors.log"
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"--- {datetime.now(UTC).isoformat()} capture {' '.join(sys.argv[1:])[:500]}\n")
            handle.write("".join(traceback.format_exception(exc)))
        return str(path)
    except Exception:  # noqa: BLE001 - the report of a bug must not raise another
        return ""


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv)
    except CaptureError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("stopped")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in the log
        where = _log_internal_error(exc)
        message = f"{exc.__class__.__name__}: {exc}" + (f" (traceback in {where})" if where else "")
        err_console.print(Text.assemble(("internal error: ", "bold red"), message), highlight=False)
        sys.exit(INTERNAL_ERROR_EXIT)
