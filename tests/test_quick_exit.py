"""Processes that end sooner: the embedded Prefect server's stop (`pipeline.prefect_app.QuickStop`)
and the command's exit (`pipeline.cli._leave`), each without losing what the slower way kept."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import _free_port

# A tiny ASGI app served by QuickStop: its lifespan and its requests leave marks in a file.
APP = """
import asyncio, sys
from pathlib import Path
import uvicorn
from pipeline.prefect_app import QuickStop

marks = Path(sys.argv[2])

def mark(word):
    with marks.open("a") as f:
        f.write(word + "\\n")

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                mark("startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.sleep(0.2)  # as Prefect's services write what they hold
                mark("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    mark("request " + scope["path"])
    if scope["path"] == "/slow":
        await asyncio.sleep(1.5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})

graceful = uvicorn.Server.shutdown

async def marked(self, sockets=None):  # uvicorn's own stop, with its pauses, was taken
    mark("graceful")
    await graceful(self, sockets)

uvicorn.Server.shutdown = marked
config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", lifespan="on")
QuickStop(config).run()
"""


def _serve(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    script, marks, port = tmp_path / "app.py", tmp_path / "marks.txt", _free_port()
    script.write_text(APP, encoding="utf-8")
    server = subprocess.Popen([sys.executable, str(script), str(port), str(marks)])
    deadline = time.monotonic() + 60
    while True:  # its lifespan starts before it listens
        assert server.poll() is None, "the server died while starting"
        assert time.monotonic() < deadline, "the server did not start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, port, marks


def _wait_for_mark(marks: Path, word: str) -> None:
    deadline = time.monotonic() + 30
    while word not in marks.read_text():
        assert time.monotonic() < deadline, f"no {word!r} in {marks.read_text()!r}"
        time.sleep(0.02)


def test_the_server_stopped_with_no_connection_open_still_ends_its_lifespan(tmp_path: Path) -> None:
    server, port, marks = _serve(tmp_path)
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read() == b"done"
    time.sleep(0.5)  # the server sees the client's connection closed
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn >= 0.29 ends by the signal sent
    # the quick stop: uvicorn's own (its pauses) not taken, the lifespan ended before the exit
    assert marks.read_text().split("\n") == ["startup", "request /health", "shutdown", ""]


def test_a_request_in_flight_when_the_server_is_stopped_is_answered_first(tmp_path: Path) -> None:
    """With a connection open, uvicorn's own graceful stop runs: the request finishes, then
    the lifespan ends."""
    server, port, marks = _serve(tmp_path)
    answers: list[bytes] = []
    slow = f"http://127.0.0.1:{port}/slow"
    client = threading.Thread(target=lambda: answers.append(urllib.request.urlopen(slow, timeout=30).read()))
    client.start()
    _wait_for_mark(marks, "request /slow")
    server.send_signal(signal.SIGTERM)
    client.join(timeout=30)
    assert answers == [b"done"]
    assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    assert marks.read_text().split("\n") == ["startup", "request /slow", "graceful", "shutdown", ""]


LEAVER = """
import sys, threading, time
from pathlib import Path
from pipeline.cli import _leave

if sys.argv[1] == "thread":  # a thread of ours still at work: Python's own exit waits for it
    def late():
        time.sleep(0.5)
        Path(sys.argv[2]).write_text("written")
    threading.Thread(target=late).start()
    _leave(0)
import atexit
atexit.register(lambda: Path(sys.argv[3]).write_text("torn down"))  # Python's own exit only
print("line\\n" * 20000, end="")  # buffered: a pipe, not a terminal
sys.stderr.write("to stderr\\n")
_leave(int(sys.argv[2]))
"""


def _leaver(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "leaver.py"
    script.write_text(LEAVER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize("code", [0, 3])
def test_the_command_leaving_at_once_flushes_its_output_and_keeps_its_exit_code(
    tmp_path: Path, code: int
) -> None:
    torn = tmp_path / "torn.txt"
    done = _leaver(tmp_path, "print", str(code), str(torn))
    assert done.returncode == code
    assert done.stdout == "line\n" * 20000
    assert done.stderr == "to stderr\n"
    assert not torn.exists()  # it left at once: no atexit handler ran


def test_the_command_does_not_leave_while_a_thread_of_its_own_still_works(tmp_path: Path) -> None:
    target = tmp_path / "late.txt"
    done = _leaver(tmp_path, "thread", str(target))
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "written"


def test_the_server_of_one_command_runs_no_background_worker_but_trims_old_events(tmp_path: Path) -> None:
    """`capture run`'s server (`--no-housekeeping`) answers without Prefect's docket worker:
    none is made while its lifespan runs, Prefect's event vacuum runs once instead, and the
    API answers; the server of a `capture watch` (the default) keeps the worker."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys, time\n"
        "import docket\n"
        "from prefect.server.services import db_vacuum\n"
        "made, trimmed = [], []\n"
        "original = docket.Worker.__init__\n"
        "def counted(self, *args, **kwargs):\n"
        "    made.append(1)\n"
        "    original(self, *args, **kwargs)\n"
        "docket.Worker.__init__ = counted\n"
        "vacuum = db_vacuum.vacuum_old_events\n"
        "async def trim(**kwargs):\n"
        "    trimmed.append(1)\n"
        "    await vacuum(**kwargs)\n"
        "db_vacuum.vacuum_old_events = trim\n"
        "from starlette.testclient import TestClient\n"
        "from pipeline.prefect_app import create_app\n"
        "with TestClient(create_app(housekeeping=sys.argv[1] == 'on')) as client:\n"
        "    healthy = client.get('/api/health').json()\n"
        "    time.sleep(2)  # Prefect's services finish starting (a stop at once races them)\n"
        "    print(healthy, len(made), len(trimmed))\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT__SERVER_EPHEMERAL": "1"}
    env.pop("PREFECT_API_URL", None)
    out = {}
    for housekeeping in ("off", "on"):
        done = subprocess.run(
            [sys.executable, str(script), housekeeping], capture_output=True, text=True, timeout=300, env=env
        )
        assert done.returncode == 0, housekeeping + ": " + done.stderr[-3000:]
        out[housekeeping] = done.stdout.split()
    assert out["off"] == ["True", "0", "1"]
    assert out["on"][:2] == ["True", "1"]  # Prefect's own worker (it trims on its schedule)
