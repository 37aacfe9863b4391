"""The search benchmark: the embedded index at archive scale, with osmem-server as a reference.

    python -m benchmarks.search build PAGES INDEX    # (used by benchmarks.run) build and time
    python -m benchmarks.search query INDEX SPEC     # the queries in a fresh process

The pages come from benchmarks.corpus (a large varied synthetic archive). The built index is
kept in the benchmark cache folder (CAPTURE_BENCH_CACHE, default .bench-cache/ in the checkout)
under a name that says its size, corpus and schema version, so it is built once.

Query kinds, each with and without a filter (the item's year): one common word, two words, a
name, a policy number and a phrase of four or more characters. Every search is as the web page
makes it: 10 hits, facet counts, the total, as a searcher with clearance 秘密 over every fonds.
Latencies are measured in a fresh process (its peak memory is the search process's memory);
for a sample of queries the top 10 is compared with an exhaustive ranking of every match.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CAPTURE_BENCH_CACHE", ROOT / ".bench-cache"))
CORPUS_VERSION = 1
COMMON_WORDS = ["保险", "申请", "合同", "医院"]
TWO_WORDS = ["保险 理赔", "住院 费用", "养老 缴费", "受益人 变更"]
PHRASES = ["医疗费用发票", "保险合同号", "养老保险待遇", "身份证复印件", "社会保险费缴纳"]
SEARCHER = {"clearance": 2}  # 秘密: most pages, not 机密 (the sort of account most searchers have)
PER_ITEM = 10


def items(pages: int, seed: int = 11) -> Iterator[Any]:
    from benchmarks.corpus import Generator
    from pipeline.index.base import IndexItem, IndexPage

    for item in Generator(seed).items(pages, PER_ITEM):
        yield IndexItem(
            item.archive_code,
            item.title,
            item.fields,
            tuple(IndexPage(n + 1, text) for n, text in enumerate(item.pages)),
        )


def cached_index(pages: int) -> Path:
    from pipeline.index.sqlite import SCHEMA_VERSION

    return CACHE / f"search-{pages}-c{CORPUS_VERSION}-s{SCHEMA_VERSION}" / "index.sqlite"


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def build(pages: int, path: Path) -> dict[str, Any]:
    """Index `pages` synthetic pages item by item (as the pipeline does); the figures."""
    from pipeline.index.sqlite import SqliteIndex

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name("building.sqlite")
    for stale in path.parent.glob("building.sqlite*"):
        stale.unlink()
    index = SqliteIndex(partial)
    started, cpu = time.perf_counter(), _cpu()
    generating = 0.0
    source = items(pages)
    while True:
        t = time.perf_counter()
        item = next(source, None)
        generating += time.perf_counter() - t
        if item is None:
            break
        index.index_item(item)
    index._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    index.close()
    seconds = time.perf_counter() - started - generating
    partial.rename(path)
    figures = {
        "pages": pages,
        "build_seconds": round(seconds, 1),
        "generate_seconds": round(generating, 1),
        "build_cpu_seconds": round(_cpu() - cpu, 1),
        "pages_per_second": round(pages / seconds),
        "built_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_at_end": round(os.getloadavg()[0], 1),
    }
    path.with_name("build.json").write_text(json.dumps(figures), encoding="utf-8")
    return figures


def query_set(pages: int, seed: int = 5) -> list[dict[str, Any]]:
    """The benchmark's queries: names and policy numbers of items picked from the corpus."""
    from benchmarks.corpus import Generator

    rng = random.Random(seed)
    wanted = sorted(rng.sample(range(pages // PER_ITEM), min(6, pages // PER_ITEM)))
    picked = []
    for n, item in enumerate(Generator(11).items(wanted[-1] * PER_ITEM + PER_ITEM, PER_ITEM)):
        if n in wanted:
            picked.append(item)
    year = {"year": "2012"}
    queries: list[dict[str, Any]] = []
    for kind, texts in (("common word", COMMON_WORDS), ("two words", TWO_WORDS), ("phrase", PHRASES)):
        queries += [{"kind": kind, "text": t, "filters": {}} for t in texts]
        queries += [{"kind": kind, "text": t, "filters": year} for t in texts]
    for item in picked[:4]:
        for kind, text in (
            ("name", item.fields["policyholder"]),
            ("policy number", item.fields["policy_number"]),
        ):
            queries.append({"kind": kind, "text": text, "filters": {}})
            queries.append({"kind": kind, "text": text, "filters": {"year": item.fields["year"]}})
    return queries


def cached_query_set(pages: int, path: Path) -> list[dict[str, Any]]:
    """`query_set`, kept beside the index it was picked for (picking walks the corpus up to the
    last item picked: about 5 minutes at 1M pages)."""
    cached = path.with_name("queries.json")
    if cached.exists():
        return list(json.loads(cached.read_text(encoding="utf-8")))
    queries = query_set(pages)
    cached.write_text(json.dumps(queries, ensure_ascii=False), encoding="utf-8")
    return queries


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, int(len(ordered) * share + 0.5) - 1))], 1)


