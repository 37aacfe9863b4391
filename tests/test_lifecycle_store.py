"""The lifecycle tables on SQLite and PostgreSQL: disposal lists and tombstones that no statement
can change or delete, the two-person rule, grants that end by themselves, the lookup register,
fixity status for the rolling check."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from pipeline.errors import AccessRequestError, DisposalError
from pipeline.models import ItemResult, Verdict
from pipeline.store import PackageResult, Store


def _packaged(store: Store, *codes: str) -> None:
    for code in codes:
        item = ItemResult(code, None, verdict=Verdict.PASSED, pdf_sha256="a" * 64, pdfa_valid=True)
        item.pdf_path = f"/x/{code}/{code}.pdf"
        store.record_item("b1", item)


def _refused(store: Store, statement: str) -> None:
    with pytest.raises(sa.exc.DBAPIError), store.engine.begin() as connection:
        connection.execute(sa.text(statement))


def test_disposal_lists_and_tombstones_cannot_be_changed_or_deleted(database_url: str) -> None:
    store = Store(database_url)
    try:
        _packaged(store, "D-1", "D-2")
        row = store.create_disposal_list(2030, "maker", [_listed("D-1"), _listed("D-2")])
        store.add_disposal_decision(row.id, "D-1", "destroy", None, "expired", "ann")
        store.add_disposal_decision(row.id, "D-2", "keep", 5, "disputed", "ann")
        with pytest.raises(DisposalError, match="two-person"):
            store.approve_disposal_list(row.id, "ann")
        with pytest.raises(DisposalError, match="not on disposal list"):
            store.add_disposal_decision(row.id, "D-9", "destroy", None, "x", "ann")
        approved = store.approve_disposal_list(row.id, "bob")
        assert approved.status == "approved" and approved.approved_by == "bob"
        with pytest.raises(DisposalError, match="final"):
            store.add_disposal_decision(row.id, "D-1", "keep", 3, "changed my mind", "ann")
        tomb = store.record_tombstone(
            {
                "archive_code": "D-1",
                "list_id": row.id,
                "catalogue": {"archive_code": "D-1"},
                "decisions": [],
                "approved_by": "bob",
                "approved_at": datetime.now(UTC),
                "executed_by": "op",
                "witness": "w",
                "destroyed": [{"path": "D-1/D-1.pdf", "sha256": "a" * 64}],
            },
            "op",
        )
        item = store.item("D-1")
        assert item is not None and item.pdf_sha256 is None and item.qa_status == "disposed"
        assert "D-1" not in store.current_packages()
        store.close_disposal_list(row.id, "op", "w", 1)
        with pytest.raises(DisposalError):
            store.close_disposal_list(row.id, "op", "w", 1)
        for statement in (
            f"DELETE FROM tombstones WHERE id = {tomb.id}",
            "UPDATE tombstones SET witness = 'someone else'",
            "DELETE FROM disposal_lists",
            "UPDATE disposal_lists SET status = 'open'",
            "UPDATE disposal_lists SET witness = 'someone else'",
            "DELETE FROM disposal_items",
            "UPDATE disposal_decisions SET decision = 'keep'",
            "DELETE FROM disposal_decisions",
        ):
            _refused(store, statement)
        if not store.is_sqlite:
            _refused(store, "TRUNCATE tombstones")
        assert len(store.tombstones("D-1")) == 1 and store.disposal_list(row.id).status == "executed"  # type: ignore[union-attr]
        assert [d.decision for d in store.disposal_decisions(row.id)] == ["destroy", "keep"]
        actions = [r.action for r in store.audit_log()]
        assert {
            "disposal.list",
            "disposal.decide",
            "disposal.approve",
            "disposal.destroy",
            "disposal.execute",
        } <= set(actions)
        assert store.verify_audit_chain().intact
    finally:
        store.close()


def _listed(code: str) -> dict[str, object]:
    return {
        "archive_code": code,
        "retention": "D6",
        "start_date": "2015-01-01",
        "due_date": "2021-01-01",
        "catalogue": {},
    }


def test_an_open_list_cannot_be_approved_twice_or_skip_approval(database_url: str) -> None:
    store = Store(database_url)
    try:
        _packaged(store, "E-1")
        row = store.create_disposal_list(2030, "maker", [_listed("E-1")])
        with pytest.raises(DisposalError, match="no decision"):
            store.approve_disposal_list(row.id, "bob")
        _refused(
            store, f"UPDATE disposal_lists SET status = 'executed' WHERE id = {row.id}"
        )  # skips approval
        with pytest.raises(DisposalError, match="not approved"):
            store.close_disposal_list(row.id, "op", "w", 0)
    finally:
        store.close()


def test_grants_are_for_one_user_and_one_item_and_end_by_themselves(database_url: str) -> None:
    store = Store(database_url)
    try:
        asked = store.add_access_request("u1", "clerk", "G-1", "a court case", 3)
        with pytest.raises(AccessRequestError, match="already asked"):
            store.add_access_request("u1", "clerk", "G-1", "again", 3)
        until = datetime.now(UTC) + timedelta(seconds=1.5)
        store.decide_access_request(asked.id, approve=True, by="arch", reason="court order", until=until)
        with pytest.raises(AccessRequestError, match="not pending"):
            store.decide_access_request(asked.id, approve=False, by="arch", reason="x", until=None)
        assert store.live_grant("u1", "G-1") is not None and store.live_grant_codes("u1") == ("G-1",)
        assert store.live_grant("u2", "G-1") is None and store.live_grant("u1", "G-2") is None
        store.register_lookup("clerk", "u1", "G-1", "view", "web", asked.id)
        time.sleep(2)
        assert store.live_grant("u1", "G-1") is None and store.live_grant_codes("u1") == ()
        day = datetime.now(UTC)
        lines = store.lookups(day - timedelta(days=1), day + timedelta(days=1))
        assert [(r.username, r.archive_code, r.request_id) for r in lines] == [("clerk", "G-1", asked.id)]
        assert store.requests_by_id({asked.id})[asked.id].purpose == "a court case"
    finally:
        store.close()


def test_fixity_status_orders_the_rolling_check(database_url: str) -> None:
    store = Store(database_url)
    try:
        _packaged(store, "F-1", "F-2", "F-3")
        assert store.least_recently_checked("/a", 2) == ["F-1", "F-2"]  # never checked: first
        run = {
            "root": "/a",
            "scope": "rolling",
            "started_at": datetime.now(UTC),
            "finished_at": datetime.now(UTC),
        }
        store.record_fixity(
            {**run, "packages": 2, "files": 6, "bytes": 10, "problems": 0},
            [PackageResult("F-1", True, [], ("a" * 64, "b" * 64)), PackageResult("F-2", True)],
            "watcher",
        )
        assert store.least_recently_checked("/a", 2) == ["F-3", "F-1"]
        assert store.least_recently_checked("/copy", 1) == ["F-1"]  # each root has its own status
        assert store.baselines(["F-1", "F-2"]) == {("F-1", "a" * 64): "b" * 64}
        assert store.checked_since("/a", datetime.now(UTC) - timedelta(hours=1)) == 2
        assert store.fixity_runs(scope="rolling")[0].packages == 2
    finally:
        store.close()
