"""One access decision: QA users limited by clearance and fonds, reclassification reaching search.

Runs on a copy of the processed sample batch, through the same service the web pages, the
API and the CLI use, on both search backends (SQLite and osmem-server through the official
Elasticsearch client).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.access import Action, item_facts, permits
from pipeline.errors import Forbidden, NotFound
from pipeline.index.base import open_backend
from pipeline.reindex import reindex_all
from pipeline.service import ArchiveService
from pipeline.settings import Settings
from pipeline.store import Store
from pipeline.users import principal_of, save_user
from tests.conftest import SAMPLES, es_settings, make_settings

HELD_ITEM = "SB02-2015-CB-D30-0004"  # 公开, fonds SB02, waiting for QA (page count mismatch)
INTERNAL_ITEM = "BX01-2012-CB-D10-0001"  # 内部, fonds BX01, passed
POLICY = "P2012-000123"  # its policy number


def _raise_level(settings: Settings, tmp_path: Path, changes: dict[str, str]) -> Path:
    """A re-export of the sample catalogue with some items' 密级 changed."""
    from pipeline.catalog import read_catalogue

    rows = ["档号,题名,保险合同号,投保人,作业流水号,页数,年度,业务环节,保管期限,密级,盒号,备注"]
    for e in read_catalogue(SAMPLES / "catalogue.csv").entries:
        level = changes.get(e.archive_code, e.security_level)
        rows.append(
            ",".join(
                [
                    e.archive_code,
                    e.title,
                    e.policy_number,
                    e.policyholder,
                    e.job_serial,
                    str(e.page_count),
                    e.year,
                    e.stage,
                    e.retention,
                    level,
                    e.box,
                    e.remarks,
                ]
            )
        )
    path = tmp_path / "catalogue-again.csv"
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    return path


@pytest.fixture(params=["sqlite", "osmem"])
def home(request, sample_run, tmp_path) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    """A copy of the processed sample with QA and search accounts, on each search backend."""
    source, _, _ = sample_run
    home = tmp_path / "home"
    shutil.copytree(source.home_dir, home, ignore=shutil.ignore_patterns("prefect"))
    settings = make_settings(home)
    if request.param == "osmem":
        settings = es_settings(home, request.getfixturevalue("osmem_clone").url, stand_in=True)
    store = Store(settings.state_url)
    accounts = {
        "bx_qa": ("qa", "内部", ["BX01"]),
        "sb_low_qa": ("qa", "内部", ["SB02"]),
        "sb_qa": ("qa", "秘密", ["SB02"]),
        "clerk": ("searcher", "内部", []),
        "boss": ("searcher", "绝密", []),
    }
    for name, (role, clearance, fonds) in accounts.items():
        save_user(store, name, role=role, clearance=clearance, fonds=fonds)
    index = open_backend(settings)
    reindex_all(settings, index, store)
    index.close()
    store.close()
    yield settings


def _who(service: ArchiveService, name: str):  # type: ignore[no-untyped-def]
    row = service.store.user(name)
    assert row is not None
    return principal_of(row)


