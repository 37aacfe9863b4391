"""Benchmarks: every figure beside a baseline run in the same invocation, printed as ratios.

    python -m benchmarks.run                 # everything (about 45 minutes on 2 cores)
    python -m benchmarks.run --only deskew   # one section: throughput, quality, memory, search, deskew,
                                             # cluster (server mode on a local cluster vs embedded),
                                             # cold (a cold `capture search`), storage (bytes per
                                             # page by input kind, beside OCRmyPDF)
    python -m benchmarks.run --quick         # tiny inputs, a minute: the smoke run the tests use

Results go to benchmarks/results/latest.json (or --out). These are measurements, not tests:
nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEV_SCANS = ROOT.parent / "shared" / "data" / "dev-scans"
sys.path.insert(0, str(ROOT / "samples"))

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import make_samples  # noqa: E402

from pipeline import imaging  # noqa: E402
from pipeline.index.analysis import fold  # noqa: E402


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- inputs

_SENTENCES = [s for _, (_, paragraphs) in make_samples.TEXTS.items() for s in paragraphs]


def page_text(rng: random.Random, chars: int = 520) -> list[str]:
    """Paragraphs of project-owned Chinese business text, about `chars` characters."""
    out: list[str] = []
    while sum(len(p) for p in out) < chars:
        out.append(rng.choice(_SENTENCES))
    return out


def make_batch(
    folder: Path, pages: int, seed: int, size_mm: tuple[float, float] = (210, 297), per_item: int = 4
) -> list[Path]:
    """Degraded 300 dpi grey JPEG pages in items of `per_item`; returns the page files in order."""
    rng = random.Random(seed)
    files = []
    for n in range(pages):
        item = folder / f"BENCH-{seed:02d}-{n // per_item + 1:04d}"
        item.mkdir(parents=True, exist_ok=True)
        img = make_samples.render_page(
            f"业务档案第{n + 1}页",
            page_text(rng, 520 if size_mm[0] > 150 else 120),
            [("保险合同号", f"P{2010 + n % 10}-{rng.randrange(10**6):06d}")],
            skew=round(rng.uniform(-5, 5), 2),
            rotate=180 if n % 13 == 7 else 0,
            noise=6.0,
            seed=seed * 1000 + n,
            size_mm=size_mm,
        )
        path = item / f"{n % per_item + 1:04d}.jpg"
        img.save(path, quality=80, dpi=(300, 300))
        files.append(path)
    return files


def write_catalogue(batch: Path, path: Path) -> None:
    rows = ["档号,页数"] + [f"{d.name},{len(list(d.iterdir()))}" for d in sorted(batch.iterdir())]
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")


# --------------------------------------------------------------------------- throughput


def bare_engine(
    files: list[Path],
    workers: int,
    threads: int,
    runtime: Literal["openvino", "onnxruntime"] = "openvino",
    *,
    shared_detector: bool = False,
) -> tuple[float, float]:
    """Wall and CPU seconds for the default engine alone, with orientation and deskew.

    The baseline is `workers` independent engines (each its own text detector). With
    `shared_detector`, the engines after the first are its siblings, sharing one detector as
    the pipeline's engines do for the memory target: that row is for reference, to show what the
    sharing itself costs; the target stays against independent engines."""
    import tempfile

    from pipeline.ocr.rapid import RapidOcrEngine
    from pipeline.pages import read_page
    from pipeline.process import plan_files
    from pipeline.settings import Settings

    engines = [RapidOcrEngine(threads=threads, runtime=runtime)]
    for _ in range(workers - 1):
        engines.append(
            engines[0].sibling() if shared_detector else RapidOcrEngine(threads=threads, runtime=runtime)
        )
    scratch = Settings(home=tempfile.mkdtemp(prefix="bench-bare-"))
    sources, _ = plan_files(files, scratch)

    def work(job: tuple[int, Any]) -> None:
        i, page = job
        engine = engines[i % workers]
        loaded = read_page(page.decode_source)
        cleaned = imaging.clean_page(loaded.pixels, loaded.dpi or 300, judges=(engine.judge_up_down,))
        if not cleaned.blank:
            engine.recognise(cleaned.image)

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, enumerate(sources)))
    return time.perf_counter() - started, time.process_time() - cpu


def _env(home: Path, workers: int | None = None, engine: str | None = None) -> dict[str, str]:
    env = {**os.environ, "CAPTURE_HOME": str(home)}
    if workers is not None:
        env["CAPTURE_OCR__WORKERS"] = str(workers)
    if engine is not None:
        env["CAPTURE_OCR__ENGINE"] = engine
    return env


def _one_page_batch(work: Path) -> Path:
    """One page like the throughput batch's, but not one of them (its result is not cached)."""
    folder = work / "throughput-one-page"
    if not folder.exists():
        make_batch(folder, 1, seed=3)
    return folder


