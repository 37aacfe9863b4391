"""The web interface in a real browser: Debian's Chromium driven headless by Playwright.

Screenshots of the main pages go to test-artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from playwright import sync_api as playwright_api

from pipeline.index.base import open_backend
from pipeline.reindex import reindex_all
from pipeline.store import Store
from pipeline.users import save_user
from tests.conftest import ROOT, _free_port, make_settings

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "screenshots"
SECRET_ITEM = "BX01-2014-LP-D6-0003"  # 秘密
HELD_ITEM = "SB02-2015-CB-D30-0004"  # waiting for QA
XSS_ITEM = "BX01-2012-CB-D10-0001"  # 内部
XSS = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>脚本测试"
PASSWORD = "correct horse 8"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--headless",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost",
]


@pytest.fixture(scope="module")
def site_home(sample_run, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A copy of the processed sample batch, with accounts and a hostile OCR line."""
    settings, _, _ = sample_run
    home = tmp_path_factory.mktemp("web") / "home"
    shutil.copytree(settings.home_dir, home, ignore=shutil.ignore_patterns("prefect"))
    record_path = home / "archive" / XSS_ITEM / "record.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record["pages"][0]["lines"].append({"text": XSS, "box": [0, 0, 10, 10], "confidence": 0.99})
    record_path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    local = make_settings(home)
    store = Store(local.state_url)
    for name, role, clearance in (
        ("clerk", "searcher", "秘密"),
        ("low", "searcher", "公开"),
        ("checker", "qa", "绝密"),
        ("locky", "searcher", "内部"),
        ("changer", "searcher", "内部"),
    ):
        save_user(store, name, role=role, clearance=clearance, password=PASSWORD, display_name=f"{name} 测试")
    index = open_backend(local)
    reindex_all(local, index, store)
    index.close()
    store.close()
    return home


