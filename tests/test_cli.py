"""The `capture` command as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLES

CAPTURE = [sys.executable, "-m", "pipeline.cli"]


def _run(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CAPTURE_HOME": str(home), **env}
    return subprocess.run(CAPTURE + args, capture_output=True, text=True, env=environment, timeout=600)


def test_catalogue_import_reports_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("档号,页数\r\nA-1,2\r\n,3\r\nA-3,x\r\n".encode("gbk"))
    result = _run(["catalogue", "import", str(path)], tmp_path / "home")
    assert result.returncode == 3, result.stderr  # rows were rejected: a script must notice
    assert "1 rows imported, 2 rejected" in result.stdout
    assert "row 3" in result.stderr and "row 4" in result.stderr
    assert "2 rows rejected" in result.stderr and "Traceback" not in result.stderr


def test_run_refuses_a_missing_batch_with_a_clear_message(tmp_path: Path) -> None:
    result = _run(["run", str(tmp_path / "nope")], tmp_path / "home")
    assert result.returncode == 4
    assert "does not exist" in result.stderr


def test_search_does_not_start_prefect(tmp_path: Path) -> None:
    from pipeline.index.base import IndexItem, IndexPage
    from pipeline.index.sqlite import SqliteIndex

    home = tmp_path / "home"
    index = SqliteIndex(home / "index.sqlite")
    index.index_item(IndexItem("A-1", "投保单", {"year": "2012"}, (IndexPage(3, "養老保險待遇核定表"),)))
    index.close()
    code = (
        "import sys; from typer.testing import CliRunner; from pipeline.cli import app;"
        "r = CliRunner().invoke(app, ['search', '养老保险', '--json']);"
        "print(r.output); print('PREFECT', 'prefect' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "CAPTURE_HOME": str(home)},
        timeout=120,
    )
    assert "PREFECT False" in result.stdout, result.stdout + result.stderr
    hits = json.loads(result.stdout.split("PREFECT")[0])["hits"]
    assert hits[0]["archive_code"] == "A-1" and hits[0]["page"] == 3
    assert {"archive_code", "page", "title", "snippet"} <= set(hits[0])
    human = _run(["search", "待遇", "--year", "2012"], home)
    assert "A-1" in human.stdout and "page 3" in human.stdout
    assert "No page matches" in _run(["search", "待遇", "--year", "1999"], home).stdout


def test_settings_come_from_toml_and_environment(tmp_path: Path) -> None:
    from pipeline.settings import Settings

    os.environ.pop("CAPTURE_OCR__ENGINE", None)
    assert Settings().ocr.engine == "rapidocr"
    extra = tmp_path / "office.toml"
    extra.write_text("[verify]\nmin_dpi = 150\n", encoding="utf-8")
    os.environ["CAPTURE_CONFIG"] = str(extra)
    os.environ["CAPTURE_OCR__ENGINE"] = "tesseract"
    try:
        settings = Settings()
        assert settings.ocr.engine == "tesseract" and settings.verify.min_dpi == 150
    finally:
        del os.environ["CAPTURE_CONFIG"], os.environ["CAPTURE_OCR__ENGINE"]
    assert Settings(home=str(tmp_path / "a")).index_path != Settings(home=str(tmp_path / "b")).index_path


@pytest.mark.slow
def test_two_homes_never_touch_each_other(tmp_path: Path) -> None:
    """A whole `capture run` in a fresh process, with its own Prefect database in CAPTURE_HOME."""
    batch = tmp_path / "batch"
    shutil.copytree(SAMPLES / "batch" / "BX01-2014-LP-D6-0003", batch / "BX01-2014-LP-D6-0003")
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    result = _run(["run", str(batch), "--catalogue", str(SAMPLES / "catalogue.csv")], home_a)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 items, 3 pages" in result.stdout
    assert (home_a / "prefect").is_dir() and (home_a / "archive" / "BX01-2014-LP-D6-0003").is_dir()
    assert not home_b.exists()
    found = _run(["search", "理赔申请", "--json"], home_a)
    assert json.loads(found.stdout)["hits"][0]["archive_code"] == "BX01-2014-LP-D6-0003"
    assert _run(["search", "理赔申请"], home_b).returncode == 2


def test_a_run_leaves_its_whole_record_in_prefect(tmp_path: Path) -> None:
    """The batch process leaves without tearing Python down (`batchrun._leave`): the run's last
    task run and its Completed event must still reach the home's Prefect database first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipeline.supervise import EmbeddedPrefect

    code = "BX01-2014-LP-D6-0003"
    batch = tmp_path / "batch"
    shutil.copytree(SAMPLES / "batch" / code, batch / code)
    home = tmp_path / "home"
    result = _run(["run", str(batch), "--catalogue", str(SAMPLES / "catalogue.csv")], home)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(next((home / "reports").glob("*.json")).read_text(encoding="utf-8"))
    # the command's server is gone with it: read its database through a server of our own
    with EmbeddedPrefect(home / "prefect", tmp_path / "server.log") as server:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            with get_client(sync_client=True) as client:
                (run,) = client.read_flow_runs()
                of_run = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                tasks = client.read_task_runs(flow_run_filter=of_run)
                events = client.read_events(
                    EventFilter(
                        event=EventNameFilter(name=["prefect.flow-run.Completed"]),
                        resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
                    ),
                    limit=50,
                ).events
    assert run.name == report["batch_id"]
    assert [str(r.state_type) for r in (run, *tasks)] == ["StateType.COMPLETED"] * 3
    assert sorted(t.name for t in tasks) == [f"finish {code}", f"report {report['batch_id']}"]
    assert [e.event for e in events] == ["prefect.flow-run.Completed"]


