"""A second copy: `capture replicate` twice (the second copies nothing), a rescanned package and the
primary's superseded packages mirrored, a damaged primary repaired from the copy, and a repair
refused when the copy is damaged too."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from pipeline.archive import sha256_of
from pipeline.store import Store
from tests.conftest import make_settings
from tests.test_lifecycle_fixity import PDF_ITEM, capture, copy_home, flip_byte


@pytest.fixture
def home(sample_run, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    return copy_home(sample_run, tmp_path / "home")


def test_replicate_twice_then_repair_the_primary_from_the_copy(home: Path, tmp_path: Path) -> None:
    copy = tmp_path / "offsite"
    first = capture(home, "replicate", "--to", str(copy))
    assert first.returncode == 0, first.stderr
    assert "copied 4, already there and verified 0" in first.stdout
    pdf = copy / PDF_ITEM / f"{PDF_ITEM}.pdf"
    assert pdf.read_bytes() == (home / "archive" / PDF_ITEM / f"{PDF_ITEM}.pdf").read_bytes()
    assert not stat.S_IMODE(pdf.stat().st_mode) & 0o222
    made = pdf.stat().st_mtime_ns
    second = capture(home, "replicate", "--to", str(copy))
    assert second.returncode == 0 and "copied 0, already there and verified 4" in second.stdout
    assert pdf.stat().st_mtime_ns == made  # nothing was written again
    assert capture(home, "fixity", "check", "--copy", str(copy)).returncode == 0

    flip_byte(home / "archive" / PDF_ITEM / f"{PDF_ITEM}.pdf")
    assert capture(home, "fixity", "check").returncode == 11
    refused_copy = capture(home, "replicate", "--to", str(tmp_path / "second-copy"))
    assert (
        refused_copy.returncode == 11 and f"{PDF_ITEM}/{PDF_ITEM}.pdf" in refused_copy.stderr
    )  # damage never copied
    assert not (tmp_path / "second-copy" / PDF_ITEM).exists()

    repaired = capture(home, "repair", PDF_ITEM, "--from", str(copy))
    assert repaired.returncode == 0, repaired.stderr
    assert "restored" in repaired.stdout
    assert capture(home, "fixity", "check").returncode == 0
    kept = list((home / "archive" / ".damaged").glob(f"{PDF_ITEM}.*"))
    assert len(kept) == 1  # the damaged package is kept aside
    again = capture(home, "repair", PDF_ITEM, "--from", str(copy))
    assert again.returncode == 0 and "intact; nothing to repair" in again.stdout
    store = Store(make_settings(home).state_url)
    try:
        assert [r.root for r in store.replicas()] == [
            str(copy.resolve()),
            str((tmp_path / "second-copy").resolve()),
        ]
        assert len(store.replica_copies(str(copy.resolve()))) == 4
        actions = [r.action for r in store.audit_log()]
        assert actions.count("replicate") == 3 and actions.count("repair") == 2
        assert [r.scope for r in store.fixity_runs()][:2] == ["all", "repair"]
    finally:
        store.close()


def test_repair_refuses_when_the_copy_is_damaged_too(home: Path, tmp_path: Path) -> None:
    copy = tmp_path / "offsite"
    assert capture(home, "replicate", "--to", str(copy)).returncode == 0
    primary = home / "archive" / PDF_ITEM / f"{PDF_ITEM}.pdf"
    flip_byte(primary, 4000)
    flip_byte(copy / PDF_ITEM / f"{PDF_ITEM}.pdf", 6000)
    before = primary.read_bytes()
    refused = capture(home, "repair", PDF_ITEM, "--from", str(copy))
    assert refused.returncode == 11
    assert "damaged too" in refused.stderr and "nothing was changed" in refused.stderr
    assert primary.read_bytes() == before and not (home / "archive" / ".damaged").exists()
    assert capture(home, "fixity", "check", "--copy", str(copy)).returncode == 11
    store = Store(make_settings(home).state_url)
    try:
        assert [r.target for r in store.audit_log("repair.refused")] == [PDF_ITEM]
    finally:
        store.close()


def test_rescanned_and_superseded_packages_are_mirrored(home: Path, tmp_path: Path) -> None:
    copy = tmp_path / "offsite"
    assert capture(home, "replicate", "--to", str(copy)).returncode == 0
    archive = home / "archive"
    # a rescan: the current package moves to .superseded/, a new one takes its place (as process does)
    from pipeline.archive import ArchiveLayout

    staging = archive / ".staging" / "rescan"
    shutil.copytree(archive / PDF_ITEM, staging)
    for path in staging.iterdir():
        os.chmod(path, 0o644)
    record = json.loads((staging / "record.json").read_text(encoding="utf-8"))
    record["batch_id"] = "rescan-batch"
    (staging / "record.json").write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    pdf_line = (staging / "manifest-sha256.txt").read_text(encoding="utf-8").splitlines()[0]
    record_line = f"{sha256_of(staging / 'record.json')[0]}  record.json"
    (staging / "manifest-sha256.txt").write_text(f"{pdf_line}\n{record_line}\n", encoding="utf-8")
    (staging / "decisions.jsonl").write_text('{"action": "approve"}\n', encoding="utf-8")
    ArchiveLayout(archive).move_into_place(staging, PDF_ITEM)
    kept = list((archive / ".superseded").glob(f"{PDF_ITEM}.*"))
    assert len(kept) == 1
    again = capture(home, "replicate", "--to", str(copy))
    assert again.returncode == 0, again.stderr
    assert "superseded packages copied 0" in again.stdout  # the copy's own older package moved aside
    assert (copy / ".superseded" / kept[0].name / f"{PDF_ITEM}.pdf").is_file()
    assert "copied 1, already there and verified 3" in again.stdout
    assert "rescan-batch" in (copy / PDF_ITEM / "record.json").read_text(encoding="utf-8")
    assert list((copy / ".superseded").iterdir()) == [copy / ".superseded" / kept[0].name]
    assert (copy / PDF_ITEM / "decisions.jsonl").read_text(encoding="utf-8") == '{"action": "approve"}\n'
    assert capture(home, "fixity", "check", "--copy", str(copy)).returncode == 0
    inside = capture(home, "replicate", "--to", str(archive / "copy"))
    assert inside.returncode == 2 and "a copy must be elsewhere" in inside.stderr