def pipeline_run(
    batch: Path, home: Path, workers: int | None = None, engine: str | None = None, used_home: bool = False
) -> dict[str, Any]:
    """`capture run` in a fresh process: wall time (with Prefect start-up) and the flow's own time.

    `used_home`: the home has run a batch before (a one-page batch of other pages, untimed), as
    an office's has: Prefect's database exists, so its server starts without creating it."""
    env = _env(home, workers, engine)
    if used_home:
        earlier = home.parent / f"{home.name}-earlier"
        make_batch(earlier, 1, seed=99)
        _child_run(earlier, home, env)
    return _child_run(batch, home, env)


def _child_run(batch: Path, home: Path, env: dict[str, str]) -> dict[str, Any]:
    catalogue = home.parent / f"{home.name}-{batch.name}-catalogue.csv"
    write_catalogue(batch, catalogue)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", "run", str(batch), str(catalogue)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"pipeline run failed:\n{result.stdout}\n{result.stderr}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["wall_seconds"] = wall
    return data


def run_ocrmypdf(images: list[Path], source: Path, output: Path, jobs: int = 2) -> float | None:
    """OCRmyPDF making PDF/A-2 from the same images (deskew, rotate pages); its seconds, or None."""
    if not _has("ocrmypdf") or shutil.which("gs") is None:
        return None
    import img2pdf

    source.write_bytes(img2pdf.convert([str(f) for f in images]))
    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "ocrmypdf",
        "--quiet",
        "-l",
        "chi_sim+chi_tra+eng",
        "--deskew",
        "--rotate-pages",
        "--output-type",
        "pdfa-2",
        "--jobs",
        str(jobs),
        str(source),
        str(output),
    ]
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def bench_throughput(work: Path, pages: int, quick: bool, references: bool = True) -> dict[str, Any]:
    batch = work / "throughput"
    files = make_batch(batch, pages, seed=1)
    _say(f"throughput: {pages} generated A4 300 dpi pages")
    configs = [(2, 1)] if quick else [(2, 1), (1, 2), (1, 1)]
    measured = {f"{w} engines x {t} threads": bare_engine(files, w, t) for w, t in configs}
    # the baseline: the best of the configurations using both cores
    bare = {name: wall for name, (wall, _) in measured.items() if name != "1 engines x 1 threads"}
    best_name, best = min(bare.items(), key=lambda kv: kv[1])
    best_cpu = measured[best_name][1]
    # the same engines sharing one text detector, as the pipeline runs them (for reference)
    shared = None if quick or not references else bare_engine(files, 2, 1, shared_detector=True)
    # The same engine on the onnxruntime runtime (the default before OpenVINO), for the record.
    onnx = None if quick or not references else bare_engine(files, 2, 1, runtime="onnxruntime")
    run = pipeline_run(batch, work / "throughput-home", used_home=not quick)
    # one page of the same kind (other pages: nothing cached) in the same home: what a run costs
    # beside its pages, and so the rate of the pages beyond the first
    one_page = _child_run(_one_page_batch(work), work / "throughput-home", _env(work / "throughput-home"))
    # the first batch of a new home: Prefect's server creates its database meanwhile
    fresh = None if quick else pipeline_run(batch, work / "throughput-home-new")
    # ocr.workers = 1 beside the default 2, against one engine with one thread: the scaling
    single = None if quick else pipeline_run(batch, work / "throughput-home-1", workers=1, used_home=True)
    # the whole pipeline with the PP-OCRv4 models it used before PP-OCRv6 (issue 13's comparison)
    ppocrv4 = (
        None
        if quick
        else pipeline_run(batch, work / "throughput-home-v4", engine="rapidocr-ppocrv4", used_home=True)
    )
    ocrmypdf = (
        None
        if quick or not references
        else run_ocrmypdf(files, work / "ocrmypdf-in.pdf", work / "ocrmypdf-out.pdf")
    )
    ppm = lambda seconds: pages / seconds * 60  # noqa: E731
    result: dict[str, Any] = {
        "pages": pages,
        "bare_engine_seconds": {k: round(v, 1) for k, v in bare.items()},
        "bare_engine_best": best_name,
        "bare_pages_per_min": round(ppm(best), 1),
        "pipeline_flow_seconds": round(run["seconds"], 1),
        "pipeline_wall_seconds": round(run["wall_seconds"], 1),
        "pipeline_pages_per_min_flow": round(ppm(run["seconds"]), 1),
        "pipeline_pages_per_min_wall": round(ppm(run["wall_seconds"]), 1),
        "ratio_vs_bare_flow": round(best / run["seconds"], 3),
        "ratio_vs_bare_wall": round(best / run["wall_seconds"], 3),
        "bare_cpu_seconds": round(best_cpu, 1),
        "pipeline_cpu_seconds": run["cpu_seconds"],
        "ratio_vs_bare_cpu": round(best_cpu / run["cpu_seconds"], 3),
        "target_ratio_vs_bare": 0.9,
        # pages a minute for each core the configuration uses (2 workers x 1 engine thread: 2)
        "bare_pages_per_min_per_core": round(ppm(best) / 2, 1),
        "pipeline_pages_per_min_per_core_wall": round(ppm(run["wall_seconds"]) / 2, 1),
        "pipeline_peak_rss_mb": run["peak_rss_mb"],
    }
    if shared is not None:
        result["bare_shared_detector"] = {
            "seconds": round(shared[0], 1),
            "cpu_seconds": round(shared[1], 1),
            "pages_per_min": round(ppm(shared[0]), 1),
            "cost_of_sharing_seconds": round(shared[0] - measured["2 engines x 1 threads"][0], 1),
            "pipeline_ratio_vs_it_wall": round(shared[0] / run["wall_seconds"], 3),
        }
    if single is not None:
        one, one_cpu = measured["1 engines x 1 threads"]
        result["workers_1"] = {
            "bare_1x1_seconds": round(one, 1),
            "bare_1x1_cpu_seconds": round(one_cpu, 1),
            "bare_pages_per_min_per_core": round(ppm(one), 1),
            "pipeline_flow_seconds": round(single["seconds"], 1),
            "pipeline_wall_seconds": round(single["wall_seconds"], 1),
            "pipeline_cpu_seconds": single["cpu_seconds"],
            "pipeline_pages_per_min_per_core_wall": round(ppm(single["wall_seconds"]), 1),
            "pipeline_peak_rss_mb": single["peak_rss_mb"],
            "ratio_vs_bare_wall": round(one / single["wall_seconds"], 3),
            "ratio_vs_bare_flow": round(one / single["seconds"], 3),
            "scaling_2_workers_vs_1_wall": round(single["wall_seconds"] / run["wall_seconds"], 2),
        }
    more = run["wall_seconds"] - one_page["wall_seconds"]
    if more > 0:  # (a tiny batch may run faster than its one page did)
        result["start_and_rest"] = {
            "one_page_wall_seconds": round(one_page["wall_seconds"], 1),
            "one_page_flow_seconds": round(one_page["seconds"], 1),
            "more_pages": pages - 1,
            "more_pages_wall_seconds": round(more, 1),
            "bare_more_pages_seconds": round(best * (pages - 1) / pages, 1),
            "ratio_vs_bare_more_pages_wall": round(best * (pages - 1) / pages / more, 3),
        }
    if fresh is not None:
        result["new_home"] = {
            "pipeline_flow_seconds": round(fresh["seconds"], 1),
            "pipeline_wall_seconds": round(fresh["wall_seconds"], 1),
            "pipeline_cpu_seconds": fresh["cpu_seconds"],
            "pipeline_pages_per_min_wall": round(ppm(fresh["wall_seconds"]), 1),
            "pipeline_peak_rss_mb": fresh["peak_rss_mb"],
            "ratio_vs_bare_wall": round(best / fresh["wall_seconds"], 3),
        }
    if ppocrv4 is not None:
        result["pipeline_ppocrv4"] = {
            "pipeline_flow_seconds": round(ppocrv4["seconds"], 1),
            "pipeline_wall_seconds": round(ppocrv4["wall_seconds"], 1),
            "pipeline_cpu_seconds": ppocrv4["cpu_seconds"],
            "pipeline_pages_per_min_wall": round(ppm(ppocrv4["wall_seconds"]), 1),
            "pipeline_peak_rss_mb": ppocrv4["peak_rss_mb"],
            "default_vs_ppocrv4_wall": round(ppocrv4["wall_seconds"] / run["wall_seconds"], 3),
        }
    if onnx is not None:
        result.update(
            bare_onnxruntime_seconds=round(onnx[0], 1),
            bare_onnxruntime_pages_per_min=round(ppm(onnx[0]), 1),
            openvino_speedup_vs_onnxruntime=round(onnx[0] / best, 2),
        )
    if ocrmypdf is not None:
        result.update(
            ocrmypdf_seconds=round(ocrmypdf, 1),
            ocrmypdf_pages_per_min=round(ppm(ocrmypdf), 1),
            ratio_vs_ocrmypdf_wall=round(ocrmypdf / run["wall_seconds"], 3),
            target_ratio_vs_ocrmypdf=2.9,
        )
    return result


