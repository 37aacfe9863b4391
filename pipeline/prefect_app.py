"""Prefect's API server app for `capture run`'s embedded server (uvicorn's `--factory`).

Prefect's own factory, after which the garbage collector is set back to the interpreter's
thresholds with the start frozen (`pipeline.startup.settle`): the raised threshold pays off
while Prefect's modules are imported, and the server of a `capture watch` lives for days.
"""

from __future__ import annotations

from typing import Any

from pipeline import startup


def create_app() -> Any:
    from prefect.server.api.server import create_app as prefects

    app = prefects()
    startup.settle()
    return app