def test_qa_users_reach_only_cases_within_their_clearance_and_fonds(home, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.cataloguing import import_catalogue

    # the held item of fonds SB02 is raised to 秘密: above sb_low_qa, outside bx_qa's fonds
    import_catalogue(home, _raise_level(home, tmp_path, {HELD_ITEM: "秘密"}), user="registrar")
    service = ArchiveService(home)
    try:
        outsiders = [_who(service, "bx_qa"), _who(service, "sb_low_qa")]
        for who in outsiders:
            queue = service.qa_queue(who, via="test")
            assert queue.rows == [] and queue.total == 0 and queue.kinds == [] and queue.batches == []
            for action in ("approve", "rescan", "correct"):
                with pytest.raises(NotFound) as refused:
                    service.decide(who, HELD_ITEM, action, "outside my reach", pages=2, via="test")
                with pytest.raises(NotFound) as missing:
                    service.decide(who, "SB02-2015-CB-D30-9999", action, "no such item", pages=2, via="test")
                assert str(refused.value).replace(HELD_ITEM, "X") == str(missing.value).replace(
                    "SB02-2015-CB-D30-9999", "X"
                )  # answered exactly like an item that does not exist
            with pytest.raises(NotFound):
                service.qa_case(who, HELD_ITEM, via="test")
            overview = service.batch_overview(who, everything=True, via="test")
            assert overview.waiting == []
            assert all(HELD_ITEM not in json.dumps(line.totals) for line in overview.rows)
        # nothing changed: still open, still hidden, catalogue page count untouched
        assert service.store.open_case(HELD_ITEM) is not None
        assert service.store.item(HELD_ITEM).visible is False  # type: ignore[union-attr]
        entry = service.store.catalogue_entry(HELD_ITEM)
        assert entry is not None and entry.page_count == 3
        refusals = [r for r in service.store.audit_log("qa.decide.refused") if r.target == HELD_ITEM]
        assert {r.user for r in refusals} == {"bx_qa", "sb_low_qa"} and len(refusals) == 6
        # a searcher is not QA staff at all
        with pytest.raises(Forbidden):
            service.qa_queue(_who(service, "clerk"), via="test")
        # the one QA user within reach sees and decides it
        insider = _who(service, "sb_qa")
        assert [r.case.archive_code for r in service.qa_queue(insider, via="test").rows] == [HELD_ITEM]
        outcome = service.decide(insider, HELD_ITEM, "approve", "cover counted twice", via="test")
        assert outcome.visible and outcome.case_status == "approved"
    finally:
        service.close()


def test_a_qa_decision_outside_reach_from_the_cli_is_refused_and_audited(home, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "CAPTURE_HOME": str(home.home_dir)}
    if home.index.backend == "elasticsearch":
        pytest.skip("the CLI path is the same service; one backend is enough here")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "qa",
            "approve",
            HELD_ITEM,
            "--reason",
            "x",
            "--user",
            "bx_qa",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 9 and "no item" in run.stderr and "Traceback" not in run.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "qa", "list", "--json", "--as-user", "bx_qa"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    store = Store(home.state_url)
    try:
        assert store.open_case(HELD_ITEM) is not None
        assert [r.user for r in store.audit_log("qa.decide.refused")] == ["bx_qa"]
    finally:
        store.close()


def _found(service: ArchiveService, who_name: str, text: str) -> set[str]:
    result = service.search(_who(service, who_name), text, {}, via="test")
    return {h.archive_code for h in result.hits}


def test_a_reclassified_item_leaves_search_before_the_import_returns(home, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.cataloguing import import_catalogue

    service = ArchiveService(home)
    try:
        assert INTERNAL_ITEM in _found(service, "clerk", POLICY)
        before = service.search(_who(service, "clerk"), "投保", {}, via="test")
        assert any(h.fields.get("policyholder") == "王建国" for h in before.hits)
    finally:
        service.close()
    outcome = import_catalogue(home, _raise_level(home, tmp_path, {INTERNAL_ITEM: "绝密"}), user="registrar")
    assert outcome.refreshed == [INTERNAL_ITEM] and not outcome.not_indexed
    service = ArchiveService(home)
    try:
        clerk = _who(service, "clerk")
        for text in (POLICY, "投保", "人身保险", "王建国"):
            result = service.search(clerk, text, {}, via="test")
            assert INTERNAL_ITEM not in {h.archive_code for h in result.hits}, text
            assert "王建国" not in json.dumps([h.to_dict() for h in result.hits], ensure_ascii=False)
        with pytest.raises(NotFound):
            service.open_item(clerk, INTERNAL_ITEM, via="test")
        assert INTERNAL_ITEM in _found(service, "boss", POLICY)
        facts = item_facts(service.store, INTERNAL_ITEM)
        assert facts is not None and facts.security_rank == 4
        assert not permits(clerk, facts, Action.VIEW)
    finally:
        service.close()
    # a full rebuild from the archive keeps the new level (the record.json still says 内部)
    store = Store(home.state_url)
    index = open_backend(home)
    reindex_all(home, index, store)
    index.close()
    store.close()
    service = ArchiveService(home)
    try:
        assert INTERNAL_ITEM not in _found(service, "clerk", POLICY)
        assert INTERNAL_ITEM in _found(service, "boss", POLICY)
    finally:
        service.close()


def test_a_level_nobody_recognises_hides_its_item_and_the_batch_goes_on(
    tmp_path, samples_module, prefect_harness
) -> None:  # type: ignore[no-untyped-def]
    """'²' (or any value an older version stored) ranks highest: no crash, no lower level."""
    from pipeline.flows.batch import run_batch
    from pipeline.models import CatalogueEntry

    batch = tmp_path / "batch"
    texts = {"L-0001": "上标密级的档案", "L-0002": "后面的内部档案", "L-0003": "最后的公开档案"}
    for n, (code, text) in enumerate(texts.items()):
        (batch / code).mkdir(parents=True)
        samples_module.render_page("业务单", [text], [], size_mm=(148, 105), seed=n).save(
            batch / code / "0001.png", dpi=(300, 300)
        )
    settings = make_settings(tmp_path / "home")
    store = Store(settings.state_url)
    levels = {"L-0001": "²", "L-0002": "内部", "L-0003": ""}
    store.import_catalogue(
        [CatalogueEntry(code, 1, security_level=level) for code, level in levels.items()], "old-version"
    )
    save_user(store, "clerk", role="searcher", clearance="机密")
    save_user(store, "boss", role="searcher", clearance="绝密")
    store.close()
    report = run_batch(batch, settings)
    assert [i["archive_code"] for i in report["items"]] == list(texts)
    assert all(i["verdict"] == "passed" for i in report["items"])
    service = ArchiveService(settings)
    try:
        assert service.store.batch(report["batch_id"]).status == "done"  # type: ignore[union-attr]
        clerk, boss = _who(service, "clerk"), _who(service, "boss")
        for code in ("L-0001", "L-0003"):  # '²' and an empty cell: both 绝密
            with pytest.raises(NotFound):
                service.open_item(clerk, code, via="test")
            assert service.open_item(boss, code, via="test").archive_code == code
        assert service.open_item(clerk, "L-0002", via="test").archive_code == "L-0002"
        assert _found(service, "clerk", "档案") == {"L-0002"}
        assert _found(service, "boss", "档案") == set(texts)
    finally:
        service.close()