# --------------------------------------------------------------------------- quality

# Every engine we support, through the pipeline's own page step: (result name, engine, runtime).
QUALITY_ENGINES = [
    ("rapidocr", "rapidocr", "openvino"),  # the default: PP-OCRv6 small
    ("rapidocr_onnxruntime", "rapidocr", "onnxruntime"),
    ("rapidocr-ppocrv4", "rapidocr-ppocrv4", "openvino"),  # the default before
    ("tesseract", "tesseract", "openvino"),
]
QUALITY_TARGETS = {"cer_simp": 0.0054, "cer_trad": 0.04, "recall": 0.98, "text_layer_cjk_spaces": 0}
LINE_SCORE_CUTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
CJK_RUN = re.compile(r"[\u4e00-\u9fff]{2,}")


def _normalise(text: str, folded: bool = True) -> str:
    import unicodedata

    text = fold(text) if folded else unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", "", text)


def cer(truth: str, hypothesis: str, folded: bool = True) -> float:
    """Character error rate, whitespace removed; folded to Simplified, or in the page's own script."""
    from rapidfuzz.distance import Levenshtein

    truth, hypothesis = _normalise(truth, folded), _normalise(hypothesis, folded)
    return Levenshtein.distance(truth, hypothesis) / max(1, len(truth))


