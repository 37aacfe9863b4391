"""A cold `capture search` imports only what searching needs; the store skips Alembic when current.

No timing is asserted (benchmarks/cold.py measures it): these tests catch the regressions that
made a cold search slow, a heavy module pulled into the search path or the schema upgrade run
on every open, by what the process imported. A search reads the state database without the
ORM (pipeline.statedb.LeanStore): the tests below hold it to the ORM store on SQLite and on
PostgreSQL: the same hits, a chain `capture audit-log verify` accepts, disabled and unknown
accounts refused (and audited), a tampered log still reported, the same live grants.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.store import MIGRATIONS, Store
from pipeline.store.base import at_head, head_revision

# The batch, OCR, imaging, packaging, web and server stacks: none of them answers a search.
NOT_FOR_SEARCH = (
    "prefect",
    "cv2",
    "numpy",
    "rapidocr",
    "rapidocr_onnxruntime",
    "openvino",
    "onnxruntime",
    "pytesseract",
    "PIL",
    "pikepdf",
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
    "elasticsearch",
    "openpyxl",
    "alembic",
    "pipeline.flows",
    "pipeline.ocr",
    "pipeline.imaging",
    "pipeline.package",
    "pipeline.web",
    # the ORM state store and what only it needs: a search reads the state through
    # pipeline.statedb (sqlite3), appends through pipeline.auditchain
    "sqlalchemy",
    "argon2",
    "pipeline.store",
    "pipeline.service",
    "pipeline.users",
)


def _imported(stderr: str) -> set[str]:
    """Module names from `python -X importtime` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _home_with_one_page(home: Path) -> None:
    from pipeline.index.base import IndexItem, IndexPage
    from pipeline.index.sqlite import SqliteIndex

    index = SqliteIndex(home / "index.sqlite")
    index.index_item(IndexItem("A-1", "理赔申请书", {"year": "2014"}, (IndexPage(2, "理賠申請書 事故經過"),)))
    index.close()
    Store(home / "state.sqlite").close()  # the state database exists, at the newest migration


def test_a_cold_search_imports_no_batch_ocr_web_or_migration_stack(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _home_with_one_page(home)
    for _ in range(2):  # the first loads the settings in full and leaves their snapshot
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "pipeline.cli", "search", "理赔申请", "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "CAPTURE_HOME": str(home)},
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    hits = json.loads(result.stdout)["hits"]
    assert [(h["archive_code"], h["page"]) for h in hits] == [("A-1", 2)]
    imported = _imported(result.stderr)
    assert "pipeline.cli.search" in imported and "sqlite3" in imported  # the parse saw the imports
    heavy = sorted(n for n in imported if any(n == m or n.startswith(m + ".") for m in NOT_FOR_SEARCH))
    assert heavy == [], heavy
    assert not {n for n in imported if n == "rich" or n.startswith("rich.")}  # --json prints without Rich
    # the settings came from the snapshot (pipeline.settingsnap): no pydantic-settings, no asyncio
    assert not imported & {"pydantic_settings", "pipeline.settings", "asyncio"}
    others = {"pipeline.cli.batch", "pipeline.cli.lifecycle", "pipeline.cli.serve", "pipeline.cli.disposal"}
    assert not imported & others  # only the command's own module is loaded
    with Store(home / "state.sqlite").session() as session:  # and the search was still audited
        actions = session.execute(text("SELECT action FROM audit_log")).scalars().all()
    assert "search" in actions
    assert _capture(home, "audit-log", "verify").returncode == 0  # the lean append keeps the chain


def test_every_command_is_loaded_from_the_module_that_registers_it() -> None:
    from pipeline.cli import COMMAND_MODULES, app

    seen = {}
    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.replace("_", "-")
        seen[name] = {command.callback.__module__}
    for group in app.registered_groups:
        assert group.typer_instance is not None and group.name
        seen[group.name] = {
            c.callback.__module__ for c in group.typer_instance.registered_commands if c.callback
        }
    assert seen == {name: {f"pipeline.cli.{module}"} for name, module in COMMAND_MODULES.items()}


def test_help_still_lists_every_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "CAPTURE_HOME": str(tmp_path / "home"), "COLUMNS": "200"},
        timeout=120,
    )
    assert result.returncode == 0
    from pipeline.cli import COMMAND_MODULES

    for name in COMMAND_MODULES:
        assert f" {name} " in result.stdout, name


