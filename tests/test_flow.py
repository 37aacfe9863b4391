"""The whole batch through the real Prefect flow: samples, re-runs and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pikepdf
import pikepdf.pdfa
import pytest

from pipeline.errors import BatchError
from pipeline.index.base import SearchQuery
from pipeline.index.sqlite import SqliteIndex
from pipeline.security import FULL_ACCESS
from tests.conftest import import_catalogue, items_by_code, make_settings

pytestmark = pytest.mark.slow


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_sample_batch_items_and_verdicts(sample_run) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = sample_run
    items = items_by_code(report)
    assert set(items) == {
        "BX01-2012-CB-D10-0001",
        "BX01-2013-BQ-D10-0002",
        "BX01-2014-LP-D6-0003",
        "SB02-2015-CB-D30-0004",
    }
    assert report["totals"]["pages"] == 12 and report["totals"]["blank_pages"] == 1
    assert items["BX01-2012-CB-D10-0001"]["verdict"] == "passed"
    # the blank page is counted separately and not held against 页数 = 2
    blank_item = items["BX01-2013-BQ-D10-0002"]
    assert blank_item["pages"] == 3 and blank_item["blank_pages"] == 1 and blank_item["verdict"] == "passed"
    assert [f["code"] for f in blank_item["findings"]] == ["blank_page"]
    assert items["BX01-2014-LP-D6-0003"]["verdict"] == "passed"
    mismatch = items["SB02-2015-CB-D30-0004"]
    assert mismatch["verdict"] == "needs_qa"
    finding = next(f for f in mismatch["findings"] if f["code"] == "page_count_mismatch")
    assert "says 3 pages" in finding["message"] and "have 2" in finding["message"]
    assert report["totals"]["straight_through"] == 3 and report["totals"]["waiting_for_qa"] == 1
    assert Path(report["report_path"]).exists()


def test_page_facts_record_rotation_skew_and_blank(sample_run) -> None:  # type: ignore[no-untyped-def]
    settings, _, batch = sample_run
    record = json.loads((settings.archive_dir / "BX01-2013-BQ-D10-0002" / "record.json").read_text())
    pages = record["pages"]
    assert [p["rotation"] for p in pages] == [0, 180, 0]
    assert abs(pages[0]["skew_deg"] - -1.2) <= 0.1 and abs(pages[1]["skew_deg"] - 0.8) <= 0.1
    assert [p["blank"] for p in pages] == [False, False, True]
    source = batch / "BX01-2013-BQ-D10-0002" / "0001.png"
    assert pages[0]["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["catalogue"]["policyholder"] == "李秀英"
    assert record["software"]["pikepdf"] and record["software"]["tesseract"]
    pdf = settings.archive_dir / "BX01-2013-BQ-D10-0002" / "BX01-2013-BQ-D10-0002.pdf"
    assert record["pdf_sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
    manifest = (pdf.parent / "manifest-sha256.txt").read_text()
    assert record["pdf_sha256"] in manifest


def test_every_package_is_valid_pdfa_with_a_text_layer(sample_run) -> None:  # type: ignore[no-untyped-def]
    settings, report, _ = sample_run
    for item in report["items"]:
        pdf = Path(item["pdf"])
        assert item["pdfa_valid"]
        assert pikepdf.pdfa.validate_written(pdf, "2b").passed
        with pikepdf.open(pdf) as doc:
            assert len(doc.pages) == item["pages"]
            assert doc.open_metadata()["dc:identifier"] == item["archive_code"]
        text = subprocess.run(
            ["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert not re.search(r"[\u4e00-\u9fff] +[\u4e00-\u9fff]", text)
    claim = subprocess.run(
        [
            "pdftotext",
            "-f",
            "1",
            "-l",
            "1",
            "-enc",
            "UTF-8",
            str(settings.archive_dir / "BX01-2014-LP-D6-0003" / "BX01-2014-LP-D6-0003.pdf"),
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "理賠申請書" in claim and "P2014-008910" in claim


def test_sample_search_finds_traditional_item_with_simplified_query(sample_run) -> None:  # type: ignore[no-untyped-def]
    settings, _, _ = sample_run
    index = SqliteIndex(settings.index_path)
    hits = index.search(SearchQuery("理赔申请", limit=50)).hits
    assert {h.archive_code for h in hits} == {"BX01-2014-LP-D6-0003"}
    # the enrolment item waits for QA: searchers do not see it, QA staff do
    assert index.search(SearchQuery("参保登记")).hits == []
    assert {h.archive_code for h in index.search(SearchQuery("参保登记", access=FULL_ACCESS)).hits} == {
        "SB02-2015-CB-D30-0004"
    }
    assert {h.archive_code for h in index.search(SearchQuery("P2012-000123")).hits} == {
        "BX01-2012-CB-D10-0001"
    }
    index.close()


def test_an_item_is_one_prefect_task_run_and_an_embedded_run_sends_no_heartbeats(sample_run) -> None:  # type: ignore[no-untyped-def]
    """Prefect's bookkeeping for a batch stays small: one task run an item (finish: verify,
    package, record, index) and the report; no heartbeats from an embedded run (they serve a
    cluster's crash detection, and the flow's end waited for the heartbeat thread)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    _, report, _ = sample_run
    expected = sorted(
        [f"finish {i['archive_code']}" for i in report["items"]] + [f"report {report['batch_id']}"]
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[report["batch_id"]]))
        )
        run = min(runs, key=lambda r: r.created or 0)  # the first (another test runs it again)
        deadline = time.monotonic() + 60  # the server records task runs and events in the background
        while True:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            events = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=["prefect.flow-run.Completed", "prefect.flow-run.heartbeat"]),
                    resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
                ),
                limit=50,
            ).events
            names = [e.event for e in events]
            if (len(tasks) >= len(expected) and "prefect.flow-run.Completed" in names) or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(0.5)
    assert sorted(t.name for t in tasks) == expected
    assert "prefect.flow-run.Completed" in names  # the run's events are recorded...
    assert "prefect.flow-run.heartbeat" not in names  # ...and none of them is a heartbeat