def _dev_pages(limit: int | None) -> list[dict[str, Any]]:
    pages = json.loads((DEV_SCANS / "manifest.json").read_text(encoding="utf-8"))["pages"]
    return pages[:limit] if limit else pages


def degrade(source: Path, target: Path, seed: int) -> None:
    """A poorer scan of the same page: about 100 dpi of detail, blurred, faded ink, noise, JPEG 20."""
    import cv2
    from PIL import Image

    with Image.open(source) as img:
        dpi = img.info.get("dpi", (300, 300))
        grey = np.asarray(img.convert("L"))
    h, w = grey.shape
    small = cv2.resize(grey, None, fx=0.33, fy=0.33, interpolation=cv2.INTER_AREA)
    page = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    page = 255 - (255 - cv2.GaussianBlur(page, (0, 0), 1.8)) * 0.33
    page += np.random.default_rng(seed).normal(0, 26, page.shape)
    Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).save(target, quality=15, dpi=dpi)


def page_step(
    files: list[Path], engine: str, runtime: str, threads: int, work: Path, layer: bool = False
) -> dict[str, Any]:
    """The pages through the pipeline's page step with one engine, in a fresh process (see
    benchmarks.child: lines with their scores, seconds, load time, peak memory)."""
    spec = {
        "engine": engine,
        "runtime": runtime,
        "threads": threads,
        "workers": 1,
        "pages": [str(f) for f in files],
        "tmp": str(work),
        "layer": layer,
    }
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", "pages", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"page step with {engine} failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def texts_at(run: dict[str, Any], cut: float = 0.0) -> dict[str, str]:
    """Each page's text as the index gets it, keeping lines scoring at least `cut`."""
    from pipeline.index.analysis import join_lines

    return {
        page: join_lines([text for text, score in data["lines"] if score >= cut])
        for page, data in run["pages"].items()
    }


def ocrmypdf_texts(pages: list[dict[str, Any]], work: Path) -> dict[str, str] | None:
    output = work / "dev-ocrmypdf.pdf"
    images = [DEV_SCANS / f"{p['id']}.jpg" for p in pages]
    if run_ocrmypdf(images, work / "dev-in.pdf", output) is None:
        return None
    texts = {}
    for n, page in enumerate(pages, start=1):
        texts[page["id"]] = subprocess.run(
            ["pdftotext", "-f", str(n), "-l", str(n), "-enc", "UTF-8", str(output), "-"],
            capture_output=True,
            text=True,
        ).stdout
    return texts


def recall_queries(pages: list[dict[str, Any]], per_page: int, seed: int = 7) -> list[tuple[str, str]]:
    """(page id, query): 2 to 4 character Chinese strings taken from each page's ground truth."""
    rng = random.Random(seed)
    queries = []
    for page in pages:
        runs = [
            r
            for line in (DEV_SCANS / f"{page['id']}.txt").read_text(encoding="utf-8").splitlines()
            for r in CJK_RUN.findall(line)
        ]
        for _ in range(per_page):
            run = rng.choice(runs)
            size = rng.randint(2, min(4, len(run)))
            start = rng.randrange(len(run) - size + 1)
            queries.append((page["id"], run[start : start + size]))
    return queries


def in_other_script(queries: list[tuple[str, str]], scripts: dict[str, str]) -> list[tuple[str, str]]:
    """The same queries written in the other script (Simplified for a Traditional page and back)."""
    import opencc

    to_simp, to_trad = opencc.OpenCC("t2s"), opencc.OpenCC("s2t")
    return [
        (page, (to_simp if scripts[page] == "trad" else to_trad).convert(query)) for page, query in queries
    ]