def run_queries(path: Path, queries: list[dict[str, Any]], repeats: int, agreement: int) -> dict[str, Any]:
    """In this process: latency per query kind (with and without filter), top-10 agreement."""
    from pipeline.index.base import SearchQuery
    from pipeline.index.sqlite import SqliteIndex
    from pipeline.security import Access

    access = Access(**SEARCHER)
    index = SqliteIndex(path)
    for q in queries:  # once each, untimed: the page cache warms as it would on a busy server
        index.search(SearchQuery(q["text"], q["filters"], access, facets=True))
    times: dict[str, list[float]] = {}
    cpu_ms: dict[str, list[float]] = {}
    totals = {}
    for _ in range(repeats):
        for q in queries:
            key = f"{q['kind']}, {'filtered' if q['filters'] else 'no filter'}"
            started, cpu = time.perf_counter(), _cpu()
            result = index.search(SearchQuery(q["text"], q["filters"], access, facets=True))
            times.setdefault(key, []).append((time.perf_counter() - started) * 1000)
            cpu_ms.setdefault(key, []).append((_cpu() - cpu) * 1000)
            totals[f"{q['text']} {q['filters'] or ''}".strip()] = result.total_text
    every = [t for values in times.values() for t in values]
    kinds = {
        key: {
            "p50_ms": _percentile(values, 0.5),
            "p95_ms": _percentile(values, 0.95),
            "cpu_ms_mean": round(statistics.mean(cpu_ms[key]), 1),
        }
        for key, values in times.items()
    }
    peak_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # before the check below
    sample = [q for q in queries if not q["filters"]][:agreement] if agreement else []
    same = [top10_agreement(index, q["text"], access) for q in sample]
    index.close()
    return {
        "p50_ms": _percentile(every, 0.5),
        "p95_ms": _percentile(every, 0.95),
        "by_kind": kinds,
        "totals": totals,
        "top10": same,
        "top10_same_pages": sum(s["same_pages"] for s in same),
        "top10_same_scores": sum(s["same_scores"] for s in same),
        "top10_queries": len(same),
        "peak_rss_mb": peak_mb,
    }


def top10_agreement(index: Any, text: str, access: Any) -> dict[str, Any]:
    """Our top 10 against an exhaustive ranking: every match scored with the same formula."""
    from pipeline.index.base import SearchQuery

    query = SearchQuery(text, {}, access)
    ours = index.search(query).hits
    search = index.searcher(query)
    every = search.ids("", 10**9)
    weights = search.weights()
    scored: list[tuple[float, str, int]] = []
    for start in range(0, len(every), 5000):
        chunk = search.load(every[start : start + 5000])
        search.score(chunk, weights)
        scored = sorted(scored + [(-c.score, c.archive_code, c.page) for c in chunk])[:10]
    best = [(code, page) for _, code, page in scored]
    return {
        "query": text,
        "matches": len(every),
        "same_pages": [(h.archive_code, h.page) for h in ours] == best,
        "same_scores": len(ours) == len(scored)
        and all(abs(h.score + s) < 1e-5 for h, (s, _, _) in zip(ours, scored, strict=False)),
        "overlap": len({(h.archive_code, h.page) for h in ours} & set(best)),
    }


SCALE_PAGES = 1_000_000
REFERENCE_PAGES = 100_000  # osmem-server holds everything in memory: the reference runs smaller


