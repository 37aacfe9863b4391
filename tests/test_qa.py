"""QA staff work the queue through `capture qa`; decisions change what searchers can find."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.index.base import SearchQuery
from pipeline.index.sqlite import SqliteIndex
from tests.conftest import import_catalogue, make_settings

pytestmark = pytest.mark.slow
TEXTS = {"Q-0001": "第一件退保申请材料", "Q-0002": "第二件变更申请材料", "Q-0003": "第三件参保登记材料"}


@pytest.fixture(scope="module")
def qa_home(tmp_path_factory, samples_module, prefect_harness):  # type: ignore[no-untyped-def]
    from pipeline.flows.batch import run_batch

    root = tmp_path_factory.mktemp("qa")
    batch = root / "batch"
    for n, (code, text) in enumerate(TEXTS.items()):
        (batch / code).mkdir(parents=True)
        samples_module.render_page("申请书", [text], [], size_mm=(148, 105), seed=n).save(
            batch / code / "0001.png", dpi=(300, 300)
        )
    catalogue = root / "catalogue.csv"
    catalogue.write_text("档号,页数\r\nQ-0001,2\r\nQ-0002,3\r\nQ-0003,2\r\n", encoding="utf-8")
    settings = make_settings(root / "home")
    import_catalogue(settings, catalogue)
    report = run_batch(batch, settings)
    assert report["totals"]["waiting_for_qa"] == 3
    return settings


def _capture(settings, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "CAPTURE_HOME": str(settings.home_dir), "CAPTURE_USER": "qa.zhang"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _visible(settings, text: str) -> bool:  # type: ignore[no-untyped-def]
    index = SqliteIndex(settings.index_path)
    try:
        return bool(index.search(SearchQuery(text)).hits)
    finally:
        index.close()


def test_every_flagged_item_is_in_the_queue_and_hidden(qa_home) -> None:  # type: ignore[no-untyped-def]
    listed = json.loads(_capture(qa_home, "qa", "list", "--json").stdout)
    assert sorted(c["archive_code"] for c in listed) == ["Q-0001", "Q-0002", "Q-0003"]
    assert all(c["findings"] == ["page_count_mismatch"] for c in listed)
    assert not any(_visible(qa_home, t) for t in TEXTS.values())
    shown = json.loads(_capture(qa_home, "qa", "show", "Q-0001", "--json").stdout)
    assert shown["catalogue"]["page_count"] == 2 and shown["qa_status"] == "open"
    assert shown["pages"][0]["dpi"] == 300 and Path(shown["thumbnails"][0]).exists()
    assert Path(shown["pdf"]).exists()


def test_a_decision_needs_a_reason(qa_home) -> None:  # type: ignore[no-untyped-def]
    result = _capture(qa_home, "qa", "approve", "Q-0001", "--reason", "  ")
    assert result.returncode == 5 and "reason is required" in result.stderr
    assert not _visible(qa_home, TEXTS["Q-0001"])


def test_approve_makes_the_item_searchable(qa_home) -> None:  # type: ignore[no-untyped-def]
    result = _capture(
        qa_home, "qa", "approve", "Q-0001", "--reason", "second page is on the back of the first"
    )
    assert result.returncode == 0, result.stderr
    assert "searchable" in result.stdout
    assert _visible(qa_home, TEXTS["Q-0001"])
    shown = json.loads(_capture(qa_home, "qa", "show", "Q-0001", "--json").stdout)
    assert shown["decisions"][0]["user"] == "qa.zhang" and shown["decisions"][0]["action"] == "approve"
    again = _capture(qa_home, "qa", "approve", "Q-0001", "--reason", "twice")
    assert again.returncode == 5 and "no open QA case" in again.stderr
    log = (qa_home.archive_dir / "Q-0001" / "decisions.jsonl").read_text(encoding="utf-8")
    assert "second page is on the back" in log


def test_rescan_keeps_the_item_out_of_search(qa_home) -> None:  # type: ignore[no-untyped-def]
    result = _capture(
        qa_home, "qa", "rescan", "Q-0002", "--reason", "pages 2 and 3 missing", "--user", "qa.li"
    )
    assert result.returncode == 0, result.stderr
    assert not _visible(qa_home, TEXTS["Q-0002"])
    closed = json.loads(_capture(qa_home, "qa", "list", "--status", "rescan", "--json").stdout)
    assert [c["archive_code"] for c in closed] == ["Q-0002"]


def test_correcting_the_page_count_reverifies_and_releases(qa_home) -> None:  # type: ignore[no-untyped-def]
    wrong = _capture(qa_home, "qa", "correct", "Q-0003", "--pages", "5", "--reason", "typo in the catalogue")
    assert wrong.returncode == 0 and "still open: page_count_mismatch" in wrong.stdout
    assert not _visible(qa_home, TEXTS["Q-0003"])
    right = _capture(
        qa_home, "qa", "correct", "Q-0003", "--pages", "1", "--reason", "catalogue counted the cover"
    )
    assert right.returncode == 0 and "case corrected" in right.stdout
    assert _visible(qa_home, TEXTS["Q-0003"])
    from pipeline.store import Store

    store = Store(qa_home.state_url)
    assert store.catalogue_entry("Q-0003").page_count == 1  # type: ignore[union-attr]
    decisions = store.decisions("Q-0003")
    assert [d.details["page_count_after"] for d in decisions] == [5, 1]  # type: ignore[index]
    assert {a.action for a in store.audit_log()} >= {"qa.approve", "qa.rescan", "qa.correct", "qa.view"}
    assert store.open_case("Q-0003") is None and len(store.cases()) == 0
    store.close()


def test_correct_without_an_open_case_changes_nothing(qa_home) -> None:  # type: ignore[no-untyped-def]
    from pipeline.store import Store

    result = _capture(qa_home, "qa", "correct", "Q-0001", "--pages", "9", "--reason", "after approval")
    assert result.returncode == 5 and "no open QA case" in result.stderr
    store = Store(qa_home.state_url)
    assert store.catalogue_entry("Q-0001").page_count == 2  # type: ignore[union-attr]
    store.close()
