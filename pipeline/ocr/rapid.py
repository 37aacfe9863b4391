"""RapidOCR: PP-OCR models shipped inside the wheel, run by OpenVINO (default) or onnxruntime, offline."""

from __future__ import annotations

import logging
import threading
from importlib.metadata import version
from typing import Literal

import cv2
import numpy as np

from pipeline.models import OcrLine, OcrPage
from pipeline.ocr.base import normalise_text

log = logging.getLogger(__name__)


def _bbox(points: list[list[float]]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))


def _unpin_openvino() -> None:
    """Stop OpenVINO pinning inference threads to CPU cores.

    With a thread count set, OpenVINO's CPU plugin pins its threads, and every engine (and every
    process) pins to the same first cores: two engines with one thread each then share one core
    (measured here: 2 engines x 1 thread ran no faster than 1 x 1; unpinned, 1.4x faster).
    rapidocr-openvino makes its own `Core()` with no way to pass properties, so its module gets
    a `Core` that turns pinning off; everything else it does is unchanged.
    """
    import rapidocr_openvino.utils.infer_engine as infer_engine
    from openvino.runtime import Core

    if getattr(infer_engine.Core, "unpinned", False):
        return

    class UnpinnedCore(Core):  # type: ignore[misc]
        unpinned = True

        def __init__(self) -> None:
            super().__init__()
            self.set_property("CPU", {"ENABLE_CPU_PINNING": False})

    infer_engine.Core = UnpinnedCore


class RapidOcrEngine:
    """One engine instance is used by one thread at a time (a lock guards it)."""

    name = "rapidocr"

    def __init__(
        self,
        *,
        threads: int = 1,
        min_confidence: float = 0.5,
        runtime: Literal["openvino", "onnxruntime"] = "openvino",
    ) -> None:
        if runtime == "openvino":
            from rapidocr_openvino import RapidOCR as OpenVinoOCR

            _unpin_openvino()
            self._ocr = OpenVinoOCR(
                inference_num_threads=threads, text_score=min_confidence, print_verbose=False
            )
        else:
            from rapidocr_onnxruntime import RapidOCR as OnnxOCR

            self._ocr = OnnxOCR(
                intra_op_num_threads=threads,
                inter_op_num_threads=1,
                text_score=min_confidence,
                print_verbose=False,
            )
        self._lock = threading.Lock()
        self.runtime = runtime
        self.version = f"{version('rapidocr-' + runtime)} ({runtime})"

    @staticmethod
    def _bgr(image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def recognise(self, image: np.ndarray) -> OcrPage:
        h, w = image.shape[:2]
        with self._lock:
            result, _ = self._ocr(self._bgr(image), use_cls=False, return_word_box=True)
        lines: list[OcrLine] = []
        for row in result or []:
            points, text, score = row[0], row[1], row[2]
            text = normalise_text(str(text))
            if not text:
                continue
            char_boxes: tuple[tuple[float, float, float, float], ...] = ()
            if len(row) > 3 and row[3]:
                char_boxes = tuple(_bbox(b) for b in row[3])
            lines.append(OcrLine(text, _bbox(points), float(score), char_boxes))
        return OcrPage(self.name, tuple(lines), w, h)

    def judge_up_down(self, gray: np.ndarray) -> tuple[bool, str] | None:
        """Vote of the PP-OCR line classifier (0 or 180 degrees) over the page's text lines."""
        scale = 1500 / max(gray.shape)
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        with self._lock:
            boxes, _ = self._ocr(self._bgr(small), use_det=True, use_cls=False, use_rec=False)
            if not boxes:
                return None
            crops = self._ocr.get_crop_img_list(self._bgr(small), [np.array(b, np.float32) for b in boxes])
            wide = [c for c in crops if c.shape[1] > 2 * c.shape[0]][:40]
            if len(wide) < 3:
                return None
            _, labels, _ = self._ocr.text_cls(wide)
        votes = sum(score if label == "180" else -score for label, score in labels)
        if abs(votes) < 1.0:
            return None
        return bool(votes > 0), "rapidocr-cls"