def test_the_batch_process_drains_prefects_queues_before_it_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_leave` skips Python's teardown, and with it Prefect's own drain at exit: it must drain
    the event and log queues itself, and flush the logs, before the process ends."""
    import logging

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from pipeline import batchrun

    done: list[str] = []

    def drained(name: str):  # type: ignore[no-untyped-def]
        return classmethod(lambda cls, timeout=None: done.append(f"{name} {timeout}"))

    monkeypatch.setattr(EventsWorker, "drain_all", drained("events"))
    monkeypatch.setattr(APILogWorker, "drain_all", drained("logs"))
    monkeypatch.setattr(logging, "shutdown", lambda: done.append("logging"))

    def leave(code: int) -> None:
        done.append(f"exit {code}")
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", leave)
    with pytest.raises(SystemExit):
        batchrun._leave()
    assert done == ["events 30", "logs 30", "logging", "exit 0"]


def test_ctrl_c_says_stopped_and_exits_130(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Typer turns a KeyboardInterrupt into a silent exit 130; the command line says why it ended."""
    import typer

    import pipeline.cli as cli

    app = typer.Typer()

    @app.command()
    def interrupted() -> None:
        raise KeyboardInterrupt

    @app.command()
    def other() -> None:
        pass

    monkeypatch.setattr(cli, "load_commands", lambda args=None: app)
    with pytest.raises(SystemExit) as stop:
        cli.main(["interrupted"])
    assert stop.value.code == 130
    assert "stopped" in capsys.readouterr().err


def test_the_progress_bar_counts_afresh_when_the_batch_process_starts_again() -> None:
    """A batch process that died mid-batch and its successor: 12 pages, not 20 of 12."""
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    from pipeline.cli.batch import RichObserver
    from pipeline.progress import ItemOutcome

    progress = Progress(console=Console(file=StringIO()))
    observer = RichObserver(progress)
    observer.batch_started("b", 2, 12)
    observer.item_started("A-1", 8)
    for _ in range(8):
        observer.page_done("A-1")
    observer.batch_started("b", 2, 12)  # the first process died; the second starts over
    observer.item_done(ItemOutcome("A-1", "passed", 8, 0, reused=True))
    observer.item_started("A-2", 4)
    for _ in range(4):
        observer.page_done("A-2")
    task = progress.tasks[0]
    assert (task.completed, task.total) == (12, 12) and len(progress.tasks) == 2
