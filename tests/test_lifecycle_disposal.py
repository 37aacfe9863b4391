"""Appraisal and disposal end to end: a list of the items due (XLSX for the committee), decisions,
the two-person rule, nothing touched before approval, execution that removes the PDFs from the
archive, the registered copy and search (SQLite and the Elasticsearch stand-in), the tombstone
kept, and a second execution that changes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from openpyxl import load_workbook

from pipeline import disposal
from pipeline.access import Principal
from pipeline.index import SearchQuery, open_backend
from pipeline.reindex import reindex_all
from pipeline.store import Store
from tests.conftest import es_settings, make_settings
from tests.test_lifecycle_fixity import PDF_ITEM, THIRD, capture, copy_home

HELD = "SB02-2015-CB-D30-0004"
NO_DATE = "BX01-2013-BQ-D10-0002"
CATALOGUE = (
    "档号,题名,页数,年度,业务环节,保管期限,密级,盒号,合同终止日期,形成日期\r\n"
    f"{PDF_ITEM},人身保险投保单,4,2012,承保,合同终止后10年,内部,B001,2013-05-01,\r\n"
    f"{NO_DATE},保全变更申请书,2,2013,保全,合同终止后10年,内部,B001,,\r\n"
    f"{THIRD},理赔申请书,3,2014,理赔,合同终止后6年,秘密,B002,2015/6/30,\r\n"
    f"{HELD},社会保险参保登记表,3,2015,参保,文件形成后6年,公开,B003,,2015年11月3日\r\n"
)


def prepare(home: Path, tmp_path: Path) -> Path:
    path = tmp_path / "dates.csv"
    path.write_bytes(CATALOGUE.encode("gbk"))
    assert capture(home, "catalogue", "import", str(path)).returncode == 0
    for name in ("ann", "bob"):
        assert (
            capture(home, "user", "add", name, "--role", "appraiser", "--clearance", "绝密").returncode == 0
        )
    return path


def snapshot(home: Path, *roots: Path) -> dict[str, str]:
    """Every file under the roots with its SHA-256, and the state database's lifecycle rows."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    store = Store(make_settings(home).state_url)
    try:
        found["lists"] = repr(
            [(r.id, r.status, r.approved_by, r.executed_at) for r in store.disposal_lists()]
        )
        found["tombstones"] = repr([(t.id, t.archive_code, t.destroyed) for t in store.tombstones()])
        found["items"] = repr([(i.archive_code, i.pdf_sha256, i.visible) for i in store.items()])
    finally:
        store.close()
    return found


