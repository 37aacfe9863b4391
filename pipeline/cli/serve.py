"""`capture serve`: the web interface and the HTTP API."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.common import app, console, working_settings
from pipeline.errors import ConfigError


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: web.host)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default: web.port)")] = None,
) -> None:
    """Serve the web interface for searchers and QA staff, and the HTTP API (OpenAPI at /docs)."""
    import uvicorn

    from pipeline.web.app import create_web_app

    config = working_settings()
    host = host or config.web.host
    port = port or config.web.port
    import socket

    try:  # say so plainly, before the server starts, when the address cannot be used
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} (web.host, web.port): {exc.strerror or exc}"
        ) from exc
    console.print(f"Archive Capture on http://{host}:{port}/ (API: /api, OpenAPI: /docs); Ctrl-C stops it")
    uvicorn.run(create_web_app(config), host=host, port=port, log_level="warning", server_header=False)
