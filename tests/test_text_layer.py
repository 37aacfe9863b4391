"""The PDF text layer: no space between Chinese characters, phrases found across box cuts.

Checked with pdftotext (poppler) and with PDFium's own search (the engine of Chrome's PDF
viewer), on hand-made boxes and on rendered pages the real engine reads: a seal over a line,
a two-column table row, and a line broken into two boxes by a gap.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw, ImageFont

from pipeline import package
from pipeline.models import OcrLine, OcrPage
from pipeline.ocr.base import in_reading_order, rows

CJK_SPACE_CJK = re.compile(r"[\u3400-\u9fff][ \t\u3000]+[\u3400-\u9fff]")
FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
SC = 2


def _pdf(tmp_path: Path, image: np.ndarray, ocr: OcrPage) -> Path:
    image_path = package.encode_page_image(image, "gray", tmp_path / "page", 90)
    pdf = package.build_pdf([package.PackagePage(image_path, "gray", 300, ocr)])
    out = package.save_pdfa(pdf, tmp_path / "page.pdf")
    assert out.pdfa_valid, out.validator_findings
    return out.pdf_path


def _pdftotext(path: Path) -> str:
    run = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True, check=True
    )
    return run.stdout


def _viewer_finds(path: Path, phrase: str) -> bool:
    """PDFium's search, as a viewer's find box runs it."""
    document = pdfium.PdfDocument(str(path))
    try:
        text_page = document[0].get_textpage()
        searcher = text_page.search(phrase, match_case=False, match_whole_word=False)
        return searcher.get_next() is not None
    finally:
        document.close()


def _blank(width: int = 2480, height: int = 900) -> np.ndarray:
    return np.full((height, width), 240, np.uint8)


# ------------------------------------------------------------------ hand-made boxes


@pytest.mark.parametrize("gap", [40, 300], ids=["word-gap", "wide-gap"])
def test_a_line_cut_in_two_boxes_extracts_and_searches_as_one(tmp_path: Path, gap: int) -> None:
    # a small gap made pdftotext insert a space, a wide one a line break (before the fix)
    ocr = OcrPage(
        "test",
        (
            OcrLine("保险合同", (200, 100, 400, 150), 0.99),
            OcrLine("号码已登记", (400 + gap, 102, 650 + gap, 151), 0.99),
            OcrLine("第二行文字", (200, 200, 450, 250), 0.99),
        ),
        2480,
        900,
    )
    path = _pdf(tmp_path, _blank(), ocr)
    text = _pdftotext(path)
    assert "保险合同号码已登记" in text, text
    assert not CJK_SPACE_CJK.search(text), text
    for phrase in ("合同号码", "保险合同号码已登记", "第二行"):
        assert _viewer_finds(path, phrase), phrase


def test_boxes_of_one_row_are_joined_left_to_right_whatever_their_order(tmp_path: Path) -> None:
    # a seal pushes the right box up a little and makes it taller; the engine lists it first
    right = OcrLine("合同号", (600, 90, 760, 160), 0.9)
    left = OcrLine("投保人保险", (200, 100, 450, 150), 0.99)
    latin = OcrLine("P2012-000123", (900, 100, 1250, 150), 0.99)
    ocr = OcrPage("test", (right, latin, left), 2480, 900)
    assert in_reading_order(ocr.lines) == (left, right, latin)
    assert [len(r) for r in rows(ocr.lines)] == [3]
    path = _pdf(tmp_path, _blank(), ocr)
    text = _pdftotext(path)
    # Chinese meets Chinese without a gap; the gap before the Latin box is kept (a word break)
    assert "投保人保险合同号" in text and "P2012-000123" in text, text
    assert _viewer_finds(path, "保险合同号")


def test_overlapping_boxes_do_not_scramble_the_text(tmp_path: Path) -> None:
    ocr = OcrPage(
        "test",
        (OcrLine("养老保险", (200, 100, 420, 150), 0.99), OcrLine("待遇核定", (400, 100, 620, 150), 0.99)),
        2480,
        900,
    )
    text = _pdftotext(_pdf(tmp_path, _blank(), ocr))
    assert "养老保险待遇核定" in text, text


# ------------------------------------------------------------------ rendered pages, real engine


def _render(draw_page) -> np.ndarray:  # type: ignore[no-untyped-def]
    page = Image.new("RGB", (2480, 1000), (240, 238, 232))
    draw = ImageDraw.Draw(page)
    draw_page(draw, ImageFont.truetype(FONT, 50, index=SC))
    return np.asarray(page.convert("L"))


def _seal(draw, font) -> None:  # type: ignore[no-untyped-def]
    draw.text((200, 300), "本合同自双方签字盖章之日起生效，保险责任同时开始。", font=font, fill=(40, 40, 40))
    draw.ellipse((760, 180, 1060, 480), outline=(200, 40, 40), width=14)
    draw.text((800, 300), "合同专用章", font=ImageFont.truetype(FONT, 44, index=SC), fill=(200, 40, 40))


def _table_row(draw, font) -> None:  # type: ignore[no-untyped-def]
    draw.rectangle((200, 280, 2280, 400), outline=(30, 30, 30), width=4)
    draw.line((1000, 280, 1000, 400), fill=(30, 30, 30), width=4)
    draw.text((240, 310), "投保人姓名", font=font, fill=(40, 40, 40))
    draw.text((1040, 310), "王建国先生", font=font, fill=(40, 40, 40))


def _gap(draw, font) -> None:  # type: ignore[no-untyped-def]
    draw.text((200, 300), "被保险人健康告知", font=font, fill=(40, 40, 40))
    draw.text((1400, 300), "无异常情况说明", font=font, fill=(40, 40, 40))


@pytest.mark.parametrize(
    ("layout", "phrases"),
    [
        (_seal, ["本合同自双方", "签字盖章", "责任同时开始"]),
        (_table_row, ["投保人姓名", "王建国先生", "姓名王建国"]),
        (_gap, ["健康告知", "告知无异常", "被保险人健康告知无异常情况说明"]),
    ],
    ids=["seal-over-text", "two-column-table-row", "line-in-two-boxes"],
)
def test_rendered_layouts_extract_without_spaces_and_are_found(  # type: ignore[no-untyped-def]
    tmp_path: Path, rapid_engine, layout, phrases: list[str]
) -> None:
    image = _render(layout)
    ocr = rapid_engine.recognise(image)
    if layout is not _seal:  # PP-OCRv6 reads through a seal in one box; the others it cuts
        assert len(ocr.lines) >= 2, "the layout should give the engine more than one box on the row"
    path = _pdf(tmp_path, image, ocr)
    text = _pdftotext(path)
    assert not CJK_SPACE_CJK.search(text), text
    flat = text.replace("\n", "")
    for phrase in phrases:
        assert phrase in flat, (phrase, text)
        assert _viewer_finds(path, phrase), phrase