@pytest.fixture(scope="module")
def site(site_home) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The copy behind a real `capture serve`."""
    home = site_home
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
        env={**os.environ, "CAPTURE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


def log_in(browser, site: str, user: str, target: str = "/search", password: str = PASSWORD):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    page = context.new_page()
    page.goto(site + target)
    assert "/login" in page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return context, page


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_searcher_logs_in_searches_in_chinese_and_sees_the_marked_page(browser, site) -> None:  # type: ignore[no-untyped-def]
    context, page = log_in(browser, site, "clerk")
    shot(page, "01-search-empty")
    page.fill("input[name=q]", "理赔申请")
    page.press("input[name=q]", "Enter")
    page.wait_for_selector(".hit")
    assert "检索" in page.inner_text("header")  # Chinese by default
    first = page.locator(".hit").first
    assert SECRET_ITEM in first.inner_text() and "陳志明" in first.inner_text()
    assert first.locator("mark").count() >= 1
    assert page.locator(".facets").inner_text().count("2014") >= 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366  # fits an office screen
    shot(page, "02-search-results")
    first.locator("a.hit-title").click()
    page.wait_for_selector("#ocr-text")
    assert f"/items/{SECRET_ITEM}" in page.url and "page=" in page.url
    marks = page.locator("#ocr-text mark")
    assert marks.count() >= 1 and marks.first.inner_text() in ("理賠申請", "理赔申请")
    width, deadline = 0, time.monotonic() + 60
    while not width and time.monotonic() < deadline:  # (wait_for_function would need eval; CSP forbids it)
        page.wait_for_timeout(200)
        width = page.evaluate("document.querySelector('figure.page img').naturalWidth")
    assert width > 500  # the full page image really loaded
    assert "陳志明" in page.inner_text("table.record")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    shot(page, "03-item-viewer")
    pdf = context.request.get(f"{site}/items/{SECRET_ITEM}/pdf")
    assert pdf.ok and pdf.body()[:4] == b"%PDF"
    english = page.goto(f"{site}/search?q=理赔&lang=en")
    assert english and english.ok and "Search" in page.inner_text("header")
    context.close()


def test_qa_approves_a_case_and_the_item_becomes_searchable(browser, site) -> None:  # type: ignore[no-untyped-def]
    searcher, spage = log_in(browser, site, "clerk", "/search?q=参保登记")
    assert spage.locator(".hit").count() == 0
    qa_context, page = log_in(browser, site, "checker", "/qa")
    assert HELD_ITEM in page.inner_text("table.list")
    shot(page, "04-qa-queue")
    page.click(f"text={HELD_ITEM}")
    page.wait_for_selector(".grid figure")
    assert "page_count_mismatch" in page.inner_text(".findings")
    assert page.locator(".grid figure").count() == 2 and "纠偏" in page.inner_text(".grid")
    shot(page, "05-qa-case")
    approve = page.locator("form:has(input[value=approve])")
    approve.locator("button").click()  # no reason: the browser refuses to send it
    assert f"/qa/{HELD_ITEM}" in page.url and page.locator(".note[role=status]").count() == 0
    approve.locator("input[name=reason]").fill("目录页数含封面，扫描完整")
    approve.locator("button").click()
    page.wait_for_load_state()
    assert "已通过" in page.inner_text("body")
    page.goto(f"{site}/batches?all=1")
    assert "已完成" in page.inner_text("table.list")
    shot(page, "06-batches")
    spage.goto(f"{site}/search?q=参保登记")
    assert HELD_ITEM in spage.inner_text(".hits")
    searcher.close()
    qa_context.close()


def test_no_user_reaches_an_item_above_their_clearance_by_url(browser, site) -> None:  # type: ignore[no-untyped-def]
    context, page = log_in(browser, site, "low")
    for path in (f"/items/{SECRET_ITEM}", f"/items/{SECRET_ITEM}/pdf", f"/items/{SECRET_ITEM}/pages/1.png"):
        response = page.goto(site + path)
        assert response and response.status == 404, path
    assert "无权查看" in page.inner_text("body") or response.status == 404
    response = page.goto(site + f"/items/{SECRET_ITEM}")
    assert response and "未找到该档案" in page.inner_text("main")
    response = page.goto(site + "/qa")
    assert response and response.status == 403  # a searcher is not QA staff
    assert "script-src 'none'" in response.headers["content-security-policy"]
    shot(page, "07-not-permitted")
    context.close()


def test_refusals_on_pages_are_audited(browser, site, site_home) -> None:  # type: ignore[no-untyped-def]
    context, page = log_in(browser, site, "low")
    for path in ("/qa", "/batches", f"/qa/{HELD_ITEM}"):
        response = page.goto(site + path)
        assert response and response.status == 403, path
    context.close()
    store = Store(make_settings(site_home).state_url)
    try:
        errors = [(r.user, r.target, r.details["status"]) for r in store.audit_log("http.error")]
        refusals = [(r.user, r.action) for r in store.audit_log() if r.action.endswith(".refused")]
    finally:
        store.close()
    for path in ("/qa", "/batches", f"/qa/{HELD_ITEM}"):
        assert ("low", path, 403) in errors
    assert ("low", "qa.queue.refused") in refusals and ("low", "batches.refused") in refusals


def test_hostile_ocr_text_stays_text(browser, site) -> None:  # type: ignore[no-untyped-def]
    context, page = log_in(browser, site, "clerk", "/search?q=脚本测试")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    assert "onerror=window.__pwned=2>脚本测试" in page.inner_text(".hits")  # shown as text
    page.locator("a.hit-title").first.click()
    page.wait_for_selector("#ocr-text")
    assert "<script>window.__pwned=1</script>" in page.inner_text("#ocr-text")
    assert page.locator("#ocr-text script, #ocr-text img").count() == 0
    assert page.evaluate("window.__pwned") is None and not dialogs
    shot(page, "08-hostile-text")
    context.close()


def test_pages_set_security_headers_and_forms_need_csrf(browser, site) -> None:  # type: ignore[no-untyped-def]
    context, page = log_in(browser, site, "checker")
    response = page.goto(site + "/search")
    assert response
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    cookie = next(c for c in context.cookies() if c["name"] == "capture_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    forged = context.request.post(
        f"{site}/qa/{HELD_ITEM}/decide", form={"action": "rescan", "reason": "forged", "csrf": "wrong"}
    )
    assert forged.status == 400
    context.close()


def test_sessions_end_after_idle_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.users import session_user, start_session

    store = Store(make_settings(tmp_path / "home").state_url)
    try:
        who = save_user(store, "idler", role="searcher", clearance="内部", password=PASSWORD)
        session = start_session(store, who)
        assert session_user(store, session.token, idle_minutes=30) is not None
        assert session_user(store, session.token + "x", idle_minutes=30) is None
        assert session_user(store, session.token, idle_minutes=0) is None  # idle past the limit: ended
        assert session_user(store, session.token, idle_minutes=30) is None  # and it stays ended
    finally:
        store.close()


def test_wrong_passwords_lock_the_account_until_an_admin_unlocks_it(browser, site, site_home) -> None:  # type: ignore[no-untyped-def]
    context, page = log_in(browser, site, "locky", password="wrong password 1")
    for attempt in range(2, 6):
        assert page.get_by_role("alert").inner_text() == "用户名或密码错误"
        page.fill("input[name=username]", "locky")
        page.fill("input[name=password]", f"wrong password {attempt}")
        page.click("button[type=submit]")
        page.wait_for_load_state()
    # the sixth try has the right password, and is still refused: the account is locked
    page.fill("input[name=username]", "locky")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 429 and "/login" in page.url
    assert "锁定" in page.get_by_role("alert").inner_text()
    shot(page, "09-locked")
    assert not [c for c in context.cookies() if c["name"] == "capture_session"]
    context.close()
    store = Store(make_settings(site_home).state_url)
    try:
        failed = [a for a in store.audit_log("login.failed") if a.user == "locky"]
        locked = [a for a in store.audit_log("login.locked") if a.user == "locky"]
        assert len(failed) == 5 and len(locked) == 1
    finally:
        store.close()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "user", "unlock", "locky"],
        env={**os.environ, "CAPTURE_HOME": str(site_home), "CAPTURE_USER": "admin1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    context, page = log_in(browser, site, "locky")
    assert page.url.endswith("/search")
    context.close()


def test_a_user_changes_their_own_password(browser, site) -> None:  # type: ignore[no-untyped-def]
    context, page = log_in(browser, site, "changer")
    page.click("a.user")
    assert page.url.endswith("/account") and "内部" in page.inner_text("main")

    def change(current: str, new: str, repeat: str) -> None:
        page.fill("input[name=current]", current)
        page.fill("input[name=new]", new)
        page.fill("input[name=repeat]", repeat)
        page.click("form[action='/account/password'] button[type=submit]")
        page.wait_for_load_state()

    change("not my password", "a new secret 9", "a new secret 9")
    assert page.get_by_role("alert").inner_text() == "当前密码不正确"
    change(PASSWORD, "a new secret 9", "another secret 9")
    assert page.get_by_role("alert").inner_text() == "两次输入的新密码不一致"
    change(PASSWORD, "a new secret 9", "a new secret 9")
    assert page.get_by_role("status").inner_text() == "密码已修改"
    shot(page, "10-account")
    context.close()
    context, page = log_in(browser, site, "changer", password=PASSWORD)
    assert "/login" in page.url and page.get_by_role("alert").inner_text() == "用户名或密码错误"
    context.close()
    context, page = log_in(browser, site, "changer", password="a new secret 9")
    assert page.url.endswith("/search")
    context.close()


def _login_over_http(site: str, user: str, password: str):  # type: ignore[no-untyped-def]
    """A log-in without a browser: the form's nonce, then the POST; returns the client and answer."""
    import re

    import httpx

    client = httpx.Client(base_url=site, timeout=60)
    form = client.get("/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert nonce
    answer = client.post("/login", data={"username": user, "password": password, "csrf": nonce.group(1)})
    return client, answer


def test_simultaneous_log_ins_over_http_check_at_most_the_limit(site, site_home) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    store = Store(make_settings(site_home).state_url)
    save_user(store, "raced", role="searcher", clearance="内部", password=PASSWORD)
    store.close()
    guesses = [f"wrong password {n}" for n in range(24)] + [PASSWORD]
    with ThreadPoolExecutor(25) as pool:
        answers = list(pool.map(lambda pw: _login_over_http(site, "raced", pw)[1].status_code, guesses))
    assert answers.count(429) >= 20 and answers.count(401) + answers.count(303) <= 5, answers
    store = Store(make_settings(site_home).state_url)
    try:
        checked = [
            r for r in store.audit_log() if r.user == "raced" and r.action in ("login", "login.failed")
        ]
        assert len(checked) <= 5
    finally:
        store.close()


def test_a_session_cookie_is_worthless_after_log_out(site) -> None:  # type: ignore[no-untyped-def]
    import re

    client, answer = _login_over_http(site, "clerk", PASSWORD)
    assert answer.status_code == 303
    cookie = client.cookies.get("capture_session")
    assert cookie and client.get("/search").status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/account").text)
    assert csrf
    assert client.post("/logout", data={"csrf": csrf.group(1)}).status_code == 303
    import httpx

    replay = httpx.get(f"{site}/search", cookies={"capture_session": cookie}, follow_redirects=False)
    assert replay.status_code == 303 and "/login" in replay.headers["location"]
    client.close()


def test_odd_query_values_get_a_page_with_headers_not_a_crash(site) -> None:  # type: ignore[no-untyped-def]
    client, answer = _login_over_http(site, "checker", PASSWORD)
    for path in ("/qa?older=1000000000", "/qa?older=-5", "/search?q=保险&page=99999999999999999999"):
        response = client.get(path)
        assert response.status_code in (200, 400, 422), (path, response.status_code)
        assert "text/html" in response.headers["content-type"]
        assert "script-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
    client.close()


def test_api_docs_work_offline_in_a_browser(browser, site) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(site) else outside.append(r.url))
    response = page.goto(site + "/docs")
    assert response and response.ok
    page.wait_for_selector(".opblock-summary-path", timeout=30000)
    assert "/api/search" in page.inner_text("#swagger-ui")
    assert outside == []  # every asset came from the app itself
    shot(page, "11-api-docs")
    context.close()
