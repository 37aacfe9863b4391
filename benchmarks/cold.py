"""A cold `capture search`: a fresh process answering one query on the sample index.

Timed against a bare `python -c pass` and `python -c "import pipeline"` in the same run,
alternating so that the machine's other work falls on all three alike; wall and CPU seconds of
each run, median and best, the load average beside them, and how much of the search process
is imports (`-X importtime`, the top-level imports added up, with the largest packages).

The first search (not timed) loads the settings in full and leaves their snapshot in the home
folder (pipeline/settingsnap.py), as the first search after any change of the settings does;
the timed ones use it. Whether our own modules had bytecode on disk is recorded (`make setup`
compiles it; an editable install under PYTHONDONTWRITEBYTECODE=1 compiles them on every start).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUERY = "理赔申请"
TARGET_SECONDS = 0.3


def _capture() -> list[str]:
    """The installed `capture` script when there is one (what people run), else `-m pipeline.cli`."""
    script = Path(sys.executable).parent / "capture"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def sample_home(home: Path, quick: bool) -> None:
    """The sample batch processed into `home`; in a quick run its texts are indexed directly
    (no OCR, no Prefect): the same 12 pages' worth of index, made in a second."""
    env = {**os.environ, "CAPTURE_HOME": str(home)}
    if not quick:
        subprocess.run(
            [*_capture(), "run", "samples/batch", "--catalogue", "samples/catalogue.csv"],
            check=True,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        return
    sys.path.insert(0, str(ROOT / "samples"))
    import make_samples

    from pipeline.index.base import IndexItem, IndexPage
    from pipeline.index.sqlite import SqliteIndex
    from pipeline.store import Store

    index = SqliteIndex(home / "index.sqlite")
    for item in make_samples.ITEMS:
        _, paragraphs = make_samples.TEXTS[item.text]
        pages = tuple(IndexPage(p + 1, text) for p, text in enumerate(paragraphs))
        index.index_item(IndexItem(item.archive_code, item.title, {"year": item.year}, pages))
    index.close()
    Store(home / "state.sqlite", home=home).close()


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (the child's user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_profile(command: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    """Milliseconds spent importing in a run of `command` (a python -m command), by package: each
    module's own import time at its best of `runs` runs (a busy machine inflates single runs)."""
    best: dict[str, int] = {}
    for _ in range(runs):
        command_line = [sys.executable, "-X", "importtime", *command]
        result = subprocess.run(command_line, env=env, capture_output=True, text=True, check=True)
        for line in result.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            own, _cumulative, name = line.removeprefix("import time:").split("|")
            best[name.strip()] = min(best.get(name.strip(), 1 << 62), int(own))
    by_package = Counter[str]()
    for name, microseconds in best.items():
        by_package[name.split(".")[0]] += microseconds
    return {
        "import_ms": round(sum(best.values()) / 1000),
        "largest_ms": {name: round(us / 1000) for name, us in by_package.most_common(8)},
    }


def bench_cold_search(work: Path, quick: bool) -> dict[str, Any]:
    home = work / "cold-home"
    sample_home(home, quick)
    env = {**os.environ, "CAPTURE_HOME": str(home)}
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import pipeline'": [sys.executable, "-c", "import pipeline"],
        f"capture search {QUERY}": [*_capture(), "search", QUERY],
    }
    subprocess.run(commands[f"capture search {QUERY}"], check=True, env=env, stdout=subprocess.DEVNULL)
    repeats = 3 if quick else 15
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):  # alternating, so that a busy moment falls on all of them
        for name, command in commands.items():
            runs[name].append(_timed(command, env))
        load.append(os.getloadavg()[0])
    result: dict[str, Any] = {
        "query": QUERY,
        "index": "sample texts, indexed directly" if quick else "samples/batch processed by capture run",
        "repeats": repeats,
        "load_1min": [round(min(load), 2), round(max(load), 2)],
        "cores": os.cpu_count(),
    }
    for name, values in runs.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        result[name] = {
            "wall_median_s": round(statistics.median(walls), 3),
            "wall_best_s": round(min(walls), 3),
            "cpu_median_s": round(statistics.median(cpus), 3),
            "cpu_best_s": round(min(cpus), 3),
        }
    search = result[f"capture search {QUERY}"]
    bare = result["python -c pass"]
    result["search_wall_median_s"] = search["wall_median_s"]
    result["search_over_bare_python_wall"] = round(search["wall_median_s"] / bare["wall_median_s"], 1)
    result["target_s"] = TARGET_SECONDS
    from importlib.util import cache_from_source

    result["our_bytecode_on_disk"] = Path(
        cache_from_source(str(ROOT / "pipeline" / "cli" / "search.py"))
    ).exists()
    result["settings_snapshot_used"] = (home / "settings-snapshot.json").exists()
    result.update(import_profile(["-m", "pipeline.cli", "search", QUERY], env, 1 if quick else 5))
    return result


def cold_rows(c: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows for benchmarks.run's table."""
    search, bare = c[f"capture search {QUERY}"], c["python -c pass"]
    package = c["python -c 'import pipeline'"]
    return [
        (
            f"cold `capture search` s, median / best of {c['repeats']} (load {c['load_1min']})",
            f"{search['wall_median_s']} / {search['wall_best_s']} (CPU {search['cpu_median_s']})",
            f"python -c pass {bare['wall_median_s']}; import pipeline {package['wall_median_s']}",
            str(c["search_over_bare_python_wall"]),
            f"<= {c['target_s']} s",
        ),
        (
            "cold search: imports ms, each module at its best run (largest packages)",
            str(c["import_ms"]),
            ", ".join(f"{k} {v}" for k, v in list(c["largest_ms"].items())[:5]),
            "-",
            "-",
        ),
    ]