def search_recall(texts: dict[str, str], queries: list[tuple[str, str]], work: Path, name: str) -> float:
    from pipeline.index.base import IndexItem, IndexPage, SearchQuery
    from pipeline.index.sqlite import SqliteIndex

    index = SqliteIndex(work / f"recall-{name}.sqlite")
    for page_id, text in texts.items():
        index.index_item(IndexItem(page_id, page_id, {}, (IndexPage(1, text),)))
    found = 0
    for page_id, query in queries:
        hits = index.search(SearchQuery(query, {"archive_code": page_id}, limit=1)).hits
        found += bool(hits)
    index.close()
    return found / len(queries)


def quality_of(
    texts: dict[str, str],
    pages: list[dict[str, Any]],
    queries: dict[str, list[tuple[str, str]]],
    work: Path,
    name: str,
) -> dict[str, Any]:
    """CER per script, folded and in the page's own script, and search recall."""
    result: dict[str, Any] = {}
    for folded, suffix in ((True, ""), (False, "_unfolded")):
        by_script: dict[str, list[float]] = {}
        for page in pages:
            truth = (DEV_SCANS / f"{page['id']}.txt").read_text(encoding="utf-8")
            by_script.setdefault(page["script"], []).append(cer(truth, texts[page["id"]], folded))
        result.update(
            {f"cer_{script}{suffix}": round(statistics.mean(v), 4) for script, v in by_script.items()}
        )
    for kind, chosen in queries.items():
        result[kind] = round(search_recall(texts, chosen, work, f"{name}-{kind}"), 4)
    return result


def line_score_cuts(
    run: dict[str, Any], pages: list[dict[str, Any]], queries: Any, work: Path, name: str
) -> list[dict[str, Any]]:
    """What each cut of the line score keeps and loses: characters dropped, CER, recall."""
    rows = []
    for cut in LINE_SCORE_CUTS:
        dropped = sum(len(t) for data in run["pages"].values() for t, score in data["lines"] if score < cut)
        rows.append(
            {
                "cut": cut,
                "dropped_chars": dropped,
                **quality_of(texts_at(run, cut), pages, queries, work, f"{name}{cut}"),
            }
        )
    return rows


def bench_quality(work: Path, quick: bool) -> dict[str, Any]:
    if not (DEV_SCANS / "manifest.json").exists():
        return {"skipped": f"no development set at {DEV_SCANS}"}
    pages = _dev_pages(2 if quick else None)
    files = [DEV_SCANS / f"{p['id']}.jpg" for p in pages]
    _say(f"quality: {len(pages)} development pages")
    scripts = {p["id"]: p["script"] for p in pages}
    queries = recall_queries(pages, 3 if quick else 20)
    sets = {"recall": queries, "recall_other_script": in_other_script(queries, scripts)}
    result: dict[str, Any] = {"pages": len(pages), "queries": len(queries), "targets": QUALITY_TARGETS}
    for name, engine, runtime in QUALITY_ENGINES[:1] if quick else QUALITY_ENGINES:
        _say(f"quality: {name}")
        run = page_step(files, engine, runtime, 1, work, layer=True)
        result[name] = {
            "version": run["version"],
            **quality_of(texts_at(run), pages, sets, work, name),
            "text_layer_cjk_spaces": run["text_layer_cjk_spaces"],
            "upright": sum(run["pages"][p["id"]]["rotation"] == p["rotation_ccw"] for p in pages),
            "load_seconds": run["load_seconds"],
            "seconds_per_page_1_thread": run["seconds_per_page"],
            "cpu_seconds_per_page_1_thread": run["cpu_seconds_per_page"],
            "peak_rss_mb": run["peak_rss_mb"],
        }
        if not quick:
            two = page_step(files, engine, runtime, 2, work)
            result[name]["seconds_per_page_2_threads"] = two["seconds_per_page"]
            result[name]["cpu_seconds_per_page_2_threads"] = two["cpu_seconds_per_page"]
        if name == "rapidocr":
            result["line_score_cuts"] = {"dev": line_score_cuts(run, pages, sets, work, "cut")}
    if not quick:
        # the line-score cut on poorer scans of the same pages, for the default and the old engine
        poor = work / "poor"
        poor.mkdir(exist_ok=True)
        for n, source in enumerate(files):
            degrade(source, poor / source.name, n)
        poor_files = [poor / f.name for f in files]
        for name, engine in (("rapidocr", "rapidocr"), ("rapidocr-ppocrv4", "rapidocr-ppocrv4")):
            _say(f"quality: {name} on degraded pages")
            run = page_step(poor_files, engine, "openvino", 1, work)
            result["line_score_cuts"][f"degraded {name}"] = line_score_cuts(
                run, pages, sets, work, f"poor{name}"
            )
        ocrmypdf = ocrmypdf_texts(pages, work)
        if ocrmypdf is not None:
            result["ocrmypdf"] = quality_of(ocrmypdf, pages, sets, work, "ocrmypdf")
    return result


