"""The HTTP API on the processed sample batch: tokens, clearance, QA hold, audit, hostile input."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.reindex import reindex_all
from pipeline.store import Store
from pipeline.users import make_token, save_user
from pipeline.web.api import create_app
from tests.conftest import _free_port, es_settings, make_settings

SECRET_ITEM = "BX01-2014-LP-D6-0003"  # 秘密, passed QA
HELD_ITEM = "SB02-2015-CB-D30-0004"  # 公开, waiting for QA
USERS = {  # name: (role, clearance, fonds)
    "clerk": ("searcher", "内部", []),
    "chief": ("searcher", "绝密", []),
    "social": ("searcher", "绝密", ["SB02"]),
    "checker": ("qa", "绝密", []),
}


@pytest.fixture(scope="module")
def api_home(sample_run, tmp_path_factory) -> tuple[Path, dict[str, str]]:  # type: ignore[no-untyped-def]
    settings, _, _ = sample_run
    home = tmp_path_factory.mktemp("api") / "home"
    shutil.copytree(settings.home_dir, home, ignore=shutil.ignore_patterns("prefect"))
    store = Store(make_settings(home).state_url)
    tokens = {}
    for name, (role, clearance, fonds) in USERS.items():
        save_user(store, name, role=role, clearance=clearance, fonds=fonds)
        tokens[name] = make_token(store, name, "tests")
    store.close()
    return home, tokens


@pytest.fixture(params=["sqlite", "osmem"])
def api(request, api_home) -> Iterator[tuple[TestClient, dict[str, str], Path]]:  # type: ignore[no-untyped-def]
    home, tokens = api_home
    settings = make_settings(home)
    if request.param == "osmem":
        settings = es_settings(home, request.getfixturevalue("osmem_clone").url, stand_in=True)
        from pipeline.index.base import open_backend

        store, index = Store(settings.state_url), open_backend(settings)
        reindex_all(settings, index, store)
        index.close()
        store.close()
    with TestClient(create_app(settings)) as client:
        yield client, tokens, home


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _codes(response) -> set[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return {h["archive_code"] for h in response.json()["hits"]}


def _audit(home: Path, action: str) -> list:  # type: ignore[type-arg]
    store = Store(make_settings(home).state_url)
    try:
        return store.audit_log(action)
    finally:
        store.close()


def test_openapi_schema_is_served(api) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/items/{archive_code}", "/api/items/{archive_code}/pdf"} <= set(
        schema["paths"]
    )
    assert "/api/items/{archive_code}/pages/{page}.png" in schema["paths"]


def test_every_call_needs_a_valid_token(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, home = api
    for headers in ({}, _auth("cap_wrong"), _auth("x" * 5000), {"Authorization": "Basic Y2xlcms6eA=="}):
        response = client.get("/api/search", params={"q": "理赔"}, headers=headers)
        assert response.status_code == 401 and "token" in response.json()["detail"]
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.get(f"/api/items/{SECRET_ITEM}/pdf").status_code == 401
    assert client.get("/api/me", headers=_auth(tokens["clerk"])).json()["clearance"] == 1


def test_revoked_tokens_stop_working(api_home, tmp_path) -> None:  # type: ignore[no-untyped-def]
    home, _ = api_home
    settings = make_settings(home)
    store = Store(settings.state_url)
    save_user(store, "leaver", role="searcher", clearance="公开")
    token = make_token(store, "leaver")
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/me", headers=_auth(token)).status_code == 200
        store.revoke_tokens(store.user("leaver").id)  # type: ignore[union-attr]
        assert client.get("/api/me", headers=_auth(token)).status_code == 401
    store.close()


def test_search_results_follow_clearance_fonds_and_qa_hold(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, home = api
    before = len(_audit(home, "search"))
    q = {"q": "申请"}
    assert SECRET_ITEM in _codes(client.get("/api/search", params=q, headers=_auth(tokens["chief"])))
    clerk = client.get("/api/search", params=q, headers=_auth(tokens["clerk"]))
    assert SECRET_ITEM not in _codes(clerk) and "秘密" not in str(clerk.json()["facets"])
    sneaky = {"q": "理赔申请", "security_level": "秘密", "archive_code": SECRET_ITEM, "year": "2014"}
    assert _codes(client.get("/api/search", params=sneaky, headers=_auth(tokens["clerk"]))) == set()
    social = _codes(client.get("/api/search", params={"q": "保险"}, headers=_auth(tokens["social"])))
    assert social <= {HELD_ITEM}  # only its fonds, and that item is still held for QA
    assert HELD_ITEM not in _codes(
        client.get("/api/search", params={"q": "参保"}, headers=_auth(tokens["chief"]))
    )
    held = client.get(
        "/api/search", params={"q": "参保", "include_held": "true"}, headers=_auth(tokens["checker"])
    )
    assert HELD_ITEM in _codes(held)
    refused = client.get(
        "/api/search", params={"q": "参保", "include_held": "true"}, headers=_auth(tokens["chief"])
    )
    assert refused.status_code == 403 and "QA" in refused.json()["detail"]
    rows = _audit(home, "search")[before:]
    assert [r.user for r in rows] == ["chief", "clerk", "clerk", "social", "chief", "checker"]
    assert rows[2].target == "理赔申请" and rows[2].details["filters"]["security_level"] == "秘密"
    assert rows[2].details["hits"] == 0 and rows[0].details["hits"] >= 1 and rows[0].at is not None


def test_items_pdfs_and_pages_within_clearance_only(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, home = api
    chief, clerk, checker = (_auth(tokens[n]) for n in ("chief", "clerk", "checker"))
    item = client.get(f"/api/items/{SECRET_ITEM}", headers=chief)
    assert item.status_code == 200
    data = item.json()
    assert data["catalogue"]["policyholder"] == "陳志明" and len(data["pages"]) == 3
    assert any("理" in p["text"] for p in data["pages"]) and "qa_status" not in data
    pdf = client.get(f"/api/items/{SECRET_ITEM}/pdf", headers=chief)
    assert (
        pdf.status_code == 200
        and pdf.content.startswith(b"%PDF")
        and pdf.headers["content-type"] == "application/pdf"
    )
    thumb = client.get(f"/api/items/{SECRET_ITEM}/pages/1.png", headers=chief)
    full = client.get(f"/api/items/{SECRET_ITEM}/pages/1.png", params={"size": "full"}, headers=chief)
    assert thumb.content.startswith(b"\x89PNG") and full.content.startswith(b"\x89PNG")
    assert len(full.content) > len(thumb.content)
    assert client.get(f"/api/items/{SECRET_ITEM}/pages/99.png", headers=chief).status_code == 404
    for path in ("", "/pdf", "/pages/1.png"):
        denied = client.get(f"/api/items/{SECRET_ITEM}{path}", headers=clerk)
        assert denied.status_code == 404  # the same answer as for an item that does not exist
        missing = client.get(f"/api/items/BX99-2099-XX-D1-9999{path}", headers=clerk)
        assert missing.status_code == 404 and missing.json()["detail"].startswith("no item")
    assert client.get(f"/api/items/{HELD_ITEM}", headers=chief).status_code == 404
    held = client.get(f"/api/items/{HELD_ITEM}", headers=checker).json()
    assert held["qa_status"] == "open" and held["visible"] is False
    views = [(r.user, r.action, r.target) for r in _audit(home, "view")]
    assert ("chief", "view", SECRET_ITEM) in views and ("checker", "view", HELD_ITEM) in views
    refusals = [(r.user, r.target) for r in _audit(home, "view.refused")]
    assert ("clerk", SECRET_ITEM) in refusals
    assert [r.user for r in _audit(home, "download")][-1] == "chief"


@pytest.mark.parametrize(
    "params, status, words",
    [
        ({"q": "保" * 201}, 400, "at most 200"),
        ({"q": "保险\x00"}, 400, "not valid text"),
        ({"q": "\"'*()"}, 400, "no searchable words"),
        ({"q": " ".join(["险"] * 20)}, 400, "at most 16"),
        ({}, 422, "q"),
        ({"q": "保险", "limit": "1000"}, 422, "limit"),
        ({"q": "保险", "offset": "-1"}, 422, "offset"),
        ({"q": "保险", "cursor": "AAAA"}, 400, "cursor"),
        ({"q": "保险", "cursor": "eyJvIjo5OTk5OTk5OTl9"}, 400, "cursor"),  # {"o": 999999999}, unsigned
        ({"q": "保险", "cursor": "eyJvIjoxMH0.00000000000000000000000000000000"}, 400, "cursor"),  # forged
        ({"q": "保险", "cursor": "eyJvIjo5MjIzMzcyMDM2ODU0Nzc1ODA3fQ"}, 400, "cursor"),  # {"o": 2**63-1}
        ({"q": "保险", "cursor": "eyJvIjoiMTAifQ"}, 400, "cursor"),  # {"o": "10"}
        ({"q": "保险", "cursor": "eyJwIjoxLCJhIjpbeyJ4IjoxfV19"}, 400, "cursor"),  # a sort value object
        ({"q": "保险", "cursor": "WyJvIl0"}, 400, "cursor"),  # ["o"]: not an object
        ({"q": "保险", "offset": str(2**63)}, 422, "offset"),
        ({"q": "保险", "offset": "10001"}, 422, "offset"),
        ({"q": '保险" OR 1=1 --', "year": "2014' OR '1'='1"}, 200, "hits"),
    ],
)
def test_hostile_requests_get_clear_4xx_never_500(api, params, status, words) -> None:  # type: ignore[no-untyped-def]
    client, tokens, home = api
    before = len(_audit(home, "http.error"))
    response = client.get("/api/search", params=params, headers=_auth(tokens["clerk"]))
    assert response.status_code == status, response.text
    assert words in response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    if status != 200:  # every error answer is in the audit log, with who asked
        errors = _audit(home, "http.error")[before:]
        assert [(e.user, e.details["status"]) for e in errors] == [("clerk", status)]


def test_thumbnails_and_refusals_are_audited(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, home = api
    before = len(_audit(home, "page"))
    assert (
        client.get(f"/api/items/{SECRET_ITEM}/pages/2.png", headers=_auth(tokens["chief"])).status_code == 200
    )
    pages = _audit(home, "page")[before:]
    assert [(p.user, p.target, p.details["page"], p.details["size"]) for p in pages] == [
        ("chief", SECRET_ITEM, 2, "thumb")
    ]
    before = len(_audit(home, "search.refused"))
    refused = client.get(
        "/api/search", params={"q": "参保", "include_held": "true"}, headers=_auth(tokens["clerk"])
    )
    assert refused.status_code == 403
    assert [r.user for r in _audit(home, "search.refused")[before:]] == ["clerk"]


def test_path_tricks_in_archive_codes_are_just_unknown_items(api) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _ = api
    for code in ("..%2F..%2Fstate.sqlite", "%2E%2E", "BX01<script>", "a" * 300):
        response = client.get(f"/api/items/{code}", headers=_auth(tokens["chief"]))
        assert response.status_code == 404, (code, response.text)


def test_the_real_server_answers_non_utf8_and_sets_security_headers(api_home) -> None:  # type: ignore[no-untyped-def]
    home, tokens = api_home
    port = _free_port()
    env = {**os.environ, "CAPTURE_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/openapi.json")
                assert conn.getresponse().status == 200
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "capture serve did not start"
                time.sleep(0.3)
        for raw in ("/api/search?q=%FF%FE%C0", "/api/search?q=%E4%BF", "/api/items/%FF%FE"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", raw, headers=_auth(tokens["clerk"]))
            response = conn.getresponse()
            body = response.read().decode()
            assert response.status in (400, 404), (raw, response.status, body)
            assert response.getheader("X-Content-Type-Options") == "nosniff"
            assert "default-src 'none'" in (response.getheader("Content-Security-Policy") or "")
            assert response.getheader("Server") is None
    finally:
        server.terminate()
        server.wait(timeout=30)