def test_after_a_batch_no_page_is_counted_waiting_and_no_engine_is_lent(sample_run) -> None:  # type: ignore[no-untyped-def]
    """The pool lends an idle engine to a page's line reading only when no page is still to take
    an engine: a count left over by a batch would stop it for good (or start it mid-batch)."""
    from pipeline import process

    settings, _, _ = sample_run
    pool = process.engine_pool(settings)
    assert pool._queued == 0 and pool._lent == 0
    assert pool._idle.qsize() == settings.ocr.workers  # every engine is back


def test_rerunning_the_batch_redoes_nothing_and_duplicates_nothing(sample_run) -> None:  # type: ignore[no-untyped-def]
    from pipeline.flows.batch import run_batch

    settings, first, batch = sample_run
    index = SqliteIndex(settings.index_path)
    before = index.count_pages()
    pdfs = {i["archive_code"]: Path(i["pdf"]).stat().st_mtime_ns for i in first["items"]}
    again = run_batch(batch, settings)
    assert all(item["reused"] for item in again["items"])
    assert {i["archive_code"]: Path(i["pdf"]).stat().st_mtime_ns for i in again["items"]} == pdfs
    assert index.count_pages() == before
    assert {
        h.page
        for h in index.search(
            SearchQuery("保全变更", {"archive_code": "BX01-2013-BQ-D10-0002"}, limit=50)
        ).hits
    } == {1, 2}
    index.close()
    from pipeline.store import Store

    store = Store(settings.state_url)
    assert len(store.findings("SB02-2015-CB-D30-0004")) == 1
    assert len(store.cases()) == 1 and len(store.packages("SB02-2015-CB-D30-0004")) == 1
    store.close()


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory, samples_module, prefect_harness):  # type: ignore[no-untyped-def]
    """A batch full of the bad input the issue lists, around one good item."""
    from pipeline.flows.batch import run_batch

    root = tmp_path_factory.mktemp("bad")
    batch = root / "batch"
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"not yours")
    page = samples_module.render_page("投保单", ["保险合同号P1的投保单。"], [], size_mm=(148, 105), seed=7)
    good = batch / "GOOD-0001"
    good.mkdir(parents=True)
    page.save(good / "0001.png", dpi=(300, 300))
    (good / "0002.png").write_bytes(b"")  # zero bytes
    (good / "0003.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")  # corrupt
    (good / "notes.txt").write_text("scanner notes", encoding="utf-8")  # a text file among images
    locked = pikepdf.new()
    locked.add_blank_page()
    locked.save(good / "0004.pdf", encryption=pikepdf.Encryption(owner="o", user="secret"))
    (batch / "BAD NAME;rm -rf").mkdir()
    (batch / "BAD NAME;rm -rf" / "0001.png").write_bytes(b"x")
    (batch / "x..y").mkdir()
    os.symlink(outside, batch / "ESCAPE-0001")
    (batch / "UNKNOWN-0009").mkdir()
    page.save(batch / "UNKNOWN-0009" / "0001.png")  # no DPI in the file
    catalogue = root / "catalogue.csv"
    catalogue.write_text("档号,页数\r\nGOOD-0001,1\r\n", encoding="utf-8")
    home = root / "home"
    settings = make_settings(home)
    import_catalogue(settings, catalogue)
    before = _tree_digest(root / "batch") | {"outside/secret.png": "kept"}
    report = run_batch(batch, settings)
    return settings, report, batch, before, root


