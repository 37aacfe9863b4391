"""The two backends on the processed sample batch, and Elasticsearch indexing through an outage."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from pipeline.index.base import SearchQuery, open_backend
from pipeline.progress import ItemOutcome, set_observer
from pipeline.reindex import load_item, reindex_all, reindex_pending
from pipeline.security import FULL_ACCESS, Access
from pipeline.store import Store
from tests.conftest import es_settings, make_settings
from tests.netfault import Forwarder

QUERIES = [
    "理赔申请",
    "理賠申請",
    "保险",
    "投保",
    "险",
    "王建国",
    "陳志明",
    "P2012-000123",
    "p2014",
    "变更申请",
    "社会保险",
    "参保登记",
    "身份证",
    "医疗",
    "签名 日期",
]


def _copy_home(settings, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    shutil.copytree(settings.home_dir, home, ignore=shutil.ignore_patterns("prefect"))
    return home


def _page_set(index, text: str, access: Access) -> set[tuple[str, int]]:  # type: ignore[no-untyped-def]
    result = index.search(SearchQuery(text, access=access, limit=100))
    assert result.total == len(result.hits)
    return {(h.archive_code, h.page) for h in result.hits}


def test_both_backends_find_the_same_pages_in_the_sample_batch(sample_run, osmem_clone, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings, _, _ = sample_run
    home = _copy_home(settings, tmp_path)
    lite_settings = make_settings(home)
    es = es_settings(home, osmem_clone.url, stand_in=True)
    store = Store(lite_settings.state_url)
    lite, elastic = open_backend(lite_settings), open_backend(es)
    try:
        outcome = reindex_all(es, elastic, store)
        assert outcome.items == 4 and not outcome.skipped
        assert elastic.count_pages() == lite.count_pages() == outcome.pages
        found_any = 0
        for text in QUERIES:
            for access in (Access(), FULL_ACCESS, Access(clearance=1)):
                same = _page_set(lite, text, access)
                assert same == _page_set(elastic, text, access), (text, access)
                found_any += bool(same)
            a = lite.search(SearchQuery(text, facets=True))
            b = elastic.search(SearchQuery(text, facets=True))
            assert a.total == b.total and {k: dict(v) for k, v in a.facets.items()} == {
                k: dict(v) for k, v in b.facets.items()
            }, text
        assert found_any >= 30  # the queries do find pages: this compares real answers
        held = _page_set(elastic, "参保登记", FULL_ACCESS) - _page_set(elastic, "参保登记", Access())
        assert {code for code, _ in held} == {"SB02-2015-CB-D30-0004"}  # waiting for QA: hidden
    finally:
        lite.close()
        elastic.close()
        store.close()


class StopAfterFirstItem:
    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.done: list[str] = []

    def batch_started(self, batch_id: str, items: int, pages: int) -> None: ...

    def item_started(self, archive_code: str, pages: int) -> None: ...

    def page_done(self, archive_code: str) -> None: ...

    def item_done(self, item: ItemOutcome) -> None:
        self.done.append(item.archive_code)
        if len(self.done) == 1:
            self.forwarder.stop()


def test_indexing_survives_the_search_server_going_away_mid_batch(sample_run, osmem_clone, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.flows.batch import run_batch

    settings, first, batch = sample_run
    home = _copy_home(settings, tmp_path)
    target = urlparse(osmem_clone.url)
    forwarder = Forwarder(target.hostname or "127.0.0.1", target.port or 80)
    forwarder.start()
    es = es_settings(
        home, forwarder.url, stand_in=True, max_retries=1, backoff_seconds=0.05, request_timeout=5
    )
    expected = {code: n for code, n in _indexed_pages(make_settings(home)).items()}
    watcher = StopAfterFirstItem(forwarder)
    set_observer(watcher)
    try:
        report = run_batch(batch, es)
    finally:
        set_observer(None)
    assert len(watcher.done) == 4
    missing = {entry["archive_code"] for entry in report["not_indexed"]}
    assert missing == set(watcher.done[1:]) and report["totals"]["not_indexed"] == 3
    assert all("not reachable" in e["reason"] or "failed" in e["reason"] for e in report["not_indexed"])
    store = Store(es.state_url)
    try:
        assert {p.archive_code for p in store.index_pending()} == missing
        assert (home / "archive" / watcher.done[2]).is_dir()  # packaged and kept all along
        forwarder.start()  # the server is back
        index = open_backend(es)
        try:
            assert index.count_pages() == expected[watcher.done[0]]
            outcome = reindex_pending(es, index, store)
            assert outcome.items == 3 and not outcome.still_pending
            assert store.index_pending() == []
            for _ in range(2):  # again, and the whole batch again: nothing doubles
                reindex_pending(es, index, store)
            run_batch(batch, es)
            assert {c: index.count_pages(c) for c in expected} == expected
            assert index.count_pages() == sum(expected.values())
        finally:
            index.close()
    finally:
        store.close()
        forwarder.stop()


def _indexed_pages(settings) -> dict[str, int]:  # type: ignore[no-untyped-def]
    index = open_backend(settings)
    try:
        codes = [p.name for p in settings.archive_dir.iterdir() if not p.name.startswith(".")]
        return {code: index.count_pages(code) for code in codes}
    finally:
        index.close()


@pytest.mark.parametrize("flag", ["--pending", None])
def test_reindex_command_rebuilds_from_the_archive(sample_run, osmem_clone, tmp_path, flag) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    settings, _, _ = sample_run
    home = _copy_home(settings, tmp_path)
    es = es_settings(home, osmem_clone.url, stand_in=True)
    env = {
        **os.environ,
        "CAPTURE_HOME": str(home),
        "CAPTURE_INDEX__BACKEND": "elasticsearch",
        "CAPTURE_INDEX__ELASTICSEARCH__HOSTS": f'["{osmem_clone.url}"]',
        "CAPTURE_INDEX__ELASTICSEARCH__ALIAS": es.index.elasticsearch.alias,
        "CAPTURE_INDEX__ELASTICSEARCH__PLAIN_JSON": "true",
    }
    args = [sys.executable, "-m", "pipeline.cli", "reindex"] + ([flag] if flag else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    if flag:
        assert "Re-indexed 0 items" in done.stdout  # nothing was marked
        return
    assert "Re-indexed 4 items" in done.stdout
    found = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "search", "理赔申请", "--json", "--facets"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = __import__("json").loads(found.stdout)
    assert data["hits"][0]["archive_code"] == "BX01-2014-LP-D6-0003" and data["facets"]["year"]
    store = Store(es.state_url)
    try:
        audit = store.audit_log("search")[-1]
        assert audit.target == "理赔申请" and audit.details and audit.details["backend"] == "elasticsearch"
    finally:
        store.close()


def test_changes_made_while_a_rebuild_runs_are_not_lost(sample_run, osmem_clone, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A batch and a QA decision write through the alias into the index being replaced."""
    import json
    import time

    settings, _, _ = sample_run
    home = _copy_home(settings, tmp_path)
    es = es_settings(home, osmem_clone.url, stand_in=True)
    store = Store(es.state_url)
    first = sorted(p for p in es.archive_dir.iterdir() if not p.name.startswith("."))[0]
    held = "SB02-2015-CB-D30-0004"
    rebuilder, writer = open_backend(es), open_backend(es)  # writer: a batch running meanwhile
    seen: list[str] = []

    def meanwhile(code: str) -> None:
        seen.append(code)
        if len(seen) != 4:
            return
        # the first item was already read into the new index; a rescan of it lands now
        record_path = first / "record.json"
        record = json.loads(record_path.read_text(encoding="utf-8"))
        record["pages"][0]["lines"].append({"text": "重建期间补扫页", "box": [0, 0, 10, 10], "confidence": 1})
        record_path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        writer.index_item(load_item(first, store))
        # and QA approves the held item
        store.decide(held, "approve", "checked against the paper file", "qa1", close_as="approved")
        writer.set_visible(held, True)

    try:
        reindex_all(es, writer, store)  # an index to replace, with the alias on it
        outcome = reindex_all(es, rebuilder, store, tick=meanwhile)
        assert outcome.items == 4 and sorted(outcome.caught_up) == sorted([first.name, held])
        hits = rebuilder.search(SearchQuery("重建期间补扫页")).hits
        assert [(h.archive_code, h.page) for h in hits] == [(first.name, 1)]
        assert {h.archive_code for h in rebuilder.search(SearchQuery("参保登记")).hits} >= {held}
        time.sleep(1.5)  # past the mtime slack (coarse timestamps on network shares)
        again = reindex_all(es, rebuilder, store)  # nothing changed since: nothing to catch up
        assert again.caught_up == [] and rebuilder.count_pages() == outcome.pages
    finally:
        rebuilder.close()
        writer.close()
        store.close()