def test_the_head_revision_read_from_file_names_is_alembics() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_a_database_one_migration_behind_is_still_upgraded(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from pipeline.statedb import LeanStore

    store = Store(database_url)
    assert at_head(store.engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    assert not at_head(store.engine)
    assert LeanStore.open(database_url) is None  # a search then opens the full store, which upgrades
    store.close()
    again = Store(database_url)
    with again.engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == head_revision() and at_head(again.engine)
    again.close()


# ------------------------------------------------------------------ the lean state path


def _capture(home: Path, *args: str, state_url: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAPTURE_HOME": str(home), "CAPTURE_USER": "tester"}
    env.pop("CAPTURE_STATE__URL", None)
    if state_url:
        env["CAPTURE_STATE__URL"] = state_url
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _home_on(tmp_path: Path, database_url: str) -> tuple[Path, str, Store]:
    """A home with a three-item index whose state store is `database_url`; the ORM store on it
    (keyed and anchored in the home, as `capture` opens it)."""
    from pipeline.index.base import IndexItem, IndexPage
    from pipeline.index.sqlite import SqliteIndex

    home = tmp_path / "home"
    home.mkdir()
    index = SqliteIndex(home / "index.sqlite")
    for code, fonds_text in (
        ("BX01-2014-LP-D6-0001", "理赔申请书"),
        ("SB02-2015-CB-D30-0002", "理赔申请 参保"),
    ):
        index.index_item(
            IndexItem(code, fonds_text, {"year": "2014"}, (IndexPage(1, f"{fonds_text} 事故经过"),))
        )
    index.close()
    url = database_url if "://" in database_url else str(home / "state.sqlite")
    return home, ("" if url == str(home / "state.sqlite") else url), Store(url, home=home)


def test_the_lean_search_answers_and_audits_as_the_service_does(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.access import operator
    from pipeline.index.sqlite import SqliteIndex
    from pipeline.searching import audited_search
    from pipeline.service import ArchiveService
    from pipeline.settings import load_settings
    from pipeline.users import find_account, principal_of, save_user

    home, state_url, store = _home_on(tmp_path, database_url)
    save_user(store, "bx_clerk", role="searcher", clearance="绝密", fonds=["BX01"])
    lean = _capture(home, "search", "理赔申请", "--json", "--as-user", "bx_clerk", state_url=state_url)
    assert lean.returncode == 0, lean.stderr[-2000:]
    imported = _imported(lean.stderr)
    assert (
        "pipeline.statedb" in imported
        and "sqlalchemy.orm" not in imported
        and "pipeline.store" not in imported
    )
    if not state_url:
        assert "sqlalchemy" not in imported
    # the ORM route (web, API) for the same account: the same hits, the same audit details
    row = find_account(store, "bx_clerk")
    assert row is not None
    index = SqliteIndex(home / "index.sqlite")
    try:
        orm = audited_search(store, index, principal_of(row), "理赔申请", {}, facets=False, via="cli")
    finally:
        index.close()
    assert json.loads(lean.stdout)["hits"] == orm.to_dict()["hits"]
    assert [h["archive_code"] for h in json.loads(lean.stdout)["hits"]] == ["BX01-2014-LP-D6-0001"]
    searches = [r for r in store.audit_log("search")]
    assert len(searches) == 2 and searches[0].user == searches[1].user == "bx_clerk"
    assert searches[0].details == searches[1].details and searches[0].key_id == searches[1].key_id != ""
    # the operator (no --as-user) reaches both fonds; the service's own search agrees
    everyone = _capture(home, "search", "理赔申请", "--json", state_url=state_url)
    assert everyone.returncode == 0, everyone.stderr[-2000:]
    monkeypatch.setenv("CAPTURE_HOME", str(home))
    monkeypatch.delenv("CAPTURE_STATE__URL", raising=False)
    service = ArchiveService(load_settings(), store)
    try:
        result = service.search(operator("tester"), "理赔申请", {}, facets=False, via="cli")
    finally:
        service.index.close()
    assert json.loads(everyone.stdout)["hits"] == result.to_dict()["hits"] and len(result.hits) == 2
    verify = _capture(home, "audit-log", "verify", state_url=state_url)
    assert verify.returncode == 0 and "intact" in verify.stdout, verify.stdout + verify.stderr[-1000:]
    check = store.verify_audit_chain()
    assert check.intact and check.rows == 5, check.problems  # 4 searches and the verify
    store.close()


def test_the_lean_search_refuses_disabled_and_unknown_accounts(tmp_path: Path, database_url: str) -> None:
    from pipeline.users import save_user, set_disabled

    home, state_url, store = _home_on(tmp_path, database_url)
    save_user(store, "clerk", role="searcher", clearance="绝密")
    set_disabled(store, "clerk", True)
    for name in ("clerk", "ＣＬＥＲＫ"):  # the exact name, and one that looks the same
        refused = _capture(home, "search", "理赔申请", "--as-user", name, state_url=state_url)
        assert refused.returncode == 7 and "disabled" in refused.stderr and refused.stdout == "", (
            refused.stderr
        )
    nobody = _capture(home, "search", "理赔申请", "--as-user", "nobody", state_url=state_url)
    assert nobody.returncode == 7 and "no active user 'nobody'" in nobody.stderr
    rows = store.audit_log()
    assert [(r.user, r.action, r.target, (r.details or {}).get("why")) for r in rows] == [
        ("tester", "cli.refused", "clerk", "account disabled"),
        ("tester", "cli.refused", "ＣＬＥＲＫ", "account disabled"),
        ("tester", "cli.refused", "nobody", "no such account"),
    ]
    assert store.verify_audit_chain().intact
    # enabled again, the account searches within its own reach
    set_disabled(store, "clerk", False)
    allowed = _capture(home, "search", "理赔申请", "--json", "--as-user", "clerk", state_url=state_url)
    assert allowed.returncode == 0 and len(json.loads(allowed.stdout)["hits"]) == 2
    assert store.verify_audit_chain().intact
    store.close()


def test_a_tampered_log_is_still_reported_after_lean_searches(tmp_path: Path, database_url: str) -> None:
    from sqlalchemy import update

    from pipeline.store import AuditRow

    home, state_url, store = _home_on(tmp_path, database_url)
    for _ in range(3):
        assert _capture(home, "search", "理赔申请", state_url=state_url).returncode == 0
    with store.session() as session:
        session.execute(update(AuditRow).where(AuditRow.id == 2).values(target="something else"))
    assert _capture(home, "search", "参保", state_url=state_url).returncode == 0  # appends on
    check = store.verify_audit_chain()
    assert check.rows == 4 and check.problems == ["row 2: its content does not match its hash (changed)"]
    verify = _capture(home, "audit-log", "verify", state_url=state_url)
    assert verify.returncode != 0 and "row 2" in verify.stdout + verify.stderr
    store.close()


def test_the_lean_store_reads_the_same_grants_accounts_and_times(tmp_path: Path, database_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import DateTime, select
    from sqlalchemy.dialects import sqlite

    from pipeline.auditchain import db_time
    from pipeline.statedb import LeanStore
    from pipeline.store.schema import AccessRequestRow, now
    from pipeline.users import save_user

    at = datetime(2026, 11, 24, 13, 7, 12, 469897, tzinfo=UTC)
    dialect = sqlite.dialect()
    bind = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None and db_time("sqlite", at) == bind(at)  # the text SQLAlchemy stores

    home, state_url, store = _home_on(tmp_path, database_url)
    save_user(store, "reader", role="searcher", clearance="公开", fonds=["BX01", "SB02"], display_name="读者")
    reader = store.user("reader")
    assert reader is not None
    for code, until in (
        ("BX01-2014-LP-D6-0001", now() + timedelta(hours=1)),
        ("SB02-2015-CB-D30-0002", now()),
    ):
        request = store.add_access_request(reader.id, "reader", code, "research", 1)
        store.decide_access_request(request.id, approve=True, by="archivist", reason="ok", until=until)
    lean = LeanStore.open(state_url or home / "state.sqlite", home=home)
    assert lean is not None
    try:
        with store.session() as session:  # the statement the ORM store ran before it shared grant_codes
            reference = session.scalars(
                select(AccessRequestRow.archive_code).where(
                    AccessRequestRow.user_id == reader.id,
                    AccessRequestRow.status == "approved",
                    AccessRequestRow.granted_until > now(),
                )
            ).all()
        assert lean.live_grant_codes(reader.id) == tuple(reference) == ("BX01-2014-LP-D6-0001",)
        account = lean.user("reader")
        assert account is not None
        assert (account.username, account.id, account.role, account.clearance, account.fonds) == (
            reader.username,
            reader.id,
            reader.role,
            reader.clearance,
            reader.fonds,
        )
        assert (account.display_name, account.disabled) == ("读者", False)
        assert [a.username for a in lean.users()] == [u.username for u in store.users()]
        lean.audit("reader", "search", "x" * 3000, {"日期": at, "n": 1})  # cut, details as stored
    finally:
        lean.close()
    [row] = store.audit_log("search")
    assert len(row.target) == 2000 and row.details == {"日期": str(at), "n": 1}
    assert store.verify_audit_chain().intact
    store.close()


# ------------------------------------------------------------------ the settings snapshot


def _search_imports(home: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline.cli", "search", "理赔申请", "--json", *args],
        capture_output=True,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.upper().startswith("CAPTURE_")},
            "CAPTURE_HOME": str(home),
            **env,
        },
        timeout=120,
    )
    return run, _imported(run.stderr)


def test_the_settings_snapshot_is_used_only_while_every_input_is_unchanged(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _home_with_one_page(home)
    first, imported = _search_imports(home)
    assert (
        first.returncode == 0
        and "pydantic_settings" in imported
        and (home / "settings-snapshot.json").is_file()
    )
    again, imported = _search_imports(home)
    assert again.returncode == 0 and "pydantic_settings" not in imported
    assert json.loads(again.stdout) == json.loads(first.stdout)
    # an environment variable the loader reads: the full loader, and its value applies
    shorter, imported = _search_imports(home, CAPTURE_INDEX__SNIPPET_CHARS="5")
    assert shorter.returncode == 0 and "pydantic_settings" in imported
    assert json.loads(shorter.stdout)["hits"][0]["snippet"] != json.loads(first.stdout)["hits"][0]["snippet"]
    # a misspelled one is the same error as for every other command, snapshot or not
    wrong, _ = _search_imports(home, CAPTURE_INDEX__SNIPET_CHARS="5")
    assert wrong.returncode == 2 and "CAPTURE_INDEX__SNIPPET_CHARS" in wrong.stderr
    # a config file, then the same file changed on disk (a value out of range)
    config = tmp_path / "capture.toml"
    config.write_text("[index]\nsnippet_chars = 40\n", encoding="utf-8")
    for _ in range(2):
        ok, imported = _search_imports(home, CAPTURE_CONFIG=str(config))
        assert ok.returncode == 0
    assert "pydantic_settings" not in imported  # the second: snapshot of this config
    config.write_text("[index]\nsnippet_chars = 1\n", encoding="utf-8")
    bad, imported = _search_imports(home, CAPTURE_CONFIG=str(config))
    assert bad.returncode == 2 and "snippet_chars" in bad.stderr and "pydantic_settings" in imported
    # another backend on the command line is never answered from the snapshot
    for _ in range(2):  # (the snapshot is of the last inputs loaded in full: the config file's)
        _, imported = _search_imports(home, "--backend", "sqlite")
    assert "pydantic_settings" not in imported
    other, imported = _search_imports(home, "--backend", "elasticsearch")
    assert "pydantic_settings" in imported


def test_a_changed_or_foreign_snapshot_is_not_used(tmp_path: Path) -> None:
    from pipeline.settingsnap import SNAPSHOT

    home = tmp_path / "home"
    _home_with_one_page(home)
    assert _search_imports(home)[0].returncode == 0
    snapshot = home / SNAPSHOT
    stored = json.loads(snapshot.read_text(encoding="utf-8"))
    # someone points the search at another state database: the HMAC no longer matches
    elsewhere = tmp_path / "elsewhere.sqlite"
    body = stored["body"].replace(str(home / "state.sqlite"), str(elsewhere))
    snapshot.write_text(json.dumps({"body": body, "mac": stored["mac"]}), encoding="utf-8")
    run, imported = _search_imports(home)
    assert run.returncode == 0 and "pydantic_settings" in imported and not elsewhere.exists()
    # a snapshot from another home (its own key) is not this home's
    other = tmp_path / "other"
    _home_with_one_page(other)
    assert _search_imports(other)[0].returncode == 0
    (home / SNAPSHOT).write_bytes((other / SNAPSHOT).read_bytes())
    run, imported = _search_imports(home)
    assert run.returncode == 0 and "pydantic_settings" in imported


def test_the_snapshot_holds_what_the_full_loader_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.settings import load_settings
    from pipeline.settingsnap import read_snapshot, search_settings

    home = tmp_path / "home"
    _home_with_one_page(home)
    for name in [k for k in os.environ if k.upper().startswith("CAPTURE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CAPTURE_HOME", str(home))
    monkeypatch.setenv("CAPTURE_STATE__URL", "postgresql+psycopg://capture@db.example/archive")
    monkeypatch.setenv("CAPTURE_INDEX__SNIPPET_CHARS", "44")
    full = load_settings()
    assert read_snapshot() is None
    search_settings()
    snap = read_snapshot()
    assert snap is not None
    assert (snap.home_dir, snap.index_path, snap.state_url) == (
        full.home_dir,
        full.index_path,
        full.state_url,
    )
    assert (
        (snap.index.backend, snap.index.snippet_chars)
        == (full.index.backend, full.index.snippet_chars)
        == ("sqlite", 44)
    )
    monkeypatch.setenv("CAPTURE_INDEX__SNIPPET_CHARS", "45")
    assert read_snapshot() is None
    # a relative home folder is this working directory's: elsewhere it is another folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAPTURE_HOME", "home")
    search_settings()
    assert read_snapshot() is not None
    (tmp_path / "sub" / "home").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub")
    assert read_snapshot() is None and load_settings().home_dir == tmp_path / "sub" / "home"
    # two spellings of CAPTURE_HOME: the loader's choice is not guessed
    monkeypatch.chdir(tmp_path)
    assert read_snapshot() is not None
    monkeypatch.setenv("capture_home", "home")
    assert read_snapshot() is None


def test_lean_searches_and_orm_appends_at_once_build_one_chain(tmp_path: Path, database_url: str) -> None:
    import threading

    home, state_url, store = _home_on(tmp_path, database_url)
    env = {**os.environ, "CAPTURE_HOME": str(home), "CAPTURE_USER": "tester"}
    env.pop("CAPTURE_STATE__URL", None)
    if state_url:
        env["CAPTURE_STATE__URL"] = state_url
    searches = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "search", "理赔申请"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]

    def orm_appends() -> None:
        for n in range(10):
            store.audit("orm", "test.append", str(n))

    thread = threading.Thread(target=orm_appends)
    thread.start()
    thread.join()
    assert [p.wait(timeout=120) for p in searches] == [0] * 4
    check = store.verify_audit_chain()
    assert check.intact and check.rows == 14, check.problems
    assert len(store.audit_log("search")) == 4 and len(store.audit_log("test.append")) == 10
    store.close()