def test_bad_files_become_findings_and_the_rest_goes_on(bad_batch) -> None:  # type: ignore[no-untyped-def]
    _, report, _, _, _ = bad_batch
    good = items_by_code(report)["GOOD-0001"]
    messages = {f["file"]: f["message"] for f in good["findings"] if f["code"] == "unreadable_file"}
    assert "0 bytes" in messages["0002.png"]
    assert "0003.jpg" in messages and "cannot be read" in messages["0003.jpg"]
    assert "not a page image" in messages["notes.txt"]
    assert "password-protected" in messages["0004.pdf"]
    assert good["pages"] == 1 and good["pdfa_valid"] and good["verdict"] == "needs_qa"
    assert not [f for f in good["findings"] if f["code"] == "page_count_mismatch"]


def test_unsafe_folders_are_rejected_by_name(bad_batch) -> None:  # type: ignore[no-untyped-def]
    _, report, _, _, _ = bad_batch
    rejected = {r["folder"]: r["reason"] for r in report["rejected_folders"]}
    assert "not a valid archive code" in rejected["BAD NAME;rm -rf"]
    assert "'..'" in rejected["x..y"]
    assert "symbolic link" in rejected["ESCAPE-0001"]
    unknown = items_by_code(report)["UNKNOWN-0009"]
    codes = {f["code"] for f in unknown["findings"]}
    assert {"unknown_item", "dpi_missing"} <= codes


def test_originals_are_untouched_and_nothing_is_written_outside_home(bad_batch) -> None:  # type: ignore[no-untyped-def]
    settings, _, batch, before, root = bad_batch
    assert _tree_digest(batch) | {"outside/secret.png": "kept"} == before
    assert sorted(p.name for p in (root / "outside").iterdir()) == ["secret.png"]
    assert sorted(p.name for p in root.iterdir()) == ["batch", "catalogue.csv", "home", "outside"]
    archived = sorted(p.name for p in settings.archive_dir.iterdir() if not p.name.startswith("."))
    assert archived == ["GOOD-0001", "UNKNOWN-0009"]


def test_a_batch_that_is_a_file_or_empty_is_refused(tmp_path: Path) -> None:
    from pipeline.intake import read_layout

    afile = tmp_path / "batch.zip"
    afile.write_bytes(b"zip")
    with pytest.raises(BatchError, match="is a file"):
        read_layout(afile)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="empty"):
        read_layout(tmp_path / "empty")
    with pytest.raises(BatchError, match="does not exist"):
        read_layout(tmp_path / "nope")


def test_a_rescan_that_failed_in_our_hands_leaves_the_archived_item_as_it_was(  # type: ignore[no-untyped-def]
    tmp_path, samples_module, prefect_harness
) -> None:
    """An item archived, then a changed scan of it that an OCR engine fails on (here Tesseract
    told to use a language it does not have): the failure says nothing about the scan, so the
    item is failed and nothing is packaged or cached for it, no QA case is opened, and the item
    stays archived and found as before; the original scans back, the next run reuses the package."""
    from pipeline.flows.batch import run_batch
    from pipeline.store import Store

    code = "BX09-2020-CB-D10-0001"
    batch = tmp_path / "batch"
    folder = batch / code
    folder.mkdir(parents=True)

    def page(n: int, seed: int) -> None:
        samples_module.render_page(
            f"保险合同{n + 1}", ["投保人同意按本单办理。"], [], size_mm=(148, 105), seed=seed
        ).save(folder / f"{n + 1:04d}.jpg", quality=85, dpi=(300, 300))

    for n in range(2):
        page(n, n)
    (tmp_path / "catalogue.csv").write_text(f"档号,页数\n{code},2\n", encoding="utf-8")
    working = make_settings(tmp_path / "home")
    import_catalogue(working, tmp_path / "catalogue.csv")
    archived = items_by_code(run_batch(batch, working))[code]
    assert archived["verdict"] == "passed"
    pdf_bytes = Path(archived["pdf"]).read_bytes()

    page(0, 7)  # a rescan of page 1
    broken = make_settings(
        tmp_path / "home", ocr={"engine": "tesseract", "tesseract_languages": "zzz", "workers": 2}
    )
    failed = items_by_code(run_batch(batch, broken))[code]
    assert failed["verdict"] == "failed" and failed["pdf"] is None
    codes = {f["code"] for f in failed["findings"]}
    assert "processing_failed" in codes and "unreadable_file" not in codes
    cached = [json.loads(p.read_text()) for p in (working.work_dir / "pages").glob("*_page.json")]
    assert not any(p.get("error") for p in cached)  # nothing remembered of the failure
    assert Path(archived["pdf"]).read_bytes() == pdf_bytes
    store = Store(working.state_url)
    row = store.item(code)
    assert row is not None and row.visible and row.pdf_sha256 == hashlib.sha256(pdf_bytes).hexdigest()
    assert store.cases(status=None) == []
    store.close()
    index = SqliteIndex(working.index_path)
    assert index.search(SearchQuery("投保人", {"archive_code": code})).hits  # still found
    index.close()

    page(0, 0)  # the original scan back
    again = items_by_code(run_batch(batch, working))[code]
    assert again["verdict"] == "passed" and again["reused"]
    store = Store(working.state_url)
    row = store.item(code)
    assert row is not None and row.visible and store.cases(status=None) == []
    store.close()


