"""Registered lookups: a searcher asks for an item above their clearance, an archivist grants it
for a short time; during the grant that searcher (and nobody else) finds, views and downloads
exactly that item on either search backend; the grant ends on time; the lookup register holds
each view and download with the purpose and the approval, and is exported as XLSX."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from pipeline.errors import AccessRequestError, Forbidden, NotFound
from pipeline.reindex import reindex_all
from pipeline.service import ArchiveService
from pipeline.store import Store
from pipeline.users import principal_of, save_user
from tests.conftest import es_settings, make_settings
from tests.test_lifecycle_fixity import OTHER, THIRD, capture, copy_home

SECRET = THIRD  # 秘密: above a clerk cleared to 内部
CLASSIFIED = OTHER  # raised to 机密 below: must stay out of reach during the grant
GRANT_SECONDS = 4.0


def open_service(sample_run, home: Path, osmem_url: str = "") -> ArchiveService:  # type: ignore[no-untyped-def]
    copy_home(sample_run, home)
    catalogue = home.parent / "levels.csv"
    catalogue.write_text(f"档号,页数,题名,密级\r\n{CLASSIFIED},2,保全变更申请书,机密\r\n", encoding="utf-8")
    assert capture(home, "catalogue", "import", str(catalogue)).returncode == 0
    settings = es_settings(home, osmem_url, stand_in=True) if osmem_url else make_settings(home)
    store = Store(settings.state_url)
    for name, role, clearance in (
        ("clerk", "searcher", "内部"),
        ("other", "searcher", "内部"),
        ("arch", "archivist", "绝密"),
        ("junior", "archivist", "内部"),
    ):
        save_user(store, name, role=role, clearance=clearance)
    svc = ArchiveService(settings, store)
    if osmem_url:
        reindex_all(settings, svc.index, store)
    return svc


@pytest.fixture(params=["sqlite", "osmem"])
def service(request, sample_run, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = request.getfixturevalue("osmem_clone").url if request.param == "osmem" else ""
    svc = open_service(sample_run, tmp_path / "home", url)
    yield svc
    svc.close()


@pytest.fixture
def embedded(sample_run, tmp_path: Path):  # type: ignore[no-untyped-def]
    svc = open_service(sample_run, tmp_path / "home")
    yield svc
    svc.close()


def who(service: ArchiveService, name: str):  # type: ignore[no-untyped-def]
    row = service.store.user(name)
    assert row is not None
    return principal_of(row)


def found(service: ArchiveService, user: str, text: str = "保险合同号") -> set[str]:
    result = service.search(who(service, user), text, {}, limit=100, facets=False, via="test")
    return {hit.archive_code for hit in result.hits}


def test_a_grant_shows_exactly_that_item_to_that_user_until_it_ends(service: ArchiveService) -> None:
    clerk, other, arch = who(service, "clerk"), who(service, "other"), who(service, "arch")
    before = found(service, "clerk")
    assert SECRET not in before and CLASSIFIED not in before and before
    with pytest.raises(NotFound):
        service.open_item(clerk, SECRET)
    asked = service.request_access(clerk, SECRET, "理赔纠纷诉讼，法院调查函 (2024)第12号", 3)
    with pytest.raises(AccessRequestError, match="already asked"):
        service.request_access(clerk, SECRET, "again", 3)
    with pytest.raises(Forbidden):
        service.decide_access(clerk, asked.id, approve=True, reason="mine")
    with pytest.raises(AccessRequestError, match="within your own reach"):
        service.decide_access(who(service, "junior"), asked.id, approve=True, reason="cannot see it myself")
    from pipeline.lookups import decide_request

    granted = decide_request(
        service.settings,
        service.store,
        arch,
        asked.id,
        approve=True,
        reason="法院调查",
        hours=GRANT_SECONDS / 3600,
    )
    assert granted.status == "approved" and granted.granted_until is not None

    during = found(service, "clerk")
    assert during == before | {SECRET}  # that item, and nothing else more
    assert SECRET not in found(service, "other")  # nobody else
    view = service.open_item(clerk, SECRET, via="web")
    assert view.archive_code == SECRET and view.pages
    assert service.pdf(clerk, SECRET, via="api").is_file()
    with pytest.raises(NotFound):
        service.open_item(clerk, CLASSIFIED)
    with pytest.raises(NotFound):
        service.open_item(other, SECRET)

    time.sleep(max(0.0, _seconds_left(granted.granted_until)) + 0.5)
    assert found(service, "clerk") == before  # it ended by itself
    with pytest.raises(NotFound):
        service.open_item(clerk, SECRET)

    today = datetime.now(UTC).date()
    lines = service.lookup_register(arch, today, today, via="test")
    mine = [
        (line.action, line.via, line.purpose, line.approved_by) for line in lines if line.username == "clerk"
    ]
    assert mine == [
        ("view", "web", "理赔纠纷诉讼，法院调查函 (2024)第12号", "arch"),
        ("download", "api", "理赔纠纷诉讼，法院调查函 (2024)第12号", "arch"),
    ]
    with pytest.raises(Forbidden):
        service.lookup_register(clerk, today, today)
    actions = [r.action for r in service.store.audit_log()]
    assert {"access.request", "access.approve", "view", "download", "view.refused"} <= set(actions)


def _seconds_left(until: datetime | None) -> float:
    assert until is not None
    return ((until if until.tzinfo else until.replace(tzinfo=UTC)) - datetime.now(UTC)).total_seconds()


def test_refusals_and_the_register_export(embedded: ArchiveService, tmp_path: Path) -> None:
    service = embedded
    clerk, arch = who(service, "clerk"), who(service, "arch")
    with pytest.raises(AccessRequestError, match="purpose"):
        service.request_access(clerk, SECRET, "   ")
    with pytest.raises(AccessRequestError, match="not an archive code"):
        service.request_access(clerk, "../etc/passwd", "curious")
    with pytest.raises(AccessRequestError, match="1 to 90 days"):
        service.request_access(clerk, SECRET, "audit", 365)
    asked = service.request_access(clerk, SECRET, "内部审计", 2)
    refused = service.decide_access(arch, asked.id, approve=False, reason="无审批单")
    assert refused.status == "refused" and refused.granted_until is None
    with pytest.raises(NotFound):
        service.open_item(clerk, SECRET)
    again = service.request_access(clerk, SECRET, "内部审计（附审批单）", 2)
    service.decide_access(arch, again.id, approve=True, reason="审批单已附")
    service.open_item(clerk, SECRET, via="web")
    service.open_item(arch, SECRET, via="web")  # within reach: registered without a grant
    home = service.settings.home_dir
    out = tmp_path / "register.xlsx"
    today = datetime.now(UTC).date().isoformat()
    result = capture(home, "lookups", "export", str(out), "--from", today, "--to", today)
    assert result.returncode == 0, result.stderr
    rows = list(load_workbook(out, read_only=True).active.iter_rows(values_only=True))  # type: ignore[union-attr]
    assert rows[0][:3] == ("时间 (UTC)", "用户", "档号")
    body = [(r[1], r[2], r[3], r[5], r[6]) for r in rows[1:]]
    assert ("clerk", SECRET, "查看", "内部审计（附审批单）", "arch") in body
    assert ("arch", SECRET, "查看", None, None) in body or ("arch", SECRET, "查看", "", "") in body
    cli = capture(home, "access", "list", "--json")
    assert cli.returncode == 0 and "内部审计" in cli.stdout
    bad = capture(home, "lookups", "export", str(out), "--from", "2024-13-01", "--to", today)
    assert bad.returncode == 2
