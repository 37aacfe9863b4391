"""The engine interface, text normalising, and the factory that picks an engine from settings."""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol

import numpy as np

from pipeline.models import OcrPage
from pipeline.settings import OcrSettings

# CJK ideographs, CJK punctuation and full-width forms: no space belongs between these.
_CJK = (
    r"\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff"
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
)
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_SPACE_RUNS = re.compile(r"[ \t\u3000]+")


def normalise_text(text: str) -> str:
    """NFKC width folding, single spaces, and no spaces left between Chinese characters."""
    text = unicodedata.normalize("NFKC", text)
    text = _SPACE_RUNS.sub(" ", text).strip()
    return _SPACE_BETWEEN_CJK.sub("", text)


class OcrEngine(Protocol):
    """Recognise one cleaned page image (grey or BGR array)."""

    name: str

    def recognise(self, image: np.ndarray) -> OcrPage: ...


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
        threads=settings.engine_threads,
        min_confidence=settings.min_line_confidence,
        runtime=settings.rapidocr_runtime,
    )
