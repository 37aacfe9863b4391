"""The state store on SQLite and PostgreSQL: migrations, idempotent writes, packages, QA, audit."""

from __future__ import annotations

from sqlalchemy import inspect, text

from pipeline.models import CatalogueEntry, Finding, ItemResult, Severity, Verdict
from pipeline.store import Store

ENTRY = CatalogueEntry("BX01-2012-CB-D10-0001", 3, title="投保单", policyholder="王建国")


def _item(sha: str, *flags: str) -> ItemResult:
    item = ItemResult("BX01-2012-CB-D10-0001", ENTRY, verdict=Verdict.NEEDS_QA if flags else Verdict.PASSED)
    item.findings = [Finding(code, f"{code} happened", Severity.ERROR) for code in flags]
    item.findings.append(Finding("blank_page", "a blank page", Severity.INFO, 2))
    item.pdf_sha256, item.pdf_path = sha, f"/archive/{item.archive_code}/{item.archive_code}.pdf"
    return item


def test_migrations_create_and_reopen_the_schema(database_url: str) -> None:
    store = Store(database_url)
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "catalogue",
        "batches",
        "items",
        "packages",
        "findings",
        "qa_cases",
        "decisions",
        "audit_log",
        "alembic_version",
    } <= tables
    store.import_catalogue([ENTRY], "c.csv")
    store.close()
    again = Store(database_url)  # upgrading an up-to-date database changes nothing, loses nothing
    with again.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
    assert again.catalogue()["BX01-2012-CB-D10-0001"].policyholder == "王建国"
    again.close()


def test_recording_the_same_item_twice_duplicates_nothing(database_url: str) -> None:
    store = Store(database_url)
    store.start_batch("b1", "/batch")
    for _ in range(3):
        row = store.record_item("b1", _item("aaa", "page_count_mismatch"))
    assert not row.visible and row.qa_status == "open"
    assert len(store.findings("BX01-2012-CB-D10-0001")) == 2
    assert len(store.cases()) == 1 and len(store.packages("BX01-2012-CB-D10-0001")) == 1
    store.close()


def test_a_clean_item_is_visible_and_opens_no_case(database_url: str) -> None:
    store = Store(database_url)
    row = store.record_item("b1", _item("aaa"))
    assert row.visible and row.qa_status == "none" and store.cases() == []
    store.close()


def test_a_new_package_supersedes_and_keeps_the_old_one(database_url: str) -> None:
    store = Store(database_url)
    store.record_item("b1", _item("aaa", "low_confidence"))
    row = store.record_item("b2", _item("bbb"))
    packages = store.packages("BX01-2012-CB-D10-0001")
    assert [(p.pdf_sha256, p.status) for p in packages] == [("aaa", "superseded"), ("bbb", "current")]
    assert row.visible and row.batch_id == "b2"
    assert [c.status for c in store.cases(status=None)] == ["superseded"]
    store.close()


def test_decisions_record_who_when_why_and_set_visibility(database_url: str) -> None:
    store = Store(database_url)
    store.record_item("b1", _item("aaa", "page_count_mismatch"))
    decision = store.decide(
        "BX01-2012-CB-D10-0001", "approve", "paper has a torn page", "qa.li", close_as="approved"
    )
    assert decision.user == "qa.li" and decision.at is not None
    assert store.item("BX01-2012-CB-D10-0001").visible  # type: ignore[union-attr]
    assert store.open_case("BX01-2012-CB-D10-0001") is None
    # the same package recorded again (a re-run) keeps the decision
    store.record_item("b1", _item("aaa", "page_count_mismatch"))
    assert store.item("BX01-2012-CB-D10-0001").qa_status == "approved"  # type: ignore[union-attr]
    assert [a.action for a in store.audit_log()] == ["qa.approve"]
    store.close()
