"""Tesseract through pytesseract: the second OCR engine and orientation detection (OSD).

Tesseract's own OpenMP threading is limited for its child process only: pytesseract starts every
tesseract with `env=pytesseract.pytesseract.environ`, and that name is replaced here by a view
of os.environ that adds OMP_THREAD_LIMIT (see `ChildEnviron`). Our own environment is never
changed and no file is written for it; the only files are pytesseract's temporary image and
output files, in `tempfile.gettempdir()` (pipeline.tempfiles points it into CAPTURE_HOME).
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
from collections.abc import Iterator, Mapping

import cv2
import numpy as np
import pytesseract

from pipeline.errors import OcrError, OcrTimeoutError
from pipeline.models import OcrLine, OcrPage
from pipeline.ocr.base import normalise_text

log = logging.getLogger(__name__)

THREAD_VARIABLE = "OMP_THREAD_LIMIT"
# OpenMP threads for the tesseract started by this thread (or task) right now; 1 outside _run.
_threads: contextvars.ContextVar[int] = contextvars.ContextVar("tesseract_threads", default=1)


class ChildEnviron(Mapping[str, str]):
    """The environment pytesseract gives each tesseract child: os.environ as it is at that moment,
    plus OMP_THREAD_LIMIT for the engine making the call.

    A shim, like the OpenVINO one in pipeline.ocr.rapid: pytesseract passes its module-level
    `environ` (os.environ, bound at import) as `env=` to subprocess, with no other way to give
    one child one variable. subprocess only iterates the mapping, so a read-only view suffices;
    the thread count comes from a context variable, so two engines with different settings in
    two threads each start their own tesseract with their own limit.
    """

    def __getitem__(self, key: str) -> str:
        if key == THREAD_VARIABLE:
            return str(_threads.get())
        return os.environ[key]

    def __iter__(self) -> Iterator[str]:
        yield from (k for k in os.environ if k != THREAD_VARIABLE)
        yield THREAD_VARIABLE

    def __len__(self) -> int:
        return len(os.environ) + (THREAD_VARIABLE not in os.environ)


def install_child_environ() -> None:
    """Make pytesseract start tesseract with `ChildEnviron` (idempotent)."""
    if not isinstance(pytesseract.pytesseract.environ, ChildEnviron):
        pytesseract.pytesseract.environ = ChildEnviron()


install_child_environ()


def _run(func, *args, timeout: float, threads: int, **kwargs):  # type: ignore[no-untyped-def]
    """Call a pytesseract function with `threads` OpenMP threads; translate its errors here."""
    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        raise OcrError("tesseract is not installed (apt-get install tesseract-ocr)")
    install_child_environ()
    token = _threads.set(threads)
    try:
        return func(*args, timeout=timeout, **kwargs)
    except RuntimeError as exc:  # pytesseract raises RuntimeError on timeout
        if "timeout" in str(exc).lower():
            raise OcrTimeoutError(f"tesseract ran longer than {timeout:.0f} s") from exc
        raise OcrError(f"tesseract failed: {exc}") from exc
    except pytesseract.TesseractError as exc:
        raise OcrError(f"tesseract failed: {exc.message}") from exc
    finally:
        _threads.reset(token)


def prepare_for_tesseract(gray: np.ndarray) -> np.ndarray:
    """Background normalisation, binarisation and speckle removal (Tesseract drops noisy pages)."""
    background = cv2.medianBlur(cv2.resize(gray, None, fx=0.125, fy=0.125), 15)
    background = cv2.resize(background, (gray.shape[1], gray.shape[0]))
    flat = cv2.divide(gray, background, scale=255)
    _, binary = cv2.threshold(flat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return cv2.medianBlur(binary, 3)


class TesseractEngine:
    name = "tesseract"

    def __init__(
        self,
        *,
        languages: str = "chi_sim+chi_tra+eng",
        psm: int = 3,
        timeout: float = 180,
        threads: int = 1,
        min_confidence: float = 0.5,
    ) -> None:
        self.languages = languages
        self.psm = psm
        self.timeout = timeout
        self.threads = threads
        self.min_confidence = min_confidence
        self.version = str(pytesseract.get_tesseract_version())

    def recognise(self, image: np.ndarray) -> OcrPage:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        data = _run(
            pytesseract.image_to_data,
            prepare_for_tesseract(gray),
            lang=self.languages,
            config=f"--psm {self.psm}",
            output_type=pytesseract.Output.DICT,
            timeout=self.timeout,
            threads=self.threads,
        )
        return OcrPage(self.name, tuple(self._lines(data)), w, h)

    def _lines(self, data: dict[str, list]) -> list[OcrLine]:  # type: ignore[type-arg]
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, word in enumerate(data["text"]):
            if str(word).strip() and float(data["conf"][i]) >= 0:
                key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
                groups.setdefault(key, []).append(i)
        lines = []
        for idx in groups.values():
            boxes = [
                (
                    float(data["left"][i]),
                    float(data["top"][i]),
                    float(data["left"][i] + data["width"][i]),
                    float(data["top"][i] + data["height"][i]),
                )
                for i in idx
            ]
            confidence = sum(float(data["conf"][i]) for i in idx) / len(idx) / 100.0
            text = normalise_text(" ".join(str(data["text"][i]) for i in idx))
            if not text or confidence < self.min_confidence:
                continue
            box = (
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            )
            lines.append(OcrLine(text, box, confidence, tuple(boxes)))
        return lines


def judge_up_down_osd(gray: np.ndarray, *, threads: int = 1, timeout: float = 60) -> tuple[bool, str] | None:
    """Tesseract OSD on an upright-axis page: upside down or not; None when it cannot tell."""
    scale = 1600 / max(gray.shape)
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    try:
        osd = _run(
            pytesseract.image_to_osd,
            prepare_for_tesseract(small),
            config="-c min_characters_to_try=10",
            output_type=pytesseract.Output.DICT,
            timeout=timeout,
            threads=threads,
        )
    except OcrError as exc:  # "Too few characters" and the like: let the next judge decide
        log.debug("OSD could not decide: %s", exc)
        return None
    rotate = int(osd.get("rotate", 0))
    confidence = float(osd.get("orientation_conf", 0.0))
    if rotate not in (0, 180) or confidence < 1.0:
        return None
    return rotate == 180, "tesseract-osd"
