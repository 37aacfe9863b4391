"""Measurements that need a process of their own (peak memory, load time): a pipeline run, or the
development scans through the pipeline's page step with one engine."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

CJK_SPACE_CJK = re.compile(r"[\u3400-\u9fff][ \t\u3000]+[\u3400-\u9fff]")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_pipeline(batch: str, catalogue: str) -> None:
    """`capture run` itself in a process of its own, as a user runs it (its Prefect server, its
    batch process): the report's flow seconds, the largest process's peak memory (the batch
    process, which holds the engines) and the CPU seconds of everything it started."""
    home = Path(os.environ["CAPTURE_HOME"])
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", batch, "--catalogue", catalogue],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"capture run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    report_path = max((home / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": report["totals"]["seconds"],
                "pages": report["totals"]["pages"],
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "cpu_seconds": round(_cpu_seconds(), 1),
            }
        )
    )


def _text_layer_spaces(results: list[Any], work: Path) -> int:
    """CJK-space-CJK occurrences in what pdftotext extracts from each page's PDF text layer."""
    from pipeline import package

    found = 0
    for n, result in enumerate(results):
        if not result.image_path:
            continue
        pdf = package.build_pdf(
            [
                package.PackagePage(
                    Path(result.image_path),
                    result.image_format,
                    result.dpi or 300,
                    result.ocr,
                    result.geometry,
                )
            ]
        )
        path = work / f"layer-{n}.pdf"
        pdf.save(path)
        pdf.close()
        text = subprocess.run(
            ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True, check=True
        ).stdout
        found += len(CJK_SPACE_CJK.findall(text))
    return found


def run_page_step(spec: dict[str, Any]) -> None:
    """Every page of `spec["pages"]` through process_page with one engine; the lines (all of
    them: the line-score cut is applied afterwards), timings, load time and peak memory."""
    from pipeline.process import EnginePool, plan_files, process_page
    from pipeline.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="bench-pages-", dir=spec.get("tmp")))
    settings = Settings(
        home=str(work / "home"),
        ocr={  # type: ignore[arg-type]
            "engine": spec["engine"],
            "rapidocr_runtime": spec.get("runtime", "openvino"),
            "engine_threads": spec["threads"],
            "workers": spec["workers"],
            "min_line_confidence": 0.0,
            **({"line_batch": spec["line_batch"]} if spec.get("line_batch") else {}),
        },
    )
    cache = settings.work_dir / "pages"
    cache.mkdir(parents=True, exist_ok=True)
    if spec.get("candidate"):
        from benchmarks.candidates import CandidatePool

        pool: Any = CandidatePool(spec["candidate"], spec["threads"], settings)
    else:
        pool = EnginePool(settings)
    started = time.perf_counter()
    with ExitStack() as stack:  # every worker's engine loaded before the clock for pages starts
        loaded = [stack.enter_context(pool.engine()) for _ in range(spec["workers"])]
        version = getattr(loaded[0], "version", "")
    load_seconds = time.perf_counter() - started
    planned, _ = plan_files([Path(p) for p in spec["pages"]], settings)
    started, cpu = time.perf_counter(), _cpu_seconds()
    with ThreadPoolExecutor(spec["workers"]) as executor:
        results = list(
            executor.map(
                lambda job: process_page(job[1], job[0] + 1, settings, pool, cache), enumerate(planned)
            )
        )
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    pages = {}
    for path, result in zip(spec["pages"], results, strict=True):
        lines = result.ocr.lines if result.ocr else ()
        pages[Path(path).stem] = {
            "lines": [[ln.text, round(ln.confidence, 4)] for ln in lines],
            "rotation": result.rotation,
            "orientation_method": result.orientation_method,
            "error": result.error,
        }
    print(
        json.dumps(
            {
                "engine": spec.get("candidate") or spec["engine"],
                "version": str(version),
                "threads": spec["threads"],
                "workers": spec["workers"],
                "load_seconds": round(load_seconds, 2),
                "wall_seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
                "seconds_per_page": round(wall / len(results), 3),
                "cpu_seconds_per_page": round(cpu / len(results), 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "text_layer_cjk_spaces": _text_layer_spaces(results, work) if spec.get("layer") else None,
                "pages": pages,
            },
            ensure_ascii=False,
        )
    )


def main() -> None:
    command = sys.argv[1]
    if command == "run":
        run_pipeline(sys.argv[2], sys.argv[3])
    elif command == "pages":
        run_page_step(json.loads(sys.argv[2]))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
