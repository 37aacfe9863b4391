from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pikepdf
import pikepdf.pdfa
import pytest

from pipeline import package
from pipeline.models import CatalogueEntry

ENTRY = CatalogueEntry(
    "BX01-2012-CB-D10-0001",
    1,
    "P2012-000123",
    "王建国",
    "ZY1",
    "2012",
    "承保",
    "10年",
    "内部",
    "B001",
    "",
    "人身保险投保单",
)


@pytest.fixture(scope="module")
def ocr_page(samples_module, rapid_engine):  # type: ignore[no-untyped-def]
    img = np.asarray(
        samples_module.render_page(
            "投保单", ["保险合同号为P2012-000123的保险单已签发。", "被保险人健康告知无异常。"], [], seed=5
        )
    )
    return img, rapid_engine.recognise(img)


@pytest.mark.parametrize("fmt", ["jpeg", "gray", "bilevel"])
def test_pdfa_validates_and_text_round_trips(tmp_path: Path, ocr_page, fmt: str) -> None:  # type: ignore[no-untyped-def]
    img, ocr = ocr_page
    image_path = package.encode_page_image(img, fmt, tmp_path / "p1", 90)
    pdf = package.build_pdf([package.PackagePage(image_path, fmt, 300, ocr)])
    package.write_metadata(pdf, ENTRY.archive_code, ENTRY, "Archive Capture test")
    out = package.save_pdfa(pdf, tmp_path / "item.pdf")
    assert out.pdfa_valid, out.validator_findings
    assert pikepdf.pdfa.validate_written(tmp_path / "item.pdf", "2b").passed

    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(tmp_path / "item.pdf"), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "保险合同号为P2012-000123的保险单已签发" in text
    assert not re.search(r"[\u4e00-\u9fff] +[\u4e00-\u9fff]", text), text
    for line in ocr.lines:
        assert line.text in text

    with pikepdf.open(tmp_path / "item.pdf") as done:
        meta = done.open_metadata()
        assert meta["dc:identifier"] == ENTRY.archive_code
        assert meta["dc:title"] == "人身保险投保单"
        assert "policyholder=王建国" in meta["dc:description"]
        assert meta["pdfaid:part"] == "2"
        image = next(iter(done.pages[0].get_images().values()))
        expected = {"jpeg": "/DCTDecode", "gray": "/FlateDecode", "bilevel": "/CCITTFaxDecode"}[fmt]
        assert str(image.Filter) == expected
        assert int(image.BitsPerComponent) == (1 if fmt == "bilevel" else 8)


def test_a_file_that_fails_validation_is_flagged_not_shipped_silently(tmp_path: Path, ocr_page) -> None:  # type: ignore[no-untyped-def]
    img, ocr = ocr_page
    image_path = package.encode_page_image(img, "gray", tmp_path / "p1", 90)
    pdf = package.build_pdf([package.PackagePage(image_path, "gray", 300, ocr)])
    # JavaScript is forbidden in PDF/A and prepare() does not remove a page-level action
    pdf.pages[0].obj.AA = pikepdf.Dictionary(
        O=pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.alert(1)"))
    )
    out = package.save_pdfa(pdf, tmp_path / "bad.pdf")
    assert not out.pdfa_valid
    assert out.validator_findings
    assert (tmp_path / "bad.pdf").exists()
