"""Server mode on a real local cluster: PostgreSQL, `prefect server start`, Prefect's own workers
(one control worker, two OCR workers), osmem-server for Elasticsearch, a server-mode watcher.

The cluster is started once for this module (pipeline.devcluster, the same code as
`make cluster`): a batch shared by both workers and identical to the embedded run, a worker
killed (its whole process group and its run, as a power cut would) while it holds a chunk,
a poison batch quarantined while the watcher carries on, `capture deploy` twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.devcluster import DevCluster
from tests.conftest import import_catalogue, make_settings

pytestmark = pytest.mark.slow
CAPTURE = [sys.executable, "-m", "pipeline.cli"]
TEXTS = {
    f"C-{n:04d}": text
    for n, text in enumerate(
        [
            "投保单第一件材料",
            "保全变更申请书",
            "理赔申请与发票",
            "参保登记表格",
            "退保申请材料",
            "年度缴费证明",
        ],
        start=1,
    )
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[DevCluster]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("cluster")
    dev = DevCluster(
        folder,
        ocr_workers=2,
        chunk_items=2,
        heartbeat_seconds=30,
        crashed_after_seconds=45,
        extra_env={"CAPTURE_SERVER__CHUNK_ATTEMPTS": "2", "CAPTURE_WATCH__MAX_ATTEMPTS": "2"},
    )
    try:
        dev.up()
        yield dev
    finally:
        dev.down()


def _env(cluster: DevCluster, **more: str) -> dict[str, str]:
    return {**cluster.env(), **more}


def _capture(cluster: DevCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAPTURE, *args], env=_env(cluster), capture_output=True, text=True, timeout=300)


def _make_batch(root: Path, texts: dict[str, str], samples_module) -> Path:  # type: ignore[no-untyped-def]
    for n, (code, text) in enumerate(texts.items()):
        (root / code).mkdir(parents=True)
        samples_module.render_page("业务单据", [text, f"档号 {code}"], [], size_mm=(148, 105), seed=n).save(
            root / code / "0001.png", dpi=(300, 300)
        )
    return root


def _catalogue(path: Path, codes: list[str]) -> Path:
    path.write_text("档号,页数\r\n" + "".join(f"{c},1\r\n" for c in codes), encoding="utf-8")
    return path


def _drop(cluster: DevCluster, name: str, texts: dict[str, str], samples_module, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Import the catalogue, copy the batch into the watch folder, mark it ready."""
    done = _capture(cluster, "catalogue", "import", str(_catalogue(tmp_path / f"{name}.csv", list(texts))))
    assert done.returncode == 0, done.stderr
    staging = _make_batch(tmp_path / name, texts, samples_module)
    target = cluster.watch_dir / name
    shutil.copytree(staging, target)
    (target / "READY").write_text("", encoding="utf-8")
    return target


def _wait_for(path: Path, cluster: DevCluster, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                for p in (cluster.folder / "logs").glob("*.log")
            )
            pytest.fail(f"{path} did not appear in {seconds:.0f} s\n{logs}")
        time.sleep(1)


def _report(cluster: DevCluster, batch_name: str) -> dict[str, Any]:
    for path in (cluster.home / "reports").glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if Path(data.get("batch_dir", "")).name == batch_name and "totals" in data:
            return data
    raise AssertionError(f"no report for {batch_name}")


def _page_texts(home: Path, codes: list[str]) -> dict[str, list[str]]:
    texts = {}
    for code in codes:
        record = json.loads((home / "archive" / code / "record.json").read_text(encoding="utf-8"))
        texts[code] = ["\n".join(line["text"] for line in page["lines"]) for page in record["pages"]]
    return texts


def test_deploy_twice_changes_nothing(cluster) -> None:  # type: ignore[no-untyped-def]
    again = _capture(cluster, "deploy")
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout


