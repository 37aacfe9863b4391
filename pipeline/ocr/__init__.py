"""OCR engines behind one interface: RapidOCR (default for Chinese) and Tesseract."""

from pipeline.ocr.base import OcrEngine, create_engine, import_engine, normalise_text

__all__ = ["OcrEngine", "create_engine", "import_engine", "normalise_text"]
