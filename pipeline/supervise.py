"""Processes the pipeline starts, and the promise that none of them outlives the command.

Every child is started in its own process group and asks the kernel to kill it when its
parent dies (PR_SET_PDEATHSIG), so a `capture run` or `capture watch` that is killed, even
with SIGKILL, takes its batch process and its Prefect server with it. When a child ends, its
whole process group is killed too (an OCR helper it left behind). Exits are described for
people: "killed by SIGKILL (out of memory?)".
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.errors import CaptureError, PrefectUnavailable

log = logging.getLogger(__name__)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode >= 0:
        return f"exit code {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number == signal.SIGKILL:
        return f"killed by {name} (out of memory, or stopped by someone)"
    if number in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGABRT):
        return f"crashed ({name})"
    return f"killed by {name}"


@dataclass
class Child:
    """A started child process (its own process group, dies with us)."""

    process: subprocess.Popen[Any]
    name: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout: float | None = None) -> int:
        code = self.process.wait(timeout=timeout)
        self.kill_group()
        return code

    def kill_group(self) -> None:
        """Kill whatever is left in the child's process group (helpers it started)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; always reaps, always kills the group."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.kill_group()


def start(
    module: str,
    args: Sequence[str],
    *,
    name: str,
    env: Mapping[str, str] | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    pass_fds: Sequence[int] = (),
    oom_first: bool = False,
) -> Child:
    """Run `python -m module args` as a child that dies with this process, in its own process
    group. `oom_first` makes it the kernel's first choice when memory runs out, so the small
    supervising process survives to report and retry."""
    command = [sys.executable, "-m", "pipeline.orphan_guard", str(os.getpid()), module, *args]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
        command,
        env=dict(env) if env is not None else None,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
        close_fds=True,
    )
    if oom_first:
        try:
            Path(f"/proc/{process.pid}/oom_score_adj").write_text("1000", encoding="ascii")
        except OSError:
            pass
    return Child(process, name)


# ---------------------------------------------------------------- an embedded Prefect server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


STARTING_PID = "CAPTURE_PREFECT_SERVER_PID"
STARTING_LOG = "CAPTURE_PREFECT_SERVER_LOG"


def _running(pid: int) -> bool:
    """Whether process `pid` lives (and is not a zombie waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc here: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def await_prefect(
    environment: Mapping[str, str], seconds: float = 180.0, alive: Callable[[], bool] | None = None
) -> None:
    """Wait until the embedded Prefect server named in `environment` answers; an error naming
    its log at once if it stopped while starting, or after `seconds`. Nothing to wait for when
    the environment names no server of ours (server mode, or Prefect's own temporary server)."""
    import httpx

    url, pid = environment.get("PREFECT_API_URL"), environment.get(STARTING_PID)
    if not url or not pid:
        return
    log_file = environment.get(STARTING_LOG, "its log")
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5) as client:
        while True:
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if not (alive() if alive is not None else _running(int(pid))):
                raise PrefectUnavailable(f"Prefect's server stopped while starting; see {log_file}")
            if time.monotonic() > deadline:
                raise PrefectUnavailable(f"Prefect's server did not start in {seconds:.0f} s; see {log_file}")
            time.sleep(0.1)


class EmbeddedPrefect:
    """Prefect's own API server for one command, as a child that dies with it.

    This is what Prefect's temporary server does (uvicorn with the same settings, the app built
    by Prefect's factory; `pipeline.prefect_app`, which also stops sooner), started by us so that
    the kernel ends it with its parent instead of leaving it behind when the parent is killed.
    Used when no PREFECT_API_URL is set (the embedded mode)."""

    def __init__(
        self,
        prefect_home: Path,
        log_file: Path,
        startup_seconds: float = 180.0,
        *,
        wait: bool = True,
        housekeeping: bool = True,
    ) -> None:
        self.prefect_home = prefect_home
        self.log_file = log_file
        self.startup_seconds = startup_seconds
        self.wait = wait
        self.housekeeping = housekeeping
        self.child: Child | None = None
        self.api_url = ""

    def __enter__(self) -> EmbeddedPrefect:
        """Start the server; with `wait` (the default) return once it answers, else at once (the
        batch process then waits for it with `await_prefect`, after beginning its pages)."""
        port = _free_port()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            # we use no Prefect blocks; registering its ~50 block types cost a CPU second at the
            # first start, while the pages are being read
            "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
        }
        env.pop("PREFECT_API_URL", None)
        args = ["--host", "127.0.0.1", "--port", str(port)]
        if not self.housekeeping:  # a server for one command (pipeline.prefect_app._no_background_worker)
            args.append("--no-housekeeping")
        with self.log_file.open("ab") as output:
            self.child = start(
                "pipeline.prefect_app", args, name="prefect-server", env=env, stdout=output, stderr=output
            )
        self.api_url = f"http://127.0.0.1:{port}/api"
        if self.wait:
            try:
                child = self.child
                await_prefect(self.environment(), self.startup_seconds, lambda: child.process.poll() is None)
            except CaptureError:
                self.child.stop(grace=2)
                raise
        return self

    def environment(self) -> dict[str, str]:
        """What a batch process needs to find this server (and to wait for it while it starts)."""
        assert self.child is not None, "the server is not started"
        return {
            "PREFECT_API_URL": self.api_url,
            STARTING_PID: str(self.child.process.pid),
            STARTING_LOG: str(self.log_file),
        }

    def __exit__(self, *exc: object) -> None:
        if self.child is not None:
            self.child.stop(grace=5)
            self.child = None