def test_disposal_from_list_to_tombstone(sample_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = copy_home(sample_run, tmp_path / "home")
    copy = tmp_path / "offsite"
    prepare(home, tmp_path)
    assert capture(home, "replicate", "--to", str(copy)).returncode == 0
    due = capture(home, "retention", "due", "--by", "2025")
    assert due.returncode == 0 and f"no due date: {NO_DATE}" in due.stderr

    made = capture(home, "disposal", "list", "--due-by", "2025")
    assert made.returncode == 0, made.stderr
    assert "disposal list 1: 3 items" in made.stdout and f"no due date: {NO_DATE}" in made.stderr
    book = load_workbook(home / "reports" / "disposal-list-1.xlsx", read_only=True)
    rows = list(book["鉴定清册"].iter_rows(values_only=True))
    assert rows[0][:4] == ("序号", "档号", "题名", "保险合同号") and "到期日期" in rows[0]
    listed = {r[1]: r for r in rows[1:]}
    assert set(listed) == {PDF_ITEM, THIRD, HELD} and "2021-06-30" in listed[THIRD]
    assert [r[0] for r in book["无法计算到期日"].iter_rows(min_row=2, values_only=True)] == [NO_DATE]
    assert capture(home, "disposal", "list", "--due-by", "2025").stdout.startswith("no archived item is due")

    def decide(code: str, decision: str, *extra: str, user: str = "ann") -> int:
        args = ["disposal", "decide", "1", code, "--decision", decision, "--reason", "appraised", *extra]
        return capture(home, *args, "--user", user).returncode

    assert decide(THIRD, "destroy") == 0 and decide(HELD, "keep", "--years", "5") == 0
    assert decide(PDF_ITEM, "destroy", user="operator") == 7  # not an account with the appraiser role
    assert decide(PDF_ITEM, "permanent") == 0
    before = snapshot(home, home / "archive", copy)
    early = capture(home, "disposal", "execute", "1", "--witness", "王五")
    assert early.returncode == 12 and "not approved; nothing was touched" in early.stderr
    own = capture(home, "disposal", "approve", "1", "--user", "ann")
    assert own.returncode == 12 and "two-person rule" in own.stderr
    assert snapshot(home, home / "archive", copy) == before  # nothing on an unapproved list was touched

    assert capture(home, "disposal", "approve", "1", "--user", "bob").returncode == 0
    assert decide(THIRD, "keep", "--years", "1") == 12  # decisions are final once approved
    done = capture(home, "disposal", "execute", "1", "--witness", "王五")
    assert done.returncode == 0, done.stderr
    assert "1 items destroyed" in done.stdout and "2 kept" in done.stdout
    for root in (home / "archive", copy):
        assert not (root / THIRD).exists() and (root / PDF_ITEM / f"{PDF_ITEM}.pdf").is_file()
        assert (root / ".disposed" / f"{THIRD}.json").is_file()
    found = capture(home, "search", "理赔申请", "--json")
    assert found.returncode == 0 and THIRD not in found.stdout
    assert capture(home, "fixity", "check").returncode == 0  # the archive is whole without it
    assert capture(home, "fixity", "check", "--copy", str(copy)).returncode == 0
    store = Store(make_settings(home).state_url)
    try:
        (tomb,) = store.tombstones(THIRD)
        assert tomb.approved_by == "bob" and tomb.witness == "王五" and tomb.executed_by == "operator"
        assert tomb.catalogue["title"] == "理赔申请书" and tomb.decisions[0]["user"] == "ann"
        places = {(d["where"], d["path"]) for d in tomb.destroyed}
        assert ("archive", f"{THIRD}/{THIRD}.pdf") in places and any(w.startswith("copy ") for w, _ in places)
        assert all(len(d["sha256"]) == 64 for d in tomb.destroyed)
        item = store.item(THIRD)
        assert item is not None and item.pdf_sha256 is None and not item.visible
        decisions = store.retention_decisions()
        assert decisions[HELD][0] == "keep" and decisions[PDF_ITEM][0] == "permanent"
    finally:
        store.close()

    after = snapshot(home, home / "archive", copy)
    again = capture(home, "disposal", "execute", "1", "--witness", "someone else")
    assert again.returncode == 0 and "nothing was changed" in again.stdout
    assert snapshot(home, home / "archive", copy) == after
    gone = capture(home, "qa", "show", THIRD)
    assert gone.returncode == 9


def test_execution_takes_items_out_of_the_elasticsearch_index_too(  # type: ignore[no-untyped-def]
    sample_run, osmem_clone, tmp_path: Path
) -> None:
    home = copy_home(sample_run, tmp_path / "home")
    prepare(home, tmp_path)
    settings = es_settings(home, osmem_clone.url, stand_in=True)
    store = Store(settings.state_url)
    try:
        index = open_backend(settings)
        reindex_all(settings, index, store)
        assert index.count_pages(THIRD) == 3
        made = disposal.create_list(settings, store, 2025, user="maker")
        assert made.row is not None
        ann, bob = Principal("ann", "appraiser", 4, ()), Principal("bob", "admin", 4, ())
        searcher = Principal("clerk", "searcher", 4, ())
        with pytest.raises(Exception, match="appraisers"):
            disposal.decide(store, searcher, made.row.id, THIRD, "destroy", "x")
        for code in (PDF_ITEM, HELD):
            disposal.decide(store, ann, made.row.id, code, "permanent", "keep it")
        disposal.decide(store, bob, made.row.id, THIRD, "destroy", "expired")
        with pytest.raises(Exception, match="two-person"):
            disposal.approve(store, bob, made.row.id)  # bob decided one of them
        disposal.approve(store, Principal("cai", "appraiser", 4, ()), made.row.id)
        disposal.execute(settings, store, made.row.id, user="op", witness="w")
        assert index.count_pages(THIRD) == 0 and index.count_pages(PDF_ITEM) > 0
        hits = index.search(SearchQuery("理赔申请")).hits
        assert THIRD not in {h.archive_code for h in hits}
        embedded = open_backend(settings, "sqlite")  # the embedded index left from before is emptied too
        assert embedded.count_pages(THIRD) == 0 and embedded.count_pages(PDF_ITEM) > 0
        embedded.close()
        index.close()
    finally:
        store.close()