def test_server_mode_refuses_sqlite_state_or_index(cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = _env(cluster, CAPTURE_INDEX__BACKEND="sqlite", CAPTURE_HOME=str(tmp_path / "h"))
    refused = subprocess.run([*CAPTURE, "deploy"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "SQLite" in refused.stderr and "index.backend" in refused.stderr


def test_a_batch_is_shared_by_both_workers_and_matches_the_embedded_run(
    cluster, samples_module, tmp_path, prefect_harness
) -> None:  # type: ignore[no-untyped-def]
    from pipeline.flows.batch import run_batch

    _drop(cluster, "shared", TEXTS, samples_module, tmp_path)
    _wait_for(cluster.watch_dir / "done" / "shared", cluster, 420)
    report = _report(cluster, "shared")
    assert report["totals"]["items"] == 6 and report["totals"]["failed"] == 0
    assert len(set(report["workers"].values())) == 2, report["workers"]  # both OCR workers took chunks
    # the same batch, embedded, in a home of its own
    home = tmp_path / "embedded"
    settings = make_settings(home)
    import_catalogue(settings, _catalogue(tmp_path / "embedded.csv", list(TEXTS)))
    embedded = run_batch(_make_batch(tmp_path / "again", TEXTS, samples_module), settings)
    assert {i["archive_code"]: i["verdict"] for i in embedded["items"]} == {
        i["archive_code"]: i["verdict"] for i in report["items"]
    }
    assert _page_texts(cluster.home, list(TEXTS)) == _page_texts(home, list(TEXTS))
    found = _capture(cluster, "search", "申请", "--json", "--limit", "50")
    cluster_hits = sorted((h["archive_code"], h["page"]) for h in json.loads(found.stdout)["hits"])
    from pipeline.access import operator
    from pipeline.service import ArchiveService

    service = ArchiveService(settings)
    try:
        local = service.search(operator("t"), "申请", {}, limit=50, via="test")
    finally:
        service.close()
    assert cluster_hits == sorted((h.archive_code, h.page) for h in local.hits) and cluster_hits


def _flow_run_processes(run_id: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _chunk_runs(cluster: DevCluster, batch_tag: str, state: str | None = None) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: cluster.env()["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[batch_tag, "chunk"]))
            )
    return [r for r in runs if state is None or (r.state and r.state.type.value == state)]


def _batch_tag(cluster: DevCluster, name: str, seconds: float = 120) -> str:
    """The tag of the batch the watcher made from folder `name` (batch:<batch id>)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for claim in (cluster.watch_dir / "processing").glob("claim-*/claim.json"):
            data = json.loads(claim.read_text(encoding="utf-8"))
            if data["name"] == name:
                return f"batch:{data['batch_id']}"
        time.sleep(0.5)
    raise AssertionError(f"{name} was not claimed")


def test_a_worker_killed_mid_chunk_costs_only_time(cluster, samples_module, tmp_path) -> None:  # type: ignore[no-untyped-def]
    texts = {code.replace("C-", "K-"): text for code, text in TEXTS.items()}
    _drop(cluster, "power-cut", texts, samples_module, tmp_path)
    tag = _batch_tag(cluster, "power-cut")
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline:
        for run in _chunk_runs(cluster, tag, "RUNNING"):
            pids = _flow_run_processes(str(run.id))
            if pids:
                victim = (run, pids)
                break
        time.sleep(0.5)
    assert victim is not None, "no chunk run started"
    run, pids = victim
    worker_pids = {int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) for p in pids}
    for name, info in cluster.processes.items():
        if name.startswith("worker-ocr") and info.get("pid") in worker_pids | set(pids):
            os.killpg(info["pid"], signal.SIGKILL)  # the worker and everything in its group
            killed_worker = name
            break
    else:
        pytest.fail("the run's worker was not found")
    for pid in pids:  # and its run, wherever it is: the machine is gone
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_for(cluster.watch_dir / "done" / "power-cut", cluster, 600)
    report = _report(cluster, "power-cut")
    assert report["totals"]["items"] == 6 and report["totals"]["failed"] == 0
    assert sorted(i["archive_code"] for i in report["items"]) == sorted(texts)
    crashed = [r for r in _chunk_runs(cluster, tag) if r.state and r.state.type.value == "CRASHED"]
    assert str(run.id) in {str(r.id) for r in crashed}  # Prefect's automation found the dead run
    from pipeline.store import Store

    store = Store(cluster.env()["CAPTURE_STATE__URL"])
    try:
        for code in texts:  # every item packaged exactly once
            assert [p.status for p in store.packages(code)] == ["current"], code
    finally:
        store.close()
    env = _env(cluster)
    cluster.start(  # a replacement for the next tests
        killed_worker,
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--type",
            "process",
            "--pool",
            "capture",
            "--name",
            killed_worker.removeprefix("worker-"),
            "--limit",
            "1",
        ],
        env,
    )


def test_a_poison_batch_is_quarantined_and_the_watcher_carries_on(cluster, samples_module, tmp_path) -> None:  # type: ignore[no-untyped-def]
    poison = {"P-0001": "每次都会死掉的批次"}
    _drop(cluster, "poison", poison, samples_module, tmp_path)
    tag = _batch_tag(cluster, "poison")
    killed: set[str] = set()
    deadline = time.monotonic() + 600
    while not list((cluster.watch_dir / "quarantine").glob("poison*")) and time.monotonic() < deadline:
        for run in _chunk_runs(cluster, tag):
            if str(run.id) in killed:
                continue
            pids = _flow_run_processes(str(run.id))
            if pids:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)  # the OCR process dies every time (out of memory, say)
                killed.add(str(run.id))
        time.sleep(0.3)
    quarantined = list((cluster.watch_dir / "quarantine").glob("poison*"))
    assert quarantined, f"not quarantined; killed {len(killed)} runs"
    reason = (quarantined[0] / "REASON.txt").read_text(encoding="utf-8")
    assert "flow runs ended without finishing" in reason
    assert len(killed) == 4  # 2 batch runs (watch.max_attempts) x 2 runs of its chunk (server.chunk_attempts)
    good = {"G-0001": "后来的正常批次"}
    _drop(cluster, "after-poison", good, samples_module, tmp_path)
    _wait_for(cluster.watch_dir / "done" / "after-poison", cluster, 300)


def test_run_submit_hands_a_folder_to_the_cluster_and_follows_it(cluster, samples_module, tmp_path) -> None:  # type: ignore[no-untyped-def]
    texts = {"S-0001": "提交到集群的第一件", "S-0002": "提交到集群的第二件"}
    _capture(cluster, "catalogue", "import", str(_catalogue(tmp_path / "s.csv", list(texts))))
    batch = _make_batch(tmp_path / "submitted", texts, samples_module)
    done = _capture(cluster, "run", "--submit", str(batch))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted as flow run" in done.stdout and "2 items" in done.stdout
    assert all((cluster.home / "archive" / code / "record.json").exists() for code in texts)
