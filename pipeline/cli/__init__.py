"""The `capture` command: one entry point, and the one place that turns errors into messages.

Commands raise errors from pipeline.errors; `main` prints `error: <message>` and exits with the
error's code (drawn in pipeline/errors.py). Bad input never shows a traceback; anything else
is a bug, reported in one line that names the log file holding its traceback (exit 70).

`main` imports only the module that registers the command it was given (COMMAND_MODULES), so
`capture search` does not pay for the batch, web or lifecycle commands' imports; `capture --help`
and anything unknown load them all, as does `pipeline.cli.app`.
"""

from __future__ import annotations

import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import INTERNAL_ERROR_EXIT, CaptureError

__all__ = ["COMMAND_MODULES", "app", "console_main", "load_commands", "main"]

# Top-level command or group -> the module under pipeline/cli that registers it (and all of it).
COMMAND_MODULES = {
    "run": "batch",
    "watch": "batch",
    "deploy": "cluster",
    "search": "search",
    "reindex": "search",
    "serve": "serve",
    "replicate": "lifecycle",
    "repair": "lifecycle",
    "export": "lifecycle",
    "fixity": "lifecycle",
    "retention": "lifecycle",
    "catalogue": "catalogue",
    "qa": "qa",
    "user": "users",
    "audit-log": "audit",
    "disposal": "disposal",
    "access": "access",
    "lookups": "access",
}


def load_commands(argv: list[str] | None = None) -> Any:
    """The Typer app with the command `argv` names registered (every command when it names none)."""
    wanted = COMMAND_MODULES.get(argv[0]) if argv else None
    for module in sorted(set(COMMAND_MODULES.values())) if wanted is None else [wanted]:
        __import__(f"pipeline.cli.{module}")  # (not importlib: -X importtime sees this one)
    from pipeline.cli.common import app

    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # `from pipeline.cli import app`: the whole command line
        return load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    args = sys.argv[1:] if argv is None else argv
    try:
        load_commands(args)(args=args)
    except CaptureError as exc:
        from rich.text import Text

        from pipeline.cli.common import err_console

        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        from pipeline.cli.common import err_console

        err_console.print("stopped")
        sys.exit(130)
    except SystemExit as stop:
        if stop.code == 130:  # Typer's own answer to Ctrl-C (a KeyboardInterrupt it caught), said aloud
            from pipeline.cli.common import err_console

            err_console.print("stopped")
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in the log
        where = _log_internal_error(exc)
        message = f"{exc.__class__.__name__}: {exc}" + (f" (traceback in {where})" if where else "")
        from rich.text import Text

        from pipeline.cli.common import err_console

        err_console.print(Text.assemble(("internal error: ", "bold red"), message), highlight=False)
        sys.exit(INTERNAL_ERROR_EXIT)


def console_main() -> None:
    """The `capture` command (and `python -m pipeline.cli`): `main`, then the process ends at
    once (`_leave`)."""
    try:
        main()
    except SystemExit as stop:
        _leave(stop.code)
    _leave(0)


def _leave(code: str | int | None) -> None:
    """End the process without tearing the interpreter down, once the command is done and
    nothing is left that the teardown would finish: no thread of ours still running and no
    Prefect client (whose event and log queues are drained at exit). The teardown freed every
    module one by one: about 0.1 s of one core that `capture run` waited for after its summary
    (benchmarks/README.md). Output is flushed and the log handlers closed first."""
    import threading

    from pipeline.quickexit import exit_at_once

    alive = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if isinstance(code, str) or alive or "prefect" in sys.modules:
        sys.exit(code)
    try:
        exit_at_once(code or 0)
    except (OSError, ValueError):  # a reader that went away (`capture search ... | head`)
        sys.exit(code)  # as Python would say it
