"""Server mode against the embedded run, same pages, same machine: `python -m benchmarks.cluster`.

The 40-page throughput batch (A4, 4 pages per item) runs once embedded (`capture run` in a fresh
process, `ocr.workers` 2, one thread each) and once on a local cluster (pipeline.devcluster: two
OCR workers, each run with one engine and one thread, chunks of `--chunk` items). Figures:
pages per minute of each and their ratio (cluster / embedded; target at least 0.9), seconds
from the READY marker to the first page started, the watcher's peak memory (server mode), and
which worker took which chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.run import make_batch, pipeline_run, write_catalogue

ROOT = Path(__file__).resolve().parent.parent


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _first_page_started(api_url: str, batch_id: str) -> datetime | None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterName,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"batch:{batch_id}"])),
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=" page ")),
            )
    starts = [r.start_time for r in runs if r.start_time is not None]
    return min(starts) if starts else None


def bench_cluster(work: Path, pages: int = 40, chunk: int = 2) -> dict[str, Any]:
    from pipeline.devcluster import DevCluster

    batch = work / "batch"
    make_batch(batch, pages, seed=21, per_item=4)
    embedded = pipeline_run(batch, work / "embedded-home")
    dev = DevCluster(work / "cluster", ocr_workers=2, ocr_threads_per_worker=1, chunk_items=chunk)
    try:
        dev.up()
        env = dev.env()
        catalogue = work / "cluster-catalogue.csv"
        write_catalogue(batch, catalogue)
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "catalogue", "import", str(catalogue)],
            env=env,
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        staged = dev.watch_dir / ".staging-batch"
        shutil.copytree(batch, staged)
        os.rename(staged, dev.watch_dir / "bench")  # appears whole, then the marker: READY at t0
        ready = time.time()
        (dev.watch_dir / "bench" / "READY").write_text("", encoding="utf-8")
        done = dev.watch_dir / "done" / "bench"
        while not done.exists():
            if time.time() - ready > 3600:
                raise RuntimeError("the cluster did not finish the batch within an hour")
            time.sleep(0.5)
        finished = time.time()
        report = next(
            json.loads(p.read_text(encoding="utf-8"))
            for p in (dev.home / "reports").glob("*.json")
            if Path(json.loads(p.read_text(encoding="utf-8")).get("batch_dir", "")).name == "bench"
        )
        first = _first_page_started(env["PREFECT_API_URL"], report["batch_id"])
        watcher_mb = _vm_hwm_mb(int(dev.processes["watcher"]["pid"]))
    finally:
        dev.down()
    cluster_seconds = finished - ready
    embedded_ppm = pages / embedded["wall_seconds"] * 60
    cluster_ppm = pages / cluster_seconds * 60
    return {
        "pages": pages,
        "chunk_items": chunk,
        "embedded_wall_seconds": round(embedded["wall_seconds"], 1),
        "embedded_flow_seconds": embedded.get("flow_seconds"),
        "embedded_pages_per_minute": round(embedded_ppm, 1),
        "cluster_seconds_ready_to_done": round(cluster_seconds, 1),
        "cluster_pages_per_minute": round(cluster_ppm, 1),
        "ratio_cluster_to_embedded": round(cluster_ppm / embedded_ppm, 2),
        "seconds_ready_to_first_page": round(first.timestamp() - ready, 1) if first else None,
        "watcher_peak_mb": round(watcher_mb, 1) if watcher_mb else None,
        "items_per_worker": dict(Counter(report.get("workers", {}).values())),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=2, help="items per chunk run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-", dir="/tmp") as folder:
        result = bench_cluster(Path(folder), args.pages, args.chunk)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return result


if __name__ == "__main__":
    main()