def test_a_second_run_of_a_batch_being_processed_stops_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two processes of one home on the same batch: the second is told, and does nothing."""
    from pipeline.errors import BatchBusy
    from pipeline.flows.batch import run_batch
    from pipeline.intake import batch_id_for, batch_lock

    settings = make_settings(tmp_path / "home")
    batch = tmp_path / "batch"
    batch.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from pipeline.intake import batch_lock\n"
            "with batch_lock(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]):\n"
            "    print('held', flush=True); time.sleep(60)",
            str(settings.work_dir),
            str(batch),
            batch_id_for(batch),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(BatchBusy, match=rf"process {holder.pid}, since"):
            run_batch(batch, settings)
        link = tmp_path / "link"
        link.symlink_to(batch)
        with pytest.raises(BatchBusy):  # the same folder by another name
            run_batch(link, settings)
        assert not list(settings.reports_dir.glob("*.json"))
    finally:
        holder.kill()
        holder.wait()
    with batch_lock(settings.work_dir, batch, batch_id_for(batch)):  # the kernel let go of a killed holder
        pass


def test_a_page_whose_renderer_was_killed_leaves_its_item_for_the_next_run(  # type: ignore[no-untyped-def]
    tmp_path, samples_module, prefect_harness, monkeypatch
) -> None:
    """pdftoppm killed by a signal we did not send (the out-of-memory killer, a batch being
    stopped) on page 2 of a scanned PDF: nothing is known about that page, so it is not cached
    as unreadable and its item is not archived with page 1 alone; the next run archives both."""
    from pipeline.flows.batch import run_batch
    from pipeline.store import Store

    batch = tmp_path / "batch"
    folder = batch / "BX09-2021-LP-D10-0002"
    folder.mkdir(parents=True)
    pages = [
        samples_module.render_page(
            f"理赔申请{n + 1}", ["投保人同意按本单办理。"], [], size_mm=(148, 105), seed=n
        )
        for n in range(2)
    ]
    pages[0].save(folder / "scan.pdf", save_all=True, append_images=pages[1:], resolution=300)
    (tmp_path / "catalogue.csv").write_text("档号,页数\nBX09-2021-LP-D10-0002,2\n", encoding="utf-8")
    shims = tmp_path / "bin"
    shims.mkdir()
    killer = shims / "pdftoppm"  # the real pdftoppm, killed (SIGKILL) when asked for page 2
    real = shutil.which("pdftoppm")
    killer.write_text(f'#!/bin/sh\ncase " $* " in *" -f 2 "*) kill -KILL $$ ;; esac\nexec {real} "$@"\n')
    killer.chmod(0o755)
    settings = make_settings(tmp_path / "home")
    import_catalogue(settings, tmp_path / "catalogue.csv")
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    first = items_by_code(run_batch(batch, settings))["BX09-2021-LP-D10-0002"]
    assert first["verdict"] == "failed" and first["pdf"] is None
    failed = [f for f in first["findings"] if f["code"] == "processing_failed"]
    assert len(failed) == 1 and failed[0]["page"] == 2 and "stopped by signal 9" in failed[0]["message"]
    assert "page_count_mismatch" not in {f["code"] for f in first["findings"]}  # the scans are not blamed
    assert not (settings.archive_dir / "BX09-2021-LP-D10-0002").exists()
    store = Store(settings.state_url)
    assert store.cases(status=None) == []  # the run failed, not the scan: nothing for QA
    store.close()
    cached = [json.loads(p.read_text()) for p in (settings.work_dir / "pages").glob("*_page.json")]
    assert not any(page.get("error") for page in cached)  # page 2's failure is not remembered

    monkeypatch.setenv("PATH", os.environ["PATH"].split(os.pathsep, 1)[1])
    again = items_by_code(run_batch(batch, settings))["BX09-2021-LP-D10-0002"]
    assert again["verdict"] == "passed" and again["pages"] == 2
    with pikepdf.open(again["pdf"]) as pdf:
        assert len(pdf.pages) == 2
