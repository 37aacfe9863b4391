"""Prefect's API server for the embedded mode: `python -m pipeline.prefect_app --port N
[--no-housekeeping]`.

`create_app` is Prefect's own factory, after which the garbage collector is set back to the
interpreter's thresholds with the start frozen (`pipeline.startup.settle`): the raised
threshold pays off while Prefect's modules are imported, and the server of a `capture watch`
lives for days.

`main` serves it with uvicorn as `uvicorn --factory` would (the same settings: lifespan on,
errors only in the log; the app built first, so that a stop while Prefect is imported ends the
process at once), with one difference, in how it stops (`QuickStop`): a `capture run`
waits for its server to stop after every batch, and uvicorn's own stop took 0.16 s of an idle
server, every time: up to 0.1 s before its loop looked at the signal, then a fixed 0.1 s pause
for open connections to finish, when no connection was open (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn

from pipeline import startup


def create_app(housekeeping: bool = True) -> Any:
    """Prefect's app; without `housekeeping`, its lifespan runs no background worker (below)."""
    import prefect.server.api.server as prefect_server

    if not housekeeping:
        prefect_server.background_worker = _no_background_worker
    app = prefect_server.create_app()
    startup.settle()
    return app


@asynccontextmanager
async def _no_background_worker(*args: Any, **kwargs: Any) -> AsyncIterator[None]:
    """In place of Prefect's `background_worker` (a docket worker on an in-memory Redis) for the
    server of one `capture run`. Its loops woke every 0.1 s: 0.01 CPU second a second, about
    0.7 CPU s of a 40-page run with its start, on cores the pages use (benchmarks/README.md).
    In an ephemeral server it runs three jobs: telemetry (off here), proactive automations
    (none in the embedded mode) and the trimming of events past Prefect's retention, which the
    runs' shared database needs: that one is run here once, beside the server's start
    (`_trim_old_events`). A `capture watch`'s server, which lives for days, keeps the worker."""
    trimming = asyncio.create_task(_trim_old_events())
    try:
        yield
    finally:
        await trimming


async def _trim_old_events() -> None:
    """Prefect's own event vacuum (what its worker would schedule), once, when Prefect's
    settings enable it; a failure is logged, never the server's."""
    from prefect.server.database import provide_database_interface
    from prefect.server.services import db_vacuum
    from prefect.settings.context import get_current_settings

    settings = get_current_settings().server
    if "events" not in settings.services.db_vacuum.enabled_vacuum_types:
        return
    if not settings.services.event_persister.enabled:
        return
    try:
        db = provide_database_interface()
        await db_vacuum.vacuum_events_with_retention_overrides(db=db)
        await db_vacuum.vacuum_old_events(db=db)
    except Exception:  # noqa: BLE001 - housekeeping must not stop the server
        logging.getLogger(__name__).exception("trimming Prefect's old events failed")


class QuickStop(uvicorn.Server):
    """uvicorn's server, stopping as soon as it is told to and without the pause for open
    connections when none is open. With a connection open or a request still running (its
    client gone), uvicorn's own graceful stop runs unchanged (requests in flight finish
    first); Prefect's lifespan ends in both cases, so what its services hold (events, task run
    states) is written before the process exits."""

    _loop: asyncio.AbstractEventLoop | None = None
    _woken: asyncio.Event | None = None

    async def main_loop(self) -> None:
        """uvicorn's loop (a tick every 0.1 s) that a stop signal also wakes at once."""
        self._loop, self._woken = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864_000
            try:
                await asyncio.wait_for(self._woken.wait(), timeout=0.1)
            except TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._woken is not None:
            self._loop.call_soon_threadsafe(self._woken.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.server_state.connections or self.server_state.tasks or self.force_exit:
            await super().shutdown(sockets)
            return
        for server in self.servers:  # no connection to wait for: stop listening, end the lifespan
            server.close()
        for sock in sockets or []:
            sock.close()
        await self.lifespan.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.prefect_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-housekeeping", dest="housekeeping", action="store_false")
    args = parser.parse_args(argv)
    # The app is built (Prefect imported, about 2 s) before uvicorn takes SIGTERM and SIGINT over:
    # uvicorn holds a signal it catches until its start is over, so a command stopped in its
    # first seconds waited for its server's whole start, then its 5 s grace (SIGKILL).
    app = create_app(housekeeping=args.housekeeping)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="error", lifespan="on")
    QuickStop(config).run()


if __name__ == "__main__":
    main()