# --------------------------------------------------------------------------- memory


def bench_memory(work: Path, quick: bool) -> dict[str, Any]:
    sizes = (1, 3) if quick else (50, 200)
    result: dict[str, Any] = {"page_size": "A4 300 dpi" if not quick else "A6 300 dpi (quick)"}
    for pages in sizes:
        batch = work / f"memory-{pages}"
        make_batch(batch, pages, seed=pages, size_mm=(105, 148) if quick else (210, 297), per_item=10)
        _say(f"memory: {pages} pages")
        run = pipeline_run(batch, work / f"memory-home-{pages}")
        result[f"{pages}_pages"] = {
            "peak_rss_mb": run["peak_rss_mb"],
            "flow_seconds": round(run["seconds"], 1),
        }
    small, large = (result[f"{n}_pages"]["peak_rss_mb"] for n in sizes)
    result["ratio_large_to_small"] = round(large / small, 3)
    return result


# --------------------------------------------------------------------------- search at scale


def bench_search(work: Path, quick: bool) -> dict[str, Any]:
    """The embedded index at 1M pages and osmem-server as a reference: benchmarks/search.py."""
    from benchmarks.search import bench

    return bench(work, quick)


# --------------------------------------------------------------------------- deskew


def bench_deskew(quick: bool) -> dict[str, Any]:
    from deskew import determine_skew

    rng = random.Random(5)
    angles = [round(rng.uniform(-10, 10), 2) for _ in range(2 if quick else 12)]
    ours, theirs, theirs_fine = [], [], []
    t_ours = t_theirs = t_fine = 0.0
    for n, angle in enumerate(angles):
        page = np.asarray(
            make_samples.render_page(
                "测试", page_text(random.Random(n), 500), [], skew=angle, noise=6.0, seed=n
            )
        )
        started = time.perf_counter()
        ours.append(abs(imaging.estimate_skew(page, 10.0).angle - angle))
        t_ours += time.perf_counter() - started
        started = time.perf_counter()
        theirs.append(abs(-(determine_skew(page) or 0.0) - angle))
        t_theirs += time.perf_counter() - started
        if not quick:
            started = time.perf_counter()
            fine = determine_skew(page, min_deviation=0.05, max_angle=10, min_angle=-10)
            theirs_fine.append(abs(-(fine or 0.0) - angle))
            t_fine += time.perf_counter() - started

    def summary(r: list[float], t: float) -> dict[str, float]:
        return {
            "mean_residual_deg": round(statistics.mean(r), 3),
            "max_residual_deg": round(max(r), 3),
            "seconds_per_page": round(t / len(r), 3),
        }

    result = {
        "pages": len(angles),
        "ours": summary(ours, t_ours),
        "deskew_default": summary(theirs, t_theirs),
    }
    if theirs_fine:
        result["deskew_fine_0.05deg"] = summary(theirs_fine, t_fine)
    return result


