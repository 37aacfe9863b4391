"""A batch that cannot take the pipeline down: real processes, real signals, real memory.

- a 60000x60000 PNG in a batch with items after it: refused from its header, the rest of the
  batch archived, the whole `capture run` (every process it started) under 4 GB;
- a batch whose process keeps dying (SIGKILL, as the kernel's OOM killer sends): started
  again at most `watch.max_attempts` times, then quarantined with the reason; the watcher lives
  on and takes the next batch;
- `capture run` killed with SIGKILL: nothing it started (batch process, Prefect server) lives on;
- secrets (a secured search cluster's password) reach the batch process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.store import Store
from tests.authproxy import AuthProxy
from tests.conftest import import_catalogue, make_settings
from tests.test_pages_integrity import _bilevel_png

pytestmark = pytest.mark.slow
CAPTURE = [sys.executable, "-m", "pipeline.cli"]
PEAK_RSS = (
    "import resource, subprocess, sys;"
    "code = subprocess.run(sys.argv[1:]).returncode;"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
    "sys.exit(code)"
)


def _item(samples_module, folder: Path, text: str, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    folder.mkdir(parents=True, exist_ok=True)
    samples_module.render_page("业务单", [text], [], size_mm=(148, 105), seed=seed).save(
        folder / "0001.png", dpi=(300, 300)
    )


def _catalogue(path: Path, codes: dict[str, int]) -> Path:
    path.write_text("档号,页数\r\n" + "".join(f"{c},{n}\r\n" for c, n in codes.items()), encoding="utf-8")
    return path


def _processes_with(marker: str) -> list[tuple[int, str]]:
    """Live processes whose environment holds `marker` (e.g. this test's CAPTURE_HOME)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append((int(entry.name), cmdline))
    return found


def test_a_huge_png_is_refused_and_the_rest_of_the_batch_is_archived_under_4_gb(
    tmp_path, samples_module
) -> None:  # type: ignore[no-untyped-def]
    batch = tmp_path / "batch"
    _item(samples_module, batch / "M-0001", "第一件正常页面", 1)
    _bilevel_png(batch / "M-0001" / "0002.png", 60000, 60000)  # a few hundred KB, 3.6 Gpx
    assert (batch / "M-0001" / "0002.png").stat().st_size < 2_000_000
    for n in (2, 3):
        _item(samples_module, batch / f"M-000{n}", f"第{n}件后面的档案", n)
    catalogue = _catalogue(tmp_path / "c.csv", {"M-0001": 2, "M-0002": 1, "M-0003": 1})
    home = tmp_path / "home"
    user_home = tmp_path / "user-home"  # the login's own home: nothing may be written there
    user_home.mkdir()
    env = {**os.environ, "CAPTURE_HOME": str(home), "HOME": str(user_home)}
    run = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *CAPTURE, "run", str(batch), "--catalogue", str(catalogue)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    peak_kb = int(run.stderr.split("PEAK_KB")[1].split()[0])
    assert peak_kb < 4 * 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
    report = json.loads(next((home / "reports").glob("*.json")).read_text(encoding="utf-8"))
    verdicts = {i["archive_code"]: i["verdict"] for i in report["items"]}
    assert verdicts == {"M-0001": "needs_qa", "M-0002": "passed", "M-0003": "passed"}
    first = next(i for i in report["items"] if i["archive_code"] == "M-0001")
    too_large = [f for f in first["findings"] if f["code"] == "page_too_large"]
    assert len(too_large) == 1 and "0002.png" in too_large[0]["message"]
    assert "imaging.max_page_pixels" in too_large[0]["message"]
    assert (batch / "M-0001" / "0002.png").exists()  # the original is never touched
    assert list(user_home.rglob("*")) == [], list(user_home.rglob("*"))  # e.g. no ~/intel telemetry
    print(f"peak RSS of the whole run: {peak_kb / 1024:.0f} MB")


def _watch_env(tmp_path: Path, incoming: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CAPTURE_HOME": str(tmp_path / "home"),
        "CAPTURE_WATCH__FOLDER": str(incoming),
        "CAPTURE_WATCH__POLL_SECONDS": "0.3",
        "CAPTURE_WATCH__MAX_ATTEMPTS": "3",
        "CAPTURE_WATCH__STALE_CLAIM_SECONDS": "60",
    }


def _batch_children(watcher_pid: int) -> list[int]:
    """The batch processes a watcher started (python -m pipeline.orphan_guard ... pipeline.batchrun)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[1]) == watcher_pid and "pipeline.batchrun" in cmdline and stat[0] != "Z":
            pids.append(int(entry.name))
    return pids


def test_a_batch_whose_process_keeps_dying_is_quarantined_and_the_watcher_goes_on(
    tmp_path, samples_module
) -> None:  # type: ignore[no-untyped-def]
    incoming = tmp_path / "share"
    settings = make_settings(tmp_path / "home", watch={"folder": str(incoming)})
    import_catalogue(settings, _catalogue(tmp_path / "c.csv", {"P-0001": 1, "G-0001": 1}))
    _item(samples_module, incoming / "poison" / "P-0001", "每次都被杀掉的批次")
    (incoming / "poison" / "READY").write_text("", encoding="utf-8")
    env = _watch_env(tmp_path, incoming)
    log = tmp_path / "watch.log"
    watcher = subprocess.Popen(
        [*CAPTURE, "watch"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        killed: set[int] = set()
        deadline = time.monotonic() + 300
        while not list((incoming / "quarantine").glob("poison*")) and time.monotonic() < deadline:
            assert watcher.poll() is None, log.read_text()
            for pid in _batch_children(watcher.pid):
                if pid not in killed:  # the "out of memory" killer: the batch process dies each time
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
            time.sleep(0.05)
        quarantined = list((incoming / "quarantine").glob("poison*"))
        assert quarantined, log.read_text()
        assert len(killed) == 3  # started exactly watch.max_attempts times, never again
        reason = (quarantined[0] / "REASON.txt").read_text(encoding="utf-8")
        assert "died 3 time(s)" in reason and "SIGKILL" in reason
        assert (quarantined[0] / "poison" / "P-0001" / "0001.png").exists()  # nothing lost
        # the watcher lives on and takes the next batch
        _item(samples_module, incoming / "good" / "G-0001", "后来的正常批次")
        (incoming / "good" / "READY").write_text("", encoding="utf-8")
        deadline = time.monotonic() + 300
        while not (incoming / "done" / "good").exists() and time.monotonic() < deadline:
            assert watcher.poll() is None, log.read_text()
            time.sleep(0.3)
        assert (incoming / "done" / "good").exists(), log.read_text()
        assert (tmp_path / "home" / "archive" / "G-0001").is_dir()
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        watcher.wait(timeout=60)
    store = Store(settings.state_url)
    try:
        rows = {b.path.split("/")[-1]: b for b in store.batches()}
        poison = next(b for b in store.batches() if b.status == "quarantined")
        assert poison.attempts == 3 and "SIGKILL" in (poison.reason or "")
        report = json.loads(Path(poison.report_path or "").read_text(encoding="utf-8"))
        assert report["status"] == "quarantined" and report["items_finished"] == []
        del rows
    finally:
        store.close()
    time.sleep(1)
    assert _processes_with(str(tmp_path / "home")) == []  # the watcher took everything with it


def _start_run(
    tmp_path: Path, samples_module, prefix: str, **popen: Any
) -> tuple[subprocess.Popen[str], Path]:  # type: ignore[no-untyped-def]
    """`capture run` of a new three-item batch in a new home, in a session of its own; its home."""
    batch = tmp_path / "batch"
    for n in range(1, 4):
        _item(samples_module, batch / f"{prefix}-000{n}", f"第{n}件", n)
    home = tmp_path / f"home-{uuid.uuid4().hex[:6]}"
    run = subprocess.Popen(
        [*CAPTURE, "run", str(batch)],
        env={**os.environ, "CAPTURE_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        **popen,
    )
    return run, home


def test_nothing_capture_run_started_outlives_it(tmp_path, samples_module) -> None:  # type: ignore[no-untyped-def]
    run, home = _start_run(tmp_path, samples_module, "R", stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until the batch process runs beside its Prefect server
        commands = " ".join(cmd for _, cmd in _processes_with(str(home)))
        if "pipeline.batchrun" in commands and "pipeline.prefect_app" in commands:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the batch process did not start: {_processes_with(str(home))}")
    run.send_signal(signal.SIGKILL)  # only the command itself, as the kernel would kill it
    run.wait()
    deadline = time.monotonic() + 30
    while _processes_with(str(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(str(home)) == []


def test_the_search_clusters_password_reaches_the_batch_process(
    tmp_path, samples_module, osmem_clone
) -> None:  # type: ignore[no-untyped-def]
    proxy = AuthProxy(osmem_clone.url, username="capture", password="s3cret: p@ss")
    try:
        batch = tmp_path / "batch"
        _item(samples_module, batch / "S-0001", "加密集群里的档案")
        alias = f"capture-test-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "CAPTURE_HOME": str(tmp_path / "home"),
            "CAPTURE_INDEX__BACKEND": "elasticsearch",
            "CAPTURE_INDEX__ELASTICSEARCH__HOSTS": json.dumps([proxy.url]),
            "CAPTURE_INDEX__ELASTICSEARCH__ALIAS": alias,
            "CAPTURE_INDEX__ELASTICSEARCH__PLAIN_JSON": "true",
            "CAPTURE_INDEX__ELASTICSEARCH__USERNAME": "capture",
            "CAPTURE_INDEX__ELASTICSEARCH__PASSWORD": "s3cret: p@ss",
        }
        catalogue = _catalogue(tmp_path / "c.csv", {"S-0001": 1})
        run = subprocess.run(
            [*CAPTURE, "run", str(batch), "--catalogue", str(catalogue)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(next((tmp_path / "home" / "reports").glob("*.json")).read_text(encoding="utf-8"))
        assert report["not_indexed"] == [] and report["totals"]["not_indexed"] == 0
        found = subprocess.run(
            [*CAPTURE, "search", "加密集群", "--json"], capture_output=True, text=True, env=env, timeout=120
        )
        assert found.returncode == 0, found.stderr
        assert [h["archive_code"] for h in json.loads(found.stdout)["hits"]] == ["S-0001"]
        assert proxy.refused == 0
        wrong = {**env, "CAPTURE_INDEX__ELASTICSEARCH__PASSWORD": "wrong"}
        refused = subprocess.run(
            [*CAPTURE, "search", "加密集群"], capture_output=True, text=True, env=wrong, timeout=120
        )
        assert refused.returncode == 6 and "401" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        proxy.close()


def test_capture_run_names_the_prefect_servers_log_when_it_cannot_start(tmp_path, samples_module) -> None:  # type: ignore[no-untyped-def]
    """`capture run` starts its pages while its Prefect server starts; a server that stops while
    starting ends the command with exit 8 and its log named, and the batch folder untouched."""
    batch = tmp_path / "batch"
    _item(samples_module, batch / "R-0001", "第1件", 1)
    before = sorted((p.relative_to(batch), p.read_bytes()) for p in batch.rglob("*") if p.is_file())
    home = tmp_path / f"home-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "CAPTURE_HOME": str(home),
        # a database the server cannot create: it exits during its start-up
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path}/no-such-folder/prefect.db",
    }
    done = subprocess.run([*CAPTURE, "run", str(batch)], env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 8, done.stdout + done.stderr
    log = home / "logs" / "prefect-server.log"
    said = " ".join((done.stdout + done.stderr).split())  # Rich wraps long lines
    assert f"Prefect's server stopped while starting; see {log}".replace(" ", "") in said.replace(" ", "")
    assert "Traceback" not in done.stdout + done.stderr
    assert sorted((p.relative_to(batch), p.read_bytes()) for p in batch.rglob("*") if p.is_file()) == before
    assert not list((home / "archive").rglob("*.pdf"))


def test_ctrl_c_stops_the_run_says_so_and_leaves_the_batch_stopped_not_processing(  # type: ignore[no-untyped-def]
    tmp_path, samples_module
) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) in the middle of `capture run`: the
    command says "stopped" and exits 130, nothing it started lives on, and the batch's state and
    report say it was stopped (it said "processing" until the next run)."""
    run, home = _start_run(
        tmp_path,
        samples_module,
        "S",
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal starts it
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until the batch's flow has begun: its state says processing
        if (home / "state.sqlite").exists():
            store = Store(make_settings(home).state_url)
            try:
                if any(b.status == "processing" for b in store.batches()):
                    break
            finally:
                store.close()
        time.sleep(0.2)
    else:
        pytest.fail("the batch did not start")
    os.killpg(run.pid, signal.SIGINT)
    _, said = run.communicate(timeout=60)
    assert run.returncode == 130 and "stopped" in said
    deadline = time.monotonic() + 30
    while _processes_with(str(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(str(home)) == []
    store = Store(make_settings(home).state_url)
    try:
        (row,) = store.batches()
        assert row.status == "stopped" and "Ctrl-C" in (row.reason or "")
        assert json.loads(Path(row.report_path or "").read_text(encoding="utf-8"))["status"] == "stopped"
    finally:
        store.close()


def test_prefects_server_stops_at_once_while_it_is_still_starting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A command stopped in its first seconds (Ctrl-C while Prefect's server is importing) stops
    its server at once: uvicorn held the signal until the server's start was over, and the
    command waited for that and then its 5 s grace."""
    from pipeline.supervise import EmbeddedPrefect

    server = EmbeddedPrefect(tmp_path / "prefect", tmp_path / "server.log", wait=False, housekeeping=False)
    server.__enter__()
    assert server.child is not None
    time.sleep(0.8)  # importing Prefect (about 2 s)
    child, began = server.child, time.monotonic()
    server.__exit__(None, None, None)
    assert time.monotonic() - began < 3, "the server waited for its start before stopping"
    assert child.process.returncode is not None
