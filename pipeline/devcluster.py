"""A throwaway cluster on this machine, to try server mode: `python -m pipeline.devcluster up|down`.

`make cluster` starts, each as its own process group, recorded in <folder>/cluster.json:
a PostgreSQL cluster (databases `prefect` and `capture`), a Prefect server on it (with its UI),
the work pools and deployments (`capture deploy`), a control worker for batch runs, two OCR
workers, osmem-server standing in for Elasticsearch, a server-mode watcher on <folder>/watch,
and the web interface. `make cluster-down` stops every one of them and the database.
The same module starts the cluster the tests use.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = ROOT / "cluster-home"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_http(url: str, seconds: float, process: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process serving it exited ({process.returncode})")
        try:
            if httpx.get(url, timeout=3).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def _group_alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap the leader if it is our child and has ended
    except ChildProcessError:
        pass
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class ThrowawayPostgres:
    """A PostgreSQL cluster for tests and trials: initdb into a fresh folder, listening on
    127.0.0.1 only, trust authentication, fsync off. `stop()` ends it and removes its data."""

    port: int
    data: Path
    pg_ctl: list[str]  # the pg_ctl command for this cluster (as the postgres user when root)

    @classmethod
    def start(cls, max_connections: int = 100) -> ThrowawayPostgres:
        initdb = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not initdb:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        bindir = initdb[-1].parent
        # under /tmp: the postgres user must reach it (a test's own folder is 0700)
        data = Path(tempfile.mkdtemp(prefix="capture-pg-", dir="/tmp"))
        as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(data, "postgres")
            as_postgres = ["runuser", "-u", "postgres", "--"]
        port = _free_port()
        subprocess.run(
            [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
            + ["--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        options = f"-F -p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}"
        pg_ctl = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data)]
        subprocess.run(
            [*pg_ctl, "-o", options, "-w", "-l", str(data / "log.txt"), "start"],
            check=True,
            capture_output=True,
        )
        return cls(port, data, pg_ctl)

    def stop(self) -> None:
        subprocess.run([*self.pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.data, ignore_errors=True)


@dataclass
class DevCluster:
    folder: Path
    ocr_workers: int = 2
    ocr_threads_per_worker: int = 1  # ocr.workers of each chunk run
    chunk_items: int = 2
    heartbeat_seconds: int = 30
    crashed_after_seconds: int = 60
    extra_env: dict[str, str] = field(default_factory=dict)  # more settings for every process
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    # -- the pieces -----------------------------------------------------------------------------

    @property
    def record(self) -> Path:
        return self.folder / "cluster.json"

    @property
    def home(self) -> Path:
        return self.folder / "capture"

    @property
    def watch_dir(self) -> Path:
        return self.folder / "watch"

    def _postgres(self) -> str:
        server = ThrowawayPostgres.start(max_connections=200)
        port, pg_ctl, data = server.port, server.pg_ctl, server.data
        self.processes["postgres"] = {
            "pg_ctl": pg_ctl,
            "data": str(data),
        }
        self.ports["postgres"] = port
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            for name in ("prefect", "capture"):
                conn.execute(f"CREATE DATABASE {name}")
        return f"postgres@127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        """What every capture and Prefect process of the cluster runs with."""
        pg = f"postgres@127.0.0.1:{self.ports['postgres']}"
        api = f"http://127.0.0.1:{self.ports['prefect']}/api"
        return {
            **os.environ,
            "CAPTURE_HOME": str(self.home),
            "CAPTURE_STATE__URL": f"postgresql+psycopg://{pg}/capture",
            "CAPTURE_INDEX__BACKEND": "elasticsearch",
            "CAPTURE_INDEX__ELASTICSEARCH__HOSTS": json.dumps([f"http://127.0.0.1:{self.ports['osmem']}"]),
            "CAPTURE_INDEX__ELASTICSEARCH__PLAIN_JSON": "true",
            "CAPTURE_SERVER__MODE": "server",
            "CAPTURE_SERVER__PREFECT_API_URL": api,
            "CAPTURE_SERVER__CHUNK_ITEMS": str(self.chunk_items),
            "CAPTURE_SERVER__HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
            "CAPTURE_SERVER__CRASHED_AFTER_SECONDS": str(self.crashed_after_seconds),
            "CAPTURE_SERVER__POLL_SECONDS": "1",
            "CAPTURE_WATCH__FOLDER": str(self.watch_dir),
            "CAPTURE_WATCH__POLL_SECONDS": "1",
            "CAPTURE_OCR__WORKERS": str(self.ocr_threads_per_worker),
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(self.folder / "prefect-client"),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(self.heartbeat_seconds),
            "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            **self.extra_env,
        }

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.folder / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(  # noqa: S603 - our own commands
            args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )
        self.processes[name] = {"pid": process.pid, "log": str(log), "args": args}
        self.save()
        return process

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.record.write_text(
            json.dumps({"processes": self.processes, "ports": self.ports}, indent=1), encoding="utf-8"
        )

    # -- up and down ----------------------------------------------------------------------------

    def up(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._postgres()
        self.save()
        self.ports["osmem"] = _free_port()
        self.ports["prefect"] = _free_port()
        self.ports["web"] = _free_port()
        from osmem_server import __file__ as osmem_init

        binary = Path(osmem_init).parent / "bin" / "osmem-server"
        osmem = self.start(
            "osmem-server",
            [str(binary), "-addr", f"127.0.0.1:{self.ports['osmem']}", "-no-stdin-watch", "-no-ja"],
            dict(os.environ),
        )
        pg = f"postgres@127.0.0.1:{self.ports['postgres']}"
        prefect_env = {
            **os.environ,
            "PREFECT_HOME": str(self.folder / "prefect-server"),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{pg}/prefect",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        prefect_env.pop("PREFECT_API_URL", None)
        server = self.start(
            "prefect-server",
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["prefect"]),
            ],
            prefect_env,
        )
        _wait_http(f"http://127.0.0.1:{self.ports['osmem']}/", 30, osmem)
        _wait_http(f"http://127.0.0.1:{self.ports['prefect']}/api/health", 240, server)
        env = self.env()
        self.home.mkdir(parents=True, exist_ok=True)
        self.watch_dir.mkdir(parents=True, exist_ok=True)
        capture = [sys.executable, "-m", "pipeline.cli"]
        done = subprocess.run([*capture, "deploy"], env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"capture deploy failed: {done.stdout}{done.stderr}")
        prefect = [sys.executable, "-m", "prefect", "worker", "start", "--type", "process"]
        self.start(
            "worker-control",
            [*prefect, "--pool", "capture-control", "--name", "control", "--limit", "20"],
            env,
        )
        for n in range(1, self.ocr_workers + 1):
            self.start(
                f"worker-ocr-{n}", [*prefect, "--pool", "capture", "--name", f"ocr-{n}", "--limit", "1"], env
            )
        self.start("watcher", [*capture, "watch"], env)
        self.start("web", [*capture, "serve", "--port", str(self.ports["web"])], env)
        _wait_http(f"http://127.0.0.1:{self.ports['web']}/login", 120)
        self.save()

    def describe(self) -> str:
        return "\n".join(
            [
                f"Prefect UI:       http://127.0.0.1:{self.ports['prefect']}/",
                f"watch folder:     {self.watch_dir}",
                f"web interface:    http://127.0.0.1:{self.ports['web']}/  (accounts: capture user add ...)",
                f"Elasticsearch:    http://127.0.0.1:{self.ports['osmem']} (osmem-server stand-in)",
                f"PostgreSQL:       postgresql://postgres@127.0.0.1:{self.ports['postgres']}/capture",
                f"shared home:      {self.home}",
                f"logs:             {self.folder / 'logs'}",
                f"capture commands against it:  source {self.folder / 'env.sh'}",
            ]
        )

    def write_env_file(self) -> None:
        lines = [
            f"export {k}={json.dumps(v)}"
            for k, v in self.env().items()
            if k.startswith(("CAPTURE_", "PREFECT_")) and k not in os.environ
        ]
        (self.folder / "env.sh").write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> DevCluster:
        cluster = cls(folder)
        if cluster.record.exists():
            data = json.loads(cluster.record.read_text(encoding="utf-8"))
            cluster.processes, cluster.ports = data["processes"], data["ports"]
        return cluster

    def stop(self, name: str, grace: float = 10.0) -> None:
        info = self.processes.get(name, {})
        pid = info.get("pid")
        if not pid:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def down(self, grace: float = 10.0) -> None:
        """Stop everything at once (SIGTERM to every process group, SIGKILL to what is left after
        `grace` seconds), then the database."""
        groups = [info["pid"] for info in self.processes.values() if info.get("pid")]
        for pid in groups:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while groups and time.monotonic() < deadline:
            groups = [pid for pid in groups if _group_alive(pid)]
            time.sleep(0.2)
        for pid in groups:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pg = self.processes.get("postgres", {})
        if pg.get("pg_ctl"):
            subprocess.run([*pg["pg_ctl"], "-m", "immediate", "stop"], capture_output=True)
            shutil.rmtree(pg["data"], ignore_errors=True)
        self.processes, self.ports = {}, {}
        if self.record.exists():
            self.record.unlink()


def main() -> None:
    action = sys.argv[1] if len(sys.argv) > 1 else "up"
    folder = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_FOLDER
    cluster = DevCluster.load(folder)
    if action == "down":
        cluster.down()
        shutil.rmtree(folder, ignore_errors=True)
        print(f"cluster in {folder} stopped and removed")
        return
    if cluster.processes:
        print(f"a cluster is already recorded in {folder}; `make cluster-down` first", file=sys.stderr)
        sys.exit(2)
    try:
        cluster.up()
    except BaseException:
        cluster.down()
        raise
    cluster.write_env_file()
    print(cluster.describe())


if __name__ == "__main__":
    main()
