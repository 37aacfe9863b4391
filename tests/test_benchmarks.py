"""One quick run of the benchmark script on tiny inputs, so it cannot rot. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_benchmark_script_runs_on_tiny_input(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["throughput"]["pages"] == 2 and data["throughput"]["ratio_vs_bare_flow"] > 0
    rest = data["throughput"].get("start_and_rest")
    assert rest is None or rest["one_page_wall_seconds"] > 0
    assert data["memory"]["ratio_large_to_small"] > 0
    assert data["search"]["pages"] == 1000 and data["search"]["sqlite"]["p50_ms"] > 0
    assert data["deskew"]["ours"]["max_residual_deg"] <= 0.1
    assert data["cold"]["search_wall_median_s"] > 0 and data["cold"]["import_ms"] > 0
    bilevel = data["storage"]["ours"]["bilevel-tiff"]
    assert bilevel["filter"] == "/CCITTFaxDecode" and bilevel["pdfa_valid"] and bilevel["bytes_per_page"] > 0
    assert data["storage"]["ours"]["grey-jpeg"]["image_streams_are_the_source_files"]
    if "skipped" not in data["quality"]:
        assert data["quality"]["rapidocr"]["recall"] > 0.5
    assert "Archive Capture benchmarks" in result.stdout