# --------------------------------------------------------------------------- report


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Archive Capture benchmarks")
    for column in ("measure", "ours", "baseline", "ratio", "target"):
        table.add_column(column)
    t = results.get("throughput")
    if t:
        table.add_row(
            "pages/min (flow)",
            str(t["pipeline_pages_per_min_flow"]),
            f"{t['bare_pages_per_min']} bare engine",
            str(t["ratio_vs_bare_flow"]),
            ">= 0.9",
        )
        if "ratio_vs_bare_cpu" in t:
            table.add_row(
                "CPU seconds for the batch",
                str(t["pipeline_cpu_seconds"]),
                f"{t['bare_cpu_seconds']} bare engine",
                str(t["ratio_vs_bare_cpu"]),
                ">= 0.9",
            )
        table.add_row(
            "pages/min (wall, with Prefect start)",
            str(t["pipeline_pages_per_min_wall"]),
            f"{t['bare_pages_per_min']} bare engine",
            str(t["ratio_vs_bare_wall"]),
            ">= 0.9",
        )
        if "bare_pages_per_min_per_core" in t:
            table.add_row(
                "pages/min per core (wall, with Prefect start), 2 workers; peak MB",
                f"{t['pipeline_pages_per_min_per_core_wall']}; {t.get('pipeline_peak_rss_mb')}",
                f"{t['bare_pages_per_min_per_core']} bare engine",
                str(t["ratio_vs_bare_wall"]),
                ">= 0.9",
            )
        shared = t.get("bare_shared_detector")
        if shared:
            table.add_row(
                "pages/min (wall, with Prefect start) against the bare engine sharing one "
                "detector as the pipeline does (reference, not the target's baseline)",
                str(t["pipeline_pages_per_min_wall"]),
                f"{shared['pages_per_min']} bare engine, shared detector "
                f"({shared['cost_of_sharing_seconds']:+} s against independent engines)",
                str(shared["pipeline_ratio_vs_it_wall"]),
                "-",
            )
        w1 = t.get("workers_1")
        if w1:
            table.add_row(
                "pages/min per core (wall, with Prefect start), 1 worker; peak MB",
                f"{w1['pipeline_pages_per_min_per_core_wall']}; {w1['pipeline_peak_rss_mb']}",
                f"{w1['bare_pages_per_min_per_core']} bare engine 1 x 1",
                str(w1["ratio_vs_bare_wall"]),
                f"2 workers: {w1['scaling_2_workers_vs_1_wall']}x",
            )
        rest = t.get("start_and_rest")
        if rest:
            table.add_row(
                f"a one-page batch in the same home (the start and one page); the {rest['more_pages']} "
                "pages beyond it (wall)",
                f"{rest['one_page_wall_seconds']} s; {rest['more_pages_wall_seconds']} s",
                f"bare engine {rest['bare_more_pages_seconds']} s for {rest['more_pages']} pages",
                str(rest["ratio_vs_bare_more_pages_wall"]),
                "-",
            )
        new = t.get("new_home")
        if new:
            table.add_row(
                "pages/min (wall), 2 workers, the first batch of a new home",
                str(new["pipeline_pages_per_min_wall"]),
                f"{t['bare_pages_per_min']} bare engine",
                str(new["ratio_vs_bare_wall"]),
                ">= 0.9",
            )
        v4 = t.get("pipeline_ppocrv4")
        if v4:
            table.add_row(
                "pages/min (wall), the pipeline with PP-OCRv6 (default) vs PP-OCRv4",
                str(t["pipeline_pages_per_min_wall"]),
                f"{v4['pipeline_pages_per_min_wall']} with rapidocr-ppocrv4",
                str(v4["default_vs_ppocrv4_wall"]),
                ">= 1 (issue 13)",
            )
        if "bare_onnxruntime_pages_per_min" in t:
            table.add_row(
                "bare engine pages/min, OpenVINO vs onnxruntime",
                str(t["bare_pages_per_min"]),
                f"{t['bare_onnxruntime_pages_per_min']} onnxruntime",
                str(t["openvino_speedup_vs_onnxruntime"]),
                "-",
            )
        if "ocrmypdf_pages_per_min" in t:
            table.add_row(
                "pages/min vs OCRmyPDF",
                str(t["pipeline_pages_per_min_wall"]),
                f"{t['ocrmypdf_pages_per_min']} OCRmyPDF",
                str(t["ratio_vs_ocrmypdf_wall"]),
                ">= 2.9",
            )
    q = results.get("quality", {})
    base = q.get("ocrmypdf") or {}
    for name, _, _ in QUALITY_ENGINES:
        ours = q.get(name)
        if not ours:
            continue
        for key in ("cer_simp", "cer_trad", "recall", "recall_other_script", "text_layer_cjk_spaces"):
            if key not in ours:
                continue
            target = QUALITY_TARGETS.get(key, QUALITY_TARGETS["recall"])
            other = base.get(key)
            ratio = round(ours[key] / other, 3) if other else "-"
            table.add_row(
                f"{name}: {key}",
                str(ours[key]),
                f"{other} ocrmypdf" if other is not None else "-",
                str(ratio),
                f">= {target}" if key.startswith("recall") else f"<= {target}",
            )
        table.add_row(
            f"{name}: unfolded CER simp/trad, s/page 1/2 threads, load s, peak MB",
            f"{ours.get('cer_simp_unfolded')} / {ours.get('cer_trad_unfolded')}, "
            f"{ours.get('seconds_per_page_1_thread')} / {ours.get('seconds_per_page_2_threads', '-')}, "
            f"{ours.get('load_seconds')}, {ours.get('peak_rss_mb')}",
            "-",
            "-",
            "-",
        )
    m = results.get("memory")
    if m:
        table.add_row(
            "peak RSS MB, small vs large batch",
            " / ".join(str(v["peak_rss_mb"]) for k, v in m.items() if k.endswith("_pages")),
            "smaller batch",
            str(m["ratio_large_to_small"]),
            "flat (~1.0)",
        )
    s = results.get("search")
    if s:
        for kind, v in s["sqlite"]["by_kind"].items():
            table.add_row(
                f"search p50/p95 ms, {s['pages']:,} pages: {kind}",
                f"{v['p50_ms']} / {v['p95_ms']}",
                "-",
                "-",
                "p95 <= 100",
            )
        table.add_row(
            f"search top 10 as exhaustive ranking, {s['pages']:,} pages",
            f"{s['sqlite']['top10_same_scores']} of {s['sqlite']['top10_queries']} queries",
            "exhaustive ranking",
            "-",
            "all",
        )
        table.add_row(
            f"search index build, {s['pages']:,} pages",
            f"{s['pages_per_second']} pages/s, {s['index_mb']} MB, "
            f"search process {s['search_process_peak_rss_mb']} MB",
            "-",
            "-",
            "-",
        )
        ref = s.get("reference") or {}
        if ref:
            ours, theirs = ref["sqlite"], ref["osmem_server"]
            table.add_row(
                f"search p50/p95 ms, {ref['pages']:,} pages",
                f"{ours['p50_ms']} / {ours['p95_ms']}",
                f"{theirs['p50_ms']} / {theirs['p95_ms']} osmem-server (reference)",
                str(round(ours["p95_ms"] / max(theirs["p95_ms"], 1e-9), 2)),
                "-",
            )
    d = results.get("deskew")
    if d:
        for key in ("deskew_default", "deskew_fine_0.05deg"):
            if key in d:
                ours, base = d["ours"], d[key]
                ratio = round(ours["mean_residual_deg"] / max(base["mean_residual_deg"], 1e-9), 3)
                table.add_row(
                    "deskew mean/max residual deg",
                    f"{ours['mean_residual_deg']} / {ours['max_residual_deg']}",
                    f"{base['mean_residual_deg']} / {base['max_residual_deg']} {key}",
                    str(ratio),
                    "<= 0.1 max",
                )
    c = results.get("cluster")
    if c:
        table.add_row(
            f"server mode, {c['pages']} pages, 2 workers x 1 engine (pages/min)",
            str(c["cluster_pages_per_minute"]),
            f"{c['embedded_pages_per_minute']} embedded 2x1, fresh process",
            str(c["ratio_cluster_to_embedded"]),
            ">= 0.9",
        )
        table.add_row(
            "server mode: READY to first page, watcher peak",
            f"{c['seconds_ready_to_first_page']} s, {c['watcher_peak_mb']} MB",
            "-",
            "-",
            "small watcher",
        )
    if results.get("cold"):
        from benchmarks.cold import cold_rows

        for row in cold_rows(results["cold"]):
            table.add_row(*row)
    if results.get("storage"):
        from benchmarks.storage import storage_rows

        for row in storage_rows(results["storage"]):
            table.add_row(*row)
    Console(width=160).print(table)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        **_cpu(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _cpu() -> dict[str, Any]:
    """The processor's name and the vector units OpenVINO picks its kernels by: with AMX it
    runs the models in bfloat16 (its default there), so the figures of two machines differ."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in info.splitlines():  # the first processor's lines
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name", ""),
        "cpu_units": sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx2", "avx512f"))),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["throughput", "quality", "memory", "search", "deskew", "cluster", "cold", "storage"],
    )
    parser.add_argument("--pages", type=int, default=40, help="pages in the throughput batch")
    parser.add_argument("--quick", action="store_true", help="tiny inputs: a smoke run")
    parser.add_argument(
        "--no-references",
        action="store_true",
        help="throughput: leave out the onnxruntime and OCRmyPDF runs (a shorter run to repeat)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    args = parser.parse_args(argv)
    sections = args.only or [
        "throughput",
        "quality",
        "memory",
        "search",
        "deskew",
        "cluster",
        "cold",
        "storage",
    ]
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        work = Path(tmp)
        for section in sections:
            started = time.perf_counter()
            if section == "throughput":
                pages = 2 if args.quick else args.pages
                results[section] = bench_throughput(work, pages, args.quick, not args.no_references)
            elif section == "quality":
                results[section] = bench_quality(work, args.quick)
            elif section == "memory":
                results[section] = bench_memory(work, args.quick)
            elif section == "search":
                results[section] = bench_search(work, args.quick)
            elif section == "cold":
                from benchmarks.cold import bench_cold_search

                results[section] = bench_cold_search(work, args.quick)
            elif section == "storage":
                from benchmarks.storage import bench_storage

                results[section] = bench_storage(work, args.quick)
            elif section == "deskew":
                results[section] = bench_deskew(args.quick)
            elif section == "cluster" and not args.quick:
                from benchmarks.cluster import bench_cluster

                results[section] = bench_cluster(work, args.pages)
            _say(f"  {section} done in {time.perf_counter() - started:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    print_table(results)
    _say(f"results: {args.out}")
    return results


if __name__ == "__main__":
    main()
