"""The engine interface, text normalising, reading order, and the factory that picks an engine."""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pipeline.models import OcrLine, OcrPage
from pipeline.settings import OcrSettings

# CJK ideographs, CJK punctuation and full-width forms: no space belongs between these.
_CJK = (
    r"\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff"
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
)
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_SPACE_RUNS = re.compile(r"[ \t\u3000]+")
# Two boxes are on one visual row when they overlap vertically by this share of the lower one.
_ROW_OVERLAP = 0.5


def normalise_text(text: str) -> str:
    """NFKC width folding, single spaces, and no spaces left between Chinese characters."""
    text = unicodedata.normalize("NFKC", text)
    text = _SPACE_RUNS.sub(" ", text).strip()
    return _SPACE_BETWEEN_CJK.sub("", text)


def joins_without_space(left: str, right: str) -> bool:
    """Whether `right` follows `left` on one row with no space between (Chinese meets Chinese)."""
    return bool(left and right and _CJK_CHAR.match(left[-1]) and _CJK_CHAR.match(right[0]))


def rows(lines: Sequence[OcrLine]) -> list[list[OcrLine]]:
    """The lines grouped into visual rows, top to bottom, each row's boxes left to right.

    A detector often cuts one printed line into several boxes (a seal or a table rule across
    it, a wide gap between two cells); they stay one row here, so whatever joins them (the page
    text, the PDF text layer) can join them without a space.
    """
    grouped: list[list[OcrLine]] = []
    spans: list[tuple[float, float]] = []  # each row's mean top and bottom
    for line in sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3]) / 2):
        top, bottom = line.box[1], line.box[3]
        for n, (row_top, row_bottom) in enumerate(spans):
            overlap = min(bottom, row_bottom) - max(top, row_top)
            if overlap >= _ROW_OVERLAP * max(1.0, min(bottom - top, row_bottom - row_top)):
                grouped[n].append(line)
                members = grouped[n]
                spans[n] = (
                    statistics.fmean(m.box[1] for m in members),
                    statistics.fmean(m.box[3] for m in members),
                )
                break
        else:
            grouped.append([line])
            spans.append((top, bottom))
    order = sorted(range(len(grouped)), key=lambda n: spans[n][0] + spans[n][1])
    return [sorted(grouped[n], key=lambda ln: ln.box[0]) for n in order]


def in_reading_order(lines: Sequence[OcrLine]) -> tuple[OcrLine, ...]:
    """Rows top to bottom, each left to right."""
    return tuple(line for row in rows(lines) for line in row)


class OcrEngine(Protocol):
    """Recognise one cleaned page image (grey or BGR array)."""

    name: str

    def recognise(self, image: np.ndarray) -> OcrPage: ...


def import_engine(settings: OcrSettings) -> None:
    """Import the engine's modules (and its runtime's) without creating it."""
    if settings.engine == "tesseract":
        import pipeline.ocr.tesseract  # noqa: F401

        return
    import rapidocr  # noqa: F401

    import pipeline.ocr.rapid  # noqa: F401

    if settings.rapidocr_runtime == "openvino":
        import openvino  # noqa: F401
        from rapidocr.inference_engine.openvino import main  # noqa: F401
    else:
        import onnxruntime  # noqa: F401


def create_engine(settings: OcrSettings) -> OcrEngine:
    if settings.engine == "tesseract":
        from pipeline.ocr.tesseract import TesseractEngine

        return TesseractEngine(
            languages=settings.tesseract_languages,
            psm=settings.tesseract_psm,
            timeout=settings.tesseract_timeout,
            threads=settings.engine_threads,
            min_confidence=settings.min_line_confidence,
        )
    from pipeline.ocr.rapid import RapidOcrEngine

    return RapidOcrEngine(
        models=settings.engine,
        threads=settings.engine_threads,
        min_confidence=settings.min_line_confidence,
        runtime=settings.rapidocr_runtime,
        line_batch=settings.line_batch,
    )