def bench(work: Path, quick: bool) -> dict[str, Any]:
    """The search section of `benchmarks.run`: the embedded index at 1M pages (1,000 with
    --quick), and the same queries on the embedded index and osmem-server at 100,000."""
    count = 1000 if quick else SCALE_PAGES
    result = measure(count, work if quick else None, repeats=1 if quick else 5, agreement=2 if quick else 13)
    reference_pages = 1000 if quick else REFERENCE_PAGES
    same = result if quick else measure(reference_pages, None, repeats=3, agreement=0)
    result["reference"] = {
        "pages": reference_pages,
        "sqlite": {k: same["sqlite"][k] for k in ("p50_ms", "p95_ms", "by_kind")},
        "osmem_server": osmem_reference(reference_pages, same["queries"], repeats=1 if quick else 3),
    }
    return result


def measure(pages: int, work: Path | None, repeats: int, agreement: int) -> dict[str, Any]:
    """Build (or reuse the cached) index of `pages` pages and time the queries in a fresh process."""
    path = work / "search" / "index.sqlite" if work else cached_index(pages)
    if not path.exists():
        print(f"search: building the embedded index with {pages} synthetic pages", flush=True)
        in_child("build", str(pages), str(path))
    built = json.loads(path.with_name("build.json").read_text(encoding="utf-8"))
    queries = cached_query_set(pages, path)
    print(f"search: {len(queries)} queries x {repeats} on {pages} pages", flush=True)
    spec = {"queries": queries, "repeats": repeats, "agreement": agreement}
    load = round(os.getloadavg()[0], 1)
    measured = in_child("query", str(path), json.dumps(spec, ensure_ascii=False))
    size = sum(f.stat().st_size for f in path.parent.glob("index.sqlite*"))
    return {
        "pages": pages,
        **{k: v for k, v in built.items() if k != "pages"},
        "index_mb": round(size / 1e6, 1),
        "index_bytes_per_page": round(size / pages),
        "load_before_queries": load,
        "sqlite": {k: v for k, v in measured.items() if k != "peak_rss_mb"},
        "search_process_peak_rss_mb": measured["peak_rss_mb"],
        "queries": queries,
    }


def osmem_reference(pages: int, queries: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """The same pages and queries through our Elasticsearch backend against osmem-server.

    For reference only: an in-memory stand-in on the same 2 cores says nothing about a cluster.
    """
    from elasticsearch import Elasticsearch
    from osmem_server import OsmemServer

    from pipeline.index.base import SearchQuery
    from pipeline.index.elastic import ElasticIndex, PlainJsonNode
    from pipeline.security import Access

    print(f"search: the same {pages} pages into osmem-server (reference)", flush=True)
    access = Access(**SEARCHER)
    with OsmemServer.start(japanese=False) as server:
        client = Elasticsearch(server.url, node_class=PlainJsonNode, request_timeout=600)
        index = ElasticIndex(client, "bench-pages", chunk=2000)
        started = time.perf_counter()
        index.rebuild(items(pages))
        build = time.perf_counter() - started
        times: dict[str, list[float]] = {}
        for _ in range(repeats):
            for q in queries:
                key = f"{q['kind']}, {'filtered' if q['filters'] else 'no filter'}"
                t = time.perf_counter()
                index.search(SearchQuery(q["text"], q["filters"], access, facets=True))
                times.setdefault(key, []).append((time.perf_counter() - t) * 1000)
        index.close()
    every = [t for values in times.values() for t in values]
    return {
        "build_seconds": round(build, 1),
        "p50_ms": _percentile(every, 0.5),
        "p95_ms": _percentile(every, 0.95),
        "by_kind": {
            k: {"p50_ms": _percentile(v, 0.5), "p95_ms": _percentile(v, 0.95)} for k, v in times.items()
        },
    }


def main(argv: list[str]) -> None:
    if argv[0] == "build":
        print(json.dumps(build(int(argv[1]), Path(argv[2]))))
    elif argv[0] == "query":
        spec = json.loads(argv[2])
        print(json.dumps(run_queries(Path(argv[1]), spec["queries"], spec["repeats"], spec["agreement"])))


def in_child(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.search", *args], capture_output=True, text=True, cwd=ROOT
    )
    if result.returncode != 0:
        raise RuntimeError(f"search benchmark child failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "samples"))
    main(sys.argv[1:])
