"""A pipeline run in its own process, reporting its flow time and its peak resident memory."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path


def main() -> None:
    _, command, batch, catalogue = sys.argv
    assert command == "run"
    os.environ.setdefault("PREFECT_HOME", str(Path(os.environ["CAPTURE_HOME"]) / "prefect"))
    from pipeline.catalog import read_catalogue
    from pipeline.flows.batch import run_batch
    from pipeline.settings import load_settings
    from pipeline.store import Store

    settings = load_settings()
    settings.ensure_dirs()
    store = Store(settings.state_url)
    store.import_catalogue(read_catalogue(Path(catalogue)).entries, catalogue)
    store.close()
    report = run_batch(Path(batch), settings)
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = own.ru_maxrss
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    print(
        json.dumps(
            {
                "seconds": report["totals"]["seconds"],
                "pages": report["totals"]["pages"],
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "cpu_seconds": round(cpu, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
