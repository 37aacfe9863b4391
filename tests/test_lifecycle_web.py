"""The lifecycle pages in a real browser (Debian's Chromium through Playwright): a searcher asks for
an item with a purpose, an archivist approves it, the searcher opens it, the archivist reads the
lookup register; admins see the last fixity results and the damage; roles, CSRF and escaping hold."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.store import Store
from pipeline.users import save_user
from tests.conftest import _free_port, make_settings
from tests.test_lifecycle_fixity import PDF_ITEM, THIRD, capture, copy_home, flip_byte
from tests.test_web import ARGS, CHROMIUM, PASSWORD, log_in, shot

HOSTILE = "<script>window.__pwned=1</script>法院调查函"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def lifecycle_site(sample_run, tmp_path_factory) -> Iterator[tuple[str, Path]]:  # type: ignore[no-untyped-def]
    home = copy_home(sample_run, tmp_path_factory.mktemp("lifecycle-web") / "home")
    store = Store(make_settings(home).state_url)
    for name, role, clearance in (
        ("clerk", "searcher", "内部"),
        ("arch", "archivist", "绝密"),
        ("boss", "admin", "绝密"),
    ):
        save_user(store, name, role=role, clearance=clearance, password=PASSWORD, display_name=f"{name} 测试")
    store.close()
    flip_byte(home / "archive" / PDF_ITEM / f"{PDF_ITEM}.pdf")
    assert capture(home, "fixity", "check").returncode == 11
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
        env={**os.environ, "CAPTURE_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/login")
            conn.getresponse().read()
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "capture serve did not start"
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}", home
    server.terminate()
    server.wait(timeout=30)


def test_request_approve_open_and_register(browser, lifecycle_site) -> None:  # type: ignore[no-untyped-def]
    site, home = lifecycle_site
    clerk, page = log_in(browser, site, "clerk", "/access")
    assert page.url.endswith("/access") and "调阅申请" in page.inner_text("header")
    assert page.goto(f"{site}/items/{THIRD}").status == 404  # type: ignore[union-attr]
    page.goto(f"{site}/access")
    page.fill("input[name=archive_code]", THIRD)
    page.fill("input[name=purpose]", HOSTILE)
    page.fill("input[name=days]", "2")
    page.click("form[action='/access/request'] button[type=submit]")
    page.wait_for_load_state()
    assert "已提交" in page.get_by_role("status").inner_text()
    assert HOSTILE in page.inner_text("table.mine") and "待审批" in page.inner_text("table.mine")
    assert page.locator("table.mine script").count() == 0 and page.evaluate("window.__pwned") is None
    assert page.locator("table.pending").count() == 0  # a searcher decides nothing
    shot(page, "lc-01-access-request")

    archivist, apage = log_in(browser, site, "arch", "/access")
    row = apage.locator("table.pending tr", has_text=THIRD)
    assert HOSTILE in row.inner_text()
    row.locator("input[name=reason]").fill("法院调查，已核实来函")
    row.locator("button[value=approve]").click()
    apage.wait_for_load_state()
    assert "已批准" in apage.get_by_role("status").inner_text()
    assert THIRD in apage.inner_text("table.decided")
    shot(apage, "lc-02-access-approved")

    page.goto(f"{site}/access")
    assert "已批准" in page.inner_text("table.mine")
    page.click(f"table.mine a[href='/items/{THIRD}']")
    page.wait_for_selector("#ocr-text")
    assert f"/items/{THIRD}" in page.url and "理賠申請" in page.inner_text("#ocr-text")
    assert page.locator("table.record tr.due").count() == 1
    pdf = clerk.request.get(f"{site}/items/{THIRD}/pdf")
    assert pdf.ok and pdf.body()[:4] == b"%PDF"

    apage.goto(f"{site}/lookups")
    register = apage.inner_text("table.register")
    assert "clerk" in register and THIRD in register and HOSTILE in register and "arch" in register
    assert "查看" in register and "下载" in register
    assert apage.locator("table.register script").count() == 0
    shot(apage, "lc-03-lookup-register")
    assert apage.goto(f"{site}/fixity").status == 403  # type: ignore[union-attr]
    assert page.goto(f"{site}/lookups").status == 403  # type: ignore[union-attr]
    forged = clerk.request.post(
        f"{site}/access/request", form={"archive_code": PDF_ITEM, "purpose": "forged", "csrf": "wrong"}
    )
    assert forged.status == 400
    forged = archivist.request.post(
        f"{site}/access/1/decide", form={"action": "refuse", "reason": "x", "csrf": "no"}
    )
    assert forged.status == 400
    clerk.close()
    archivist.close()
    store = Store(make_settings(home).state_url)
    try:
        lines = store.lookups(*_today())
        assert [(r.username, r.action, r.via, r.request_id) for r in lines] == [
            ("clerk", "view", "web", 1),
            ("clerk", "download", "web", 1),
        ]
    finally:
        store.close()


def _today():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return now - timedelta(days=1), now + timedelta(days=1)


def test_admins_see_the_last_fixity_results_and_the_damage(browser, lifecycle_site) -> None:  # type: ignore[no-untyped-def]
    site, _ = lifecycle_site
    context, page = log_in(browser, site, "boss", "/fixity")
    assert page.url.endswith("/fixity") and "保存检查" in page.inner_text("header")
    damage = page.inner_text("table.damage")
    assert f"{PDF_ITEM}/{PDF_ITEM}.pdf" in damage and "damaged" in damage
    assert "1" in page.inner_text("table.runs") and "0 / 4" not in page.inner_text(".coverage")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    shot(page, "lc-04-fixity")
    english = page.goto(f"{site}/fixity?lang=en")
    assert english and english.ok and "Damaged packages" in page.inner_text("main")
    context.close()
