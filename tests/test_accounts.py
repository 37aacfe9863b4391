"""Accounts that can be ended, a lock-out that cannot be raced, and an audit log that shows tampering.

Real SQLite and PostgreSQL (the `database_url` fixture gives a fresh database of each kind).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import delete, text, update

from pipeline.errors import AccessDenied, AccountLocked
from pipeline.store import AuditRow, Store
from pipeline.users import (
    Lockout,
    change_password,
    delete_user,
    end_session,
    log_in,
    make_token,
    save_user,
    session_id,
    session_user,
    set_disabled,
    start_session,
    user_for_token,
)

PASSWORD = "correct horse 8"
LOCKOUT = Lockout(max_failures=5, minutes=15)


@pytest.fixture
def store(database_url: str):  # type: ignore[no-untyped-def]
    db = Store(database_url)
    yield db
    db.close()


def _simultaneous_log_ins(store: Store, guesses: list[str]) -> list[str]:
    start = threading.Barrier(len(guesses))
    outcomes: list[str] = []

    def attempt(password: str) -> None:
        start.wait()
        try:
            log_in(store, "target", password, LOCKOUT, via="test")
            outcomes.append("in")
        except AccountLocked:
            outcomes.append("locked")
        except AccessDenied:
            outcomes.append("wrong")

    threads = [threading.Thread(target=attempt, args=(p,)) for p in guesses]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == len(guesses), outcomes
    checked = outcomes.count("wrong") + outcomes.count("in")
    audited = [r.action for r in store.audit_log() if r.user == "target"]
    assert audited.count("login.failed") + audited.count("login") == checked, (outcomes, audited)
    return outcomes


def test_simultaneous_wrong_log_ins_check_no_more_passwords_than_the_limit(store: Store) -> None:
    save_user(store, "target", role="searcher", clearance="内部", password=PASSWORD)
    outcomes = _simultaneous_log_ins(store, [f"wrong guess {n}" for n in range(25)])
    assert outcomes.count("wrong") == LOCKOUT.max_failures, outcomes
    assert outcomes.count("locked") == 25 - LOCKOUT.max_failures
    with pytest.raises(AccountLocked):  # locked now: not even the right password is checked
        log_in(store, "target", PASSWORD, LOCKOUT, via="test")


def test_a_right_password_among_simultaneous_guesses_resets_the_count_once(store: Store) -> None:
    """A success clears the count (as a log-in after a typo should), so guesses reserved on
    either side of it are limited separately: never more than the limit before and after."""
    save_user(store, "target", role="searcher", clearance="内部", password=PASSWORD)
    guesses = [f"wrong guess {n}" for n in range(24)]
    guesses.insert(17, PASSWORD)  # the right one arrives among the guesses
    outcomes = _simultaneous_log_ins(store, guesses)
    checked = outcomes.count("wrong") + outcomes.count("in")
    limit = LOCKOUT.max_failures if "in" not in outcomes else 2 * LOCKOUT.max_failures
    assert checked <= limit, outcomes
    assert outcomes.count("locked") >= 25 - limit
    if "in" not in outcomes:  # the right password came too late: the account is locked now
        with pytest.raises(AccountLocked):
            log_in(store, "target", PASSWORD, LOCKOUT, via="test")


def test_the_account_page_is_locked_too_and_the_right_password_does_not_unlock_it(store: Store) -> None:
    save_user(store, "pat", role="searcher", clearance="内部", password=PASSWORD)
    session = start_session(store, log_in(store, "pat", PASSWORD, LOCKOUT, via="test"))
    for n in range(5):
        with pytest.raises(AccessDenied):
            change_password(store, "pat", f"guess {n}", "a new password 1", LOCKOUT)
    for _ in range(3):  # locked: not even the right current password is checked, nothing resets
        with pytest.raises(AccountLocked):
            change_password(store, "pat", PASSWORD, "a new password 1", LOCKOUT)
    with pytest.raises(AccountLocked):
        log_in(store, "pat", PASSWORD, LOCKOUT, via="test")
    assert session_user(store, session.token, 30) is not None  # locking does not log anyone out
    refused = [r for r in store.audit_log("password.refused") if r.user == "pat"]
    assert len(refused) == 8


def test_log_out_and_password_change_end_sessions_at_once(store: Store) -> None:
    who = save_user(store, "sam", role="searcher", clearance="内部", password=PASSWORD)
    first, second, third = (start_session(store, who) for _ in range(3))
    end_session(store, first.token, "logged out")
    assert session_user(store, first.token, 30) is None  # the old cookie is worthless
    change_password(store, "sam", PASSWORD, "another secret 2", LOCKOUT, keep_session=session_id(third.token))
    assert session_user(store, second.token, 30) is None  # other browsers are logged out
    assert session_user(store, third.token, 30) is not None  # the one that changed it stays
    save_user(store, "sam", role="searcher", clearance="内部", password="an admin reset 3")
    assert session_user(store, third.token, 30) is None  # an admin's new password ends them all


def test_disable_revoke_and_delete_end_tokens_and_sessions(store: Store) -> None:
    who = save_user(store, "kim", role="qa", clearance="秘密", password=PASSWORD)
    token = make_token(store, "kim", "records system")
    session = start_session(store, who)
    set_disabled(store, "kim", True)
    assert session_user(store, session.token, 30) is None
    with pytest.raises(AccessDenied):
        user_for_token(store, token)
    with pytest.raises(AccessDenied):
        log_in(store, "kim", PASSWORD, LOCKOUT, via="test")
    set_disabled(store, "kim", False)
    assert user_for_token(store, token).username == "kim"  # enabled again: the token was never revoked
    assert session_user(store, session.token, 30) is None  # but ended sessions stay ended
    row = store.user("kim")
    assert row is not None
    store.revoke_tokens(row.id)
    with pytest.raises(AccessDenied):
        user_for_token(store, token)
    token2 = make_token(store, "kim")
    session2 = start_session(store, log_in(store, "kim", PASSWORD, LOCKOUT, via="test"))
    delete_user(store, "kim")
    # the same name given to someone new inherits nothing
    newcomer = save_user(store, "kim", role="searcher", clearance="公开", password="newcomer pw 4")
    assert newcomer.user_id != row.id
    with pytest.raises(AccessDenied):
        user_for_token(store, token2)
    assert session_user(store, session2.token, 30) is None
    with pytest.raises(AccessDenied):
        log_in(store, "kim", PASSWORD, LOCKOUT, via="test")


def test_concurrent_audit_rows_form_one_chain_and_tampering_is_found(store: Store) -> None:
    def writer(n: int) -> None:
        for i in range(10):
            store.audit(f"user{n}", "search", f"query {n}-{i}", {"hits": i, "filters": {"year": "2012"}})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = store.verify_audit_chain()
    assert check.intact and check.rows == 40, check.problems
    rows = store.audit_log()
    victim, changed = rows[17], rows[25]
    with store.session() as session:
        session.execute(delete(AuditRow).where(AuditRow.id == victim.id))
        session.execute(update(AuditRow).where(AuditRow.id == changed.id).values(target="something else"))
    check = store.verify_audit_chain()
    assert not check.intact
    text_of = "\n".join(check.problems)
    assert f"row {victim.id + 1}" in text_of and "missing" in text_of
    assert f"row {changed.id}: its content does not match" in text_of
    assert "the head counts 40 rows, the log holds 39" in text_of


def test_cutting_the_newest_rows_off_is_found(store: Store) -> None:
    for i in range(5):
        store.audit("someone", "view", f"A-{i}")
    with store.session() as session:
        session.execute(text("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)"))
    check = store.verify_audit_chain()
    assert not check.intact and any("the head names row 5" in p for p in check.problems)


def test_audit_log_verify_command_and_owner_only_files(tmp_path: Path) -> None:
    env = {**os.environ, "CAPTURE_HOME": str(tmp_path / "home"), "CAPTURE_USER": "admin1"}
    capture = [sys.executable, "-m", "pipeline.cli"]
    made = subprocess.run(
        [*capture, "user", "add", "ann", "--password-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    ok = subprocess.run(
        [*capture, "audit-log", "verify"], capture_output=True, text=True, env=env, timeout=120
    )
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
    state = tmp_path / "home" / "state.sqlite"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
    store = Store(str(state))
    try:
        with store.session() as session:
            session.execute(text("DELETE FROM audit_log WHERE id = 1"))
    finally:
        store.close()
    broken = subprocess.run(
        [*capture, "audit-log", "verify"], capture_output=True, text=True, env=env, timeout=120
    )
    assert broken.returncode == 10, broken.stdout + broken.stderr
    assert "row 2" in broken.stderr and "Traceback" not in broken.stderr


def test_a_rewritten_or_emptied_log_is_found_by_the_key_and_the_anchor(tmp_path: Path) -> None:
    """Someone who can write the database but not the home folder's key cannot recompute the
    chain; cutting rows off the end and fixing the head up, or emptying the log, is caught by
    the anchor kept outside the database."""
    from pipeline.store.audit import GENESIS, row_hash

    home = tmp_path / "home"
    store = Store(str(home / "state.sqlite"))
    try:
        for i in range(6):
            store.audit("clerk", "view", f"A-{i}")
        assert store.verify_audit_chain().intact
        assert (home / "keys" / "audit.key").stat().st_mode & 0o777 == 0o600
        rows = store.audit_log()
        with store.session() as session:  # rewrite row 3 and every hash after it, without the key
            previous = rows[1].hash
            for row in rows[2:]:
                user = "someone else" if row.id == rows[2].id else row.user
                digest = row_hash(previous, row.id, row.at, user, row.action, row.target, row.details)
                session.execute(
                    update(AuditRow)
                    .where(AuditRow.id == row.id)
                    .values(user=user, prev_hash=previous, hash=digest)
                )
                previous = digest
            session.execute(text(f"UPDATE audit_head SET last_hash = '{previous}'"))
        check = store.verify_audit_chain()
        assert not check.intact and any("does not match its hash" in p for p in check.problems)
        with store.session() as session:  # cut the last row off and make the head agree
            last, before = rows[-1], rows[-2]
            session.execute(delete(AuditRow).where(AuditRow.id == last.id))
            session.execute(
                text("UPDATE audit_head SET rows = rows - 1, last_id = :i, last_hash = :h"),
                {"i": before.id, "h": before.hash},
            )
        assert any("anchor" in p for p in store.verify_audit_chain().problems)
        with store.session() as session:  # empty it altogether
            session.execute(delete(AuditRow))
            session.execute(text(f"UPDATE audit_head SET rows = 0, last_id = 0, last_hash = '{GENESIS}'"))
        check = store.verify_audit_chain()
        assert check.rows == 0 and any("anchor" in p for p in check.problems)
    finally:
        store.close()
