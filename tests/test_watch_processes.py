"""`capture watch` as real processes: killed mid-batch and restarted; two watchers on one folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.index.sqlite import SqliteIndex
from pipeline.store import Store
from tests.conftest import import_catalogue, make_settings

pytestmark = pytest.mark.slow


def _setup(tmp_path: Path, samples_module, batches: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    incoming = tmp_path / "share"
    codes = [code for items in batches.values() for code in items]
    for name, items in batches.items():
        for n, code in enumerate(items):
            (incoming / name / code).mkdir(parents=True)
            samples_module.render_page("单据", [f"{code} 号档案的内容"], [], size_mm=(148, 105), seed=n).save(
                incoming / name / code / "0001.png", dpi=(300, 300)
            )
        (incoming / name / "READY").write_text("", encoding="utf-8")
    settings = make_settings(tmp_path / "home", watch={"folder": str(incoming)})
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("档号,页数\r\n" + "".join(f"{c},1\r\n" for c in codes), encoding="utf-8")
    import_catalogue(settings, catalogue)  # creates the state database before the watchers start
    env = {
        **os.environ,
        "CAPTURE_HOME": str(settings.home_dir),
        "CAPTURE_WATCH__FOLDER": str(incoming),
        "CAPTURE_WATCH__POLL_SECONDS": "0.5",
        "CAPTURE_WATCH__STALE_CLAIM_SECONDS": "4",
    }
    return settings, codes, env


def _watcher(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "watch", *extra],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _archived(settings) -> list[str]:  # type: ignore[no-untyped-def]
    if not settings.archive_dir.exists():
        return []
    return sorted(p.name for p in settings.archive_dir.iterdir() if not p.name.startswith("."))


def _exactly_once(settings, codes: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert _archived(settings) == sorted(codes)
    superseded = settings.archive_dir / ".superseded"
    assert not superseded.exists() or not list(superseded.iterdir())
    store = Store(settings.state_url)
    for code in codes:
        assert [p.status for p in store.packages(code)] == ["current"], code
    assert sorted(i.archive_code for i in store.items()) == sorted(codes)
    store.close()
    index = SqliteIndex(settings.index_path)
    assert index.count_pages() == len(codes)
    index.close()


def test_sigkill_mid_batch_then_restart_finishes_exactly_once(tmp_path: Path, samples_module) -> None:  # type: ignore[no-untyped-def]
    codes = [f"K-{n:04d}" for n in range(1, 7)]
    settings, codes, env = _setup(tmp_path, samples_module, {"station-1": codes})
    first = _watcher(env, tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while len(_archived(settings)) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_early = _archived(settings)
    assert 2 <= len(done_early) < len(codes), (tmp_path / "first.log").read_text()
    incoming = Path(env["CAPTURE_WATCH__FOLDER"])
    assert list((incoming / "processing").glob("claim-*/station-1"))  # claimed, not finished
    second = _watcher(env, tmp_path / "second.log", "--until-idle")
    assert second.wait(timeout=400) == 0, (tmp_path / "second.log").read_text()
    log = (tmp_path / "second.log").read_text()
    assert "resuming batch station-1" in log
    assert [p.name for p in (incoming / "done").iterdir()] == ["station-1"]
    _exactly_once(settings, codes)


def test_two_watchers_on_one_folder_process_each_batch_once(tmp_path: Path, samples_module) -> None:  # type: ignore[no-untyped-def]
    batches = {f"drop-{b}": [f"T{b}-{n:04d}" for n in range(1, 3)] for b in range(1, 5)}
    settings, codes, env = _setup(tmp_path, samples_module, batches)
    watchers = [_watcher(env, tmp_path / f"w{n}.log", "--until-idle") for n in (1, 2)]
    for n, process in enumerate(watchers, start=1):
        assert process.wait(timeout=500) == 0, (tmp_path / f"w{n}.log").read_text()
    incoming = Path(env["CAPTURE_WATCH__FOLDER"])
    assert sorted(p.name for p in (incoming / "done").iterdir()) == sorted(batches)
    assert not list((incoming / "quarantine").iterdir())
    claimed = [
        line
        for n in (1, 2)
        for line in (tmp_path / f"w{n}.log").read_text().splitlines()
        if "claimed batch" in line
    ]
    assert len(claimed) == len(batches)
    assert len(list(settings.reports_dir.glob("*.json"))) == len(batches)
    _exactly_once(settings, codes)
