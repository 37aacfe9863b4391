"""Fixity on the processed sample batch: read-only packages, `capture fixity check` naming every
damaged, missing and unexpected file (exit 11) and passing a clean archive (exit 0), each check
recorded, the rolling check taking the least recently checked packages within its quota."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import fixity
from pipeline.settings import FixitySettings
from pipeline.store import Store
from tests.conftest import make_settings

PDF_ITEM = "BX01-2012-CB-D10-0001"
OTHER = "BX01-2013-BQ-D10-0002"
THIRD = "BX01-2014-LP-D6-0003"


def copy_home(sample_run, target: Path) -> Path:  # type: ignore[no-untyped-def]
    settings, _, _ = sample_run
    shutil.copytree(settings.home_dir, target, ignore=shutil.ignore_patterns("prefect"))
    return target


def capture(home: Path, *args: str, user: str = "operator", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CAPTURE_HOME": str(home), "CAPTURE_USER": user, **env}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=180,
    )


def flip_byte(path: Path, offset: int = 5000) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def home(sample_run, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    return copy_home(sample_run, tmp_path / "home")


def test_package_files_are_read_only_and_read_only_packages_can_still_be_superseded(home: Path) -> None:
    from pipeline.archive import ArchiveLayout

    folder = home / "archive" / PDF_ITEM
    for path in folder.iterdir():
        assert not stat.S_IMODE(path.stat().st_mode) & 0o222, path  # no write bit for anyone
    staging = home / "archive" / ".staging" / "next"
    staging.mkdir(parents=True)
    (staging / "record.json").write_text("{}", encoding="utf-8")
    final = ArchiveLayout(home / "archive").move_into_place(staging, PDF_ITEM)
    kept = list((home / "archive" / ".superseded").glob(f"{PDF_ITEM}.*"))
    assert len(kept) == 1 and (kept[0] / f"{PDF_ITEM}.pdf").is_file()
    assert not stat.S_IMODE((final / "record.json").stat().st_mode) & 0o222


def test_a_clean_archive_passes_and_every_kind_of_damage_is_named(home: Path) -> None:
    clean = capture(home, "fixity", "check")
    assert clean.returncode == 0, clean.stderr
    assert "checked 4 packages, 12 files" in clean.stdout

    flip_byte(home / "archive" / PDF_ITEM / f"{PDF_ITEM}.pdf")
    damaged = capture(home, "fixity", "check")
    assert damaged.returncode == 11, damaged.stderr
    assert f"damaged    {PDF_ITEM}/{PDF_ITEM}.pdf  (item {PDF_ITEM})" in damaged.stderr
    assert "1 damaged, missing or unexpected files" in damaged.stderr

    (home / "archive" / OTHER / "record.json").unlink()
    (home / "archive" / THIRD / "notes.txt").write_text("left behind", encoding="utf-8")
    (home / "archive" / "stray-folder").mkdir()
    result = capture(home, "fixity", "check", "--json")
    assert result.returncode == 11
    problems = {(p["kind"], p["path"]) for p in json.loads(result.stdout)["problems"]}
    assert problems == {
        ("damaged", f"{PDF_ITEM}/{PDF_ITEM}.pdf"),
        ("missing", f"{OTHER}/record.json"),
        ("unexpected", f"{THIRD}/notes.txt"),
        ("unexpected", "stray-folder/"),
    }
    only = capture(home, "fixity", "check", "--code", THIRD)
    assert only.returncode == 11 and f"{THIRD}/notes.txt" in only.stderr and PDF_ITEM not in only.stderr
    unknown = capture(home, "fixity", "check", "--code", "NO-SUCH-1")
    assert unknown.returncode == 9

    report = capture(home, "fixity", "report", "--since", "2000-01-01")
    assert report.returncode == 11 and f"{PDF_ITEM}/{PDF_ITEM}.pdf" in report.stderr
    assert "4 of 4 packages checked since 2000-01-01" in report.stdout
    store = Store(make_settings(home).state_url)
    try:
        runs = store.fixity_runs()
        assert [r.problems for r in runs][:3] == [1, 4, 1] and runs[-1].problems == 0
        history = store.fixity_history(PDF_ITEM)
        assert [h.ok for h in history] == [True, False, False]
        checks = [r for r in store.audit_log("fixity.check")]
        assert len(checks) == 4 and all(r.user == "operator" for r in checks)
    finally:
        store.close()


def test_a_manifest_rewritten_to_match_a_changed_file_is_caught(home: Path) -> None:
    assert capture(home, "fixity", "check").returncode == 0  # records each manifest's baseline
    pdf = home / "archive" / PDF_ITEM / f"{PDF_ITEM}.pdf"
    flip_byte(pdf)
    from pipeline.archive import sha256_of

    manifest = home / "archive" / PDF_ITEM / "manifest-sha256.txt"
    os.chmod(manifest, 0o644)
    lines = manifest.read_text(encoding="utf-8").splitlines()
    lines[0] = f"{sha256_of(pdf)[0]}  {PDF_ITEM}.pdf"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = capture(home, "fixity", "check", "--json")
    assert result.returncode == 11
    details = {(p["path"], p["detail"]) for p in json.loads(result.stdout)["problems"]}
    assert (
        f"{PDF_ITEM}/manifest-sha256.txt",
        "the manifest differs from the one recorded at its first check",
    ) in details
    assert (
        f"{PDF_ITEM}/{PDF_ITEM}.pdf",
        "the manifest's SHA-256 of the PDF differs from the state store's",
    ) in details


def test_a_sample_checks_only_some_packages(home: Path) -> None:
    result = capture(home, "fixity", "check", "--sample", "2", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["packages"] == 2


def test_the_rolling_check_takes_the_least_recently_checked_within_its_quota(home: Path) -> None:
    # four packages, two runs a cycle: each run checks two, so two runs cover the archive
    settings = make_settings(home, fixity=FixitySettings(rolling_every_minutes=720, cycle_days=1))
    store = Store(settings.state_url)
    try:
        assert fixity.rolling_quota(4, settings.fixity) == 2
        first = fixity.run_rolling_if_due(settings, store)
        assert [c.archive_code for c in first[0].checks] == [PDF_ITEM, OTHER] and first[0].ok
        assert fixity.run_rolling_if_due(settings, store) == []  # not due again for 12 hours
        second = fixity.rolling_check(settings, store)
        assert [c.archive_code for c in second[0].checks] == [THIRD, "SB02-2015-CB-D30-0004"]
        third = fixity.rolling_check(settings, store)
        assert [c.archive_code for c in third[0].checks] == [PDF_ITEM, OTHER]  # the oldest again
        tight = make_settings(
            home,
            fixity=FixitySettings(rolling_every_minutes=720, rolling_budget_seconds=0.000001, cycle_days=1),
        )
        behind = fixity.rolling_check(tight, store)[0]
        assert len(behind.checks) == 1 and behind.behind  # at least one package, even past the budget
    finally:
        store.close()
