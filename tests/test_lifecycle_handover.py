"""Handover: `capture export --year` writes a BagIt bag (packages, catalogue as XLSX, GB18030 CSV and
JSON) that bagit's own validator accepts; `capture export --verify` finds a changed file later."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import bagit
from openpyxl import load_workbook

from tests.test_lifecycle_fixity import PDF_ITEM, capture, copy_home, flip_byte


def test_the_handover_bag_validates_and_a_changed_file_fails(sample_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = copy_home(sample_run, tmp_path / "home")
    bag_dir = tmp_path / "handover-2012"
    made = capture(home, "export", "--year", "2012", str(bag_dir))
    assert made.returncode == 0, made.stderr
    assert "1 items" in made.stdout and "the bag validates" in made.stdout
    bag = bagit.Bag(str(bag_dir))
    assert bag.is_valid() and "sha256" in bag.algorithms
    assert bag.info["External-Identifier"] == "capture-2012"
    payload = set(bag.payload_files())
    assert f"data/packages/{PDF_ITEM}/{PDF_ITEM}.pdf" in payload
    assert f"data/packages/{PDF_ITEM}/manifest-sha256.txt" in payload
    assert {"data/catalogue.xlsx", "data/catalogue.csv", "data/catalogue.json"} <= payload
    rows = list(csv.reader(io.StringIO((bag_dir / "data" / "catalogue.csv").read_bytes().decode("gb18030"))))
    assert rows[0][:2] == ["档号", "题名"] and rows[1][:2] == [PDF_ITEM, "人身保险投保单"]
    sheet = load_workbook(bag_dir / "data" / "catalogue.xlsx", read_only=True).active
    assert sheet is not None and [r[0] for r in sheet.iter_rows(values_only=True)] == ["档号", PDF_ITEM]
    document = json.loads((bag_dir / "data" / "catalogue.json").read_text(encoding="utf-8"))
    assert document["items"][0]["archive_code"] == PDF_ITEM and len(document["items"][0]["pdf_sha256"]) == 64

    assert capture(home, "export", "--verify", str(bag_dir)).returncode == 0
    flip_byte(bag_dir / "data" / "packages" / PDF_ITEM / f"{PDF_ITEM}.pdf")
    changed = capture(home, "export", "--verify", str(bag_dir))
    assert (
        changed.returncode == 11
        and "not a valid bag" in changed.stderr
        and f"{PDF_ITEM}.pdf" in changed.stderr
    )
    os.unlink(bag_dir / "data" / "catalogue.json")
    assert capture(home, "export", "--verify", str(bag_dir)).returncode == 11

    again = capture(home, "export", "--year", "2012", str(bag_dir))
    assert again.returncode == 2 and "not an empty folder" in again.stderr
    held = capture(
        home, "export", "--year", "2015", str(tmp_path / "held")
    )  # the only 2015 item waits for QA
    assert held.returncode == 9 and not (tmp_path / "held").exists()


def test_a_damaged_package_is_never_handed_over(sample_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = copy_home(sample_run, tmp_path / "home")
    flip_byte(home / "archive" / PDF_ITEM / f"{PDF_ITEM}.pdf")
    refused = capture(home, "export", "--year", "2012", str(tmp_path / "bag"))
    assert refused.returncode == 11 and "repair it before the handover" in refused.stderr
    assert not (tmp_path / "bag").exists()
