"""RapidOCR 3: PaddleOCR's PP-OCR models shipped inside wheels, run by OpenVINO or onnxruntime, offline."""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from importlib.metadata import version
from typing import Any, Literal

import cv2
import numpy as np

from pipeline.errors import OcrError
from pipeline.models import OcrLine, OcrPage
from pipeline.ocr.base import in_reading_order, normalise_text
from pipeline.ocr.identity import MODEL_SETS, ModelFile, model_files

log = logging.getLogger(__name__)
Box = tuple[float, float, float, float]
# lent by the engines' pool: an idle sibling engine for a while, or None (pipeline.process)
Borrow = Callable[[], AbstractContextManager["RapidOcrEngine | None"]]
SHARE_FROM_LINES = 8  # a page with fewer text lines is read by its own engine alone


def _bbox(points: Any) -> Box:
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def _char_boxes(text: str, words: Any) -> tuple[Box, ...]:
    """The per-character (per-word for Latin) boxes RapidOCR gave for this line, if they match it."""
    if not words:
        return ()
    try:
        if "".join(str(w[0]) for w in words).replace(" ", "") != text.replace(" ", ""):
            return ()
        return tuple(_bbox(w[2]) for w in words)
    except (IndexError, TypeError, ValueError):
        return ()


class _SharedSession:
    """One inference session (one OpenVINO infer request with its shape buffers) for several
    engines, one call at a time: the output is copied before the next call may overwrite it."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.array(self._session(batch), copy=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class _InPlaceSession:
    """RapidOCR's OpenVINO session, run on the caller's input and into the request's own output
    buffers. RapidOCR calls `infer` with OpenVINO's defaults, which copy the input into a
    tensor of the request's and every output into a new array, then throws that array away and
    returns a view of the request's output tensor: for the text detector that is a 32 MB input
    and an 11 MB output copied for nothing at every call (an A4 page at its 2000-pixel side),
    each a block the allocator maps afresh and the kernel faults in and zeroes page by page.
    The same view comes back, as before, valid until this request's next call (the shared
    detector copies it under its lock: `_SharedSession`); the inference is the same, so is
    the text."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._request = session.session

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer([batch], share_inputs=True, share_outputs=True)
        return self._request.get_output_tensor().data  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _openvino_without_shape_cache() -> None:
    """Have RapidOCR's OpenVINO sessions compiled with the CPU plugin's cache of kernels per
    input shape turned off (`CPU_RUNTIME_CACHE_CAPACITY` 0; RapidOCR passes only its own list of
    properties): every new text-line width was added to it, so an engine's memory grew with the
    pages it had read. The same kernels run, so the same text comes out (benchmarks/README.md)."""
    from rapidocr.inference_engine.openvino import main as openvino_session

    config: Any = openvino_session.CPUConfig
    if getattr(config, "shape_cache_off", False):
        return

    class WithoutShapeCache(config):  # type: ignore[misc, valid-type]
        shape_cache_off = True

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "CPU_RUNTIME_CACHE_CAPACITY": "0"}

    openvino_session.CPUConfig = WithoutShapeCache  # type: ignore[misc]


def _lean_detector_input(detector: Any) -> None:
    """Have the text detector make its input without RapidOCR's whole-page float64 copies.

    RapidOCR scales the shrunk page to [0, 1] in float32, then takes away the mean and divides
    by the deviation against float64 arrays: three float64 pages at once (67 MB each for an
    A4 page at the detector's 2000-pixel side) before the float32 input it keeps, made while
    another thread may hold the detector, so both threads' copies were there together. Here
    the same arithmetic, in the same types and order, runs a band of rows of one channel at a
    time into the float32 input: the same input to the bit (tested). The band's two scratch
    arrays (`_BAND_VALUES` values) stay below the allocator's threshold for mapping memory of
    its own (`pipeline.process._MMAP_THRESHOLD`), so they come from its heap, reused page after
    page; whole-channel ones (11 and 21 MB) were mapped afresh six times a page and each of
    their 4 KB pages faulted in and zeroed by the kernel (benchmarks/README.md)."""
    lean = _lean_preprocess()
    detector.get_preprocess = lambda: lean(
        detector.limit_side_len, detector.limit_type, detector.mean, detector.std
    )


_BAND_VALUES = 1 << 18  # 2 MB of float64 scratch, 1 MB of float32


@functools.cache
def _lean_preprocess() -> type:
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    class LeanDetPreProcess(DetPreProcess):  # type: ignore[misc]
        def __call__(self, img: np.ndarray) -> np.ndarray | None:
            if img.ndim != 3:
                return super().__call__(img)  # type: ignore[no-any-return]
            resized = self.resize(img)
            if resized is None:
                return None
            height, width, channels = resized.shape
            made = np.empty((1, channels, height, width), np.float32)
            rows = max(1, _BAND_VALUES // width)
            scratch32 = np.empty((min(rows, height), width), np.float32)
            scratch64 = np.empty(scratch32.shape, np.float64)
            for channel in range(channels):
                mean, std = self.mean[channel], self.std[channel]
                for top in range(0, height, rows):
                    band = resized[top : top + rows, :, channel]
                    scaled, wide = scratch32[: len(band)], scratch64[: len(band)]
                    scaled[...] = band  # astype(float32)
                    np.multiply(scaled, self.scale, out=scaled)
                    np.subtract(scaled, mean, out=wide, dtype=np.float64)
                    np.divide(wide, std, out=wide)
                    made[0, channel, top : top + len(band)] = wide
            return made

    return LeanDetPreProcess


def _grey_as_it_is(load: Callable[[Any], np.ndarray], image: Any) -> np.ndarray:
    """RapidOCR's image loading, except that a grey page is kept grey (`_grey_shrunk_first`)."""
    if isinstance(image, np.ndarray) and image.ndim == 2:
        return image
    return load(image)


def _grey_shrunk_first(
    preprocess: Callable[[np.ndarray], tuple[np.ndarray, dict[str, Any]]],
    min_side: float,
    max_side: float,
    image: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
    """RapidOCR shrinks the page to its 2000-pixel side, and reads the lines from that copy: a
    grey page is shrunk grey and then made BGR, not made BGR at full size first (26 MB for an A4
    page at 300 dpi, held through the whole page). The channels of a grey page are equal, so
    the shrunk copy is the same to the bit, and so are the lines (40 pages compared, the
    benchmark's batch)."""
    if image.ndim != 2:
        return preprocess(image)
    from rapidocr.utils.process_img import resize_image_within_bounds

    shrunk, ratio_h, ratio_w = resize_image_within_bounds(image, min_side, max_side)
    return cv2.cvtColor(shrunk, cv2.COLOR_GRAY2BGR), {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}}


class RapidOcrEngine:
    """One engine instance is used by one thread at a time (a lock guards it).

    The model files are passed by path, so RapidOCR never looks for (or downloads) anything else;
    a missing file is an OcrError at once. Lines come back in reading order (rows, each left to
    right) and lines scoring below `min_confidence` are dropped (counted in the debug log).

    The engines of one process's worker threads share one text detector (`sibling()`): its
    buffers for a whole page (about 0.5-0.7 GB for an A4 page at the detector's 2000-pixel
    side, on OpenVINO's dynamic shapes) are the largest part of an engine's memory, and a page
    spends about a third of its engine time there, so the threads take turns on it and each
    keeps its own recogniser (the larger share of the time) and classifier. Same text, to the
    character and the score: the detector's model and settings are the same.
    """

    def __init__(
        self,
        *,
        models: str = "rapidocr",
        threads: int = 1,
        min_confidence: float = 0.0,
        runtime: Literal["openvino", "onnxruntime"] = "openvino",
        detector: Any = None,
        line_batch: int = 1,
    ) -> None:
        from rapidocr import EngineType, ModelType, OCRVersion, RapidOCR

        if models not in MODEL_SETS:
            raise OcrError(f"no RapidOCR model set named {models!r}")
        files = {f.role: f for f in model_files(models)}
        generation, size = MODEL_SETS[models].generation, MODEL_SETS[models].size
        params: dict[str, Any] = {"Global.log_level": "warning", "Global.text_score": 0.0}
        for role, task in (("det", "Det"), ("rec", "Rec"), ("cls", "Cls")):
            params[f"{task}.model_path"] = str(files[role].path)
            params[f"{task}.engine_type"] = EngineType(runtime)
        params.update(
            {
                "Det.ocr_version": OCRVersion(generation),
                "Det.model_type": ModelType(size),
                "Rec.ocr_version": OCRVersion(generation),
                "Rec.model_type": ModelType(size),
                "Rec.rec_batch_num": line_batch,
            }
        )
        if runtime == "openvino":
            # OpenVINO pins its threads to cores when a thread count is set, and every engine (and
            # every process) then pins to the same first cores: 2 engines x 1 thread ran no faster
            # than 1 x 1 here. Unpinned, they spread over the cores.
            params["EngineConfig.openvino.inference_num_threads"] = threads
            params["EngineConfig.openvino.enable_cpu_pinning"] = False
        else:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
            params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
        try:
            self._ocr = RapidOCR(params=params)
            if detector is not None:  # a sibling's: its own copy of the detector, the session shared
                self._ocr.text_det = copy.copy(detector)
            # RapidOCR loads its models on first use; load them now so a bad file fails here.
            if runtime == "openvino":
                _openvino_without_shape_cache()
            det = self._ocr._load_det_model()
            rec = self._ocr._load_rec_model()
            cls = self._ocr._load_cls_model()
            if runtime == "openvino":
                rec.session, cls.session = _InPlaceSession(rec.session), _InPlaceSession(cls.session)
            if detector is None:
                session = _InPlaceSession(det.session) if runtime == "openvino" else det.session
                det.session = _SharedSession(session)
            _lean_detector_input(det)
        except Exception as exc:  # noqa: BLE001 - any loader failure is the engine's
            raise OcrError(f"RapidOCR could not load {models} on {runtime}: {exc}") from exc
        if self._ocr.cfg.Global.use_preprocess_img:  # RapidOCR shrinks the page: a grey one shrunk grey
            self._ocr.load_img = functools.partial(_grey_as_it_is, self._ocr.load_img)  # type: ignore[assignment]
            self._ocr.preprocess_img = functools.partial(  # type: ignore[method-assign]
                _grey_shrunk_first, self._ocr.preprocess_img, self._ocr.min_side_len, self._ocr.max_side_len
            )
        self._lock = threading.Lock()
        self._threads = threads
        self._line_batch = line_batch
        self.borrow: Borrow | None = None
        self._read_lines: Callable[[list[np.ndarray]], Any] = self._ocr.recognize_txt
        if line_batch == 1:  # lines read one by one: the same text however they are shared out
            self._ocr.recognize_txt = self._read_lines_shared  # type: ignore[method-assign,assignment]
        self.name = models
        self.runtime = runtime
        self.min_confidence = min_confidence
        self.models: tuple[ModelFile, ...] = tuple(files.values())
        self.version = f"rapidocr {version('rapidocr')}, {runtime} {version(runtime)}, {generation} {size}"

    def sibling(self) -> RapidOcrEngine:
        """An engine for another thread: the same models, this engine's text detector shared."""
        return RapidOcrEngine(
            models=self.name,
            threads=self._threads,
            min_confidence=self.min_confidence,
            runtime=self.runtime,
            detector=self._ocr.text_det,
            line_batch=self._line_batch,
        )

    def _read_lines_shared(self, crops: list[np.ndarray]) -> Any:
        """RapidOCR's line reading, with half of a page's lines read by an idle sibling engine
        in a thread of its own when the pool lends one (`borrow`; it does once no page is still
        to take an engine): the last pages of a batch, and a batch of one page, would otherwise
        leave the other cores waiting for this page's recogniser. Each line is read alone
        (`line_batch` 1), so the text and scores are the same whoever reads it."""
        if self.borrow is None or len(crops) < SHARE_FROM_LINES:
            return self._read_lines(crops)
        with self.borrow() as other:
            if other is None:
                return self._read_lines(crops)
            half = len(crops) // 2
            # RapidOCR keeps the last call's switches: the lent engine's may be another's
            other._ocr.return_word_box = self._ocr.return_word_box
            other._ocr.return_single_char_box = self._ocr.return_single_char_box
            with ThreadPoolExecutor(1, thread_name_prefix="lines") as helper:
                second = helper.submit(other._read_lines, crops[half:])
                first: Any = self._read_lines(crops[:half])
                rest: Any = second.result()
        return dataclasses.replace(
            first,
            imgs=[*first.imgs, *rest.imgs],
            txts=(*first.txts, *rest.txts),
            scores=(*first.scores, *rest.scores),
            word_results=(*first.word_results, *rest.word_results),
            elapse=(first.elapse or 0) + (rest.elapse or 0),
        )

    @staticmethod
    def _bgr(image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def _run(self, image: np.ndarray, *, det: bool = True, rec: bool = True, words: bool = True) -> Any:
        # every switch is passed on every call: RapidOCR keeps the last call's switches
        return self._ocr(
            image,
            use_det=det,
            use_cls=False,
            use_rec=rec,
            return_word_box=words,
            return_single_char_box=False,
            text_score=0.0,
        )

    def recognise(self, image: np.ndarray) -> OcrPage:
        h, w = image.shape[:2]
        page = image if image.ndim == 2 else self._bgr(image)  # grey: made BGR once shrunk
        with self._lock:
            try:
                result = self._run(page)
            except IndexError:  # RapidOCR 3.10 mis-indexes word boxes when a line has none
                result = self._run(page, words=False)
        return OcrPage(self.name, in_reading_order(self._lines(result)), w, h)

    def _lines(self, result: Any) -> list[OcrLine]:
        texts = getattr(result, "txts", None)
        if not texts:
            return []
        words = list(getattr(result, "word_results", None) or ())
        if len(words) != len(texts):
            words = [()] * len(texts)
        lines: list[OcrLine] = []
        dropped = 0
        for points, raw, score, word in zip(result.boxes, texts, result.scores, words, strict=True):
            text = normalise_text(str(raw))
            if not text:
                continue
            if float(score) < self.min_confidence:
                dropped += len(text)
                continue
            lines.append(OcrLine(text, _bbox(points), float(score), _char_boxes(str(raw), word)))
        if dropped:
            log.debug("dropped %d characters in lines scoring below %.2f", dropped, self.min_confidence)
        return lines

    def judge_up_down(self, gray: np.ndarray) -> tuple[bool, str] | None:
        """Vote of the PP-OCR line classifier (0 or 180 degrees) over the page's text lines.

        The lines are found on the page shrunk to 1050 pixels (the detector's smallest input side,
        736, for A4): on the 30 development pages, each also turned upside down, as right (60 of
        60) as at 1500 pixels, for 0.22 instead of 0.39 CPU seconds.
        """
        scale = 1050 / max(gray.shape)
        small = self._bgr(cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        with self._lock:
            detected = self._run(small, rec=False, words=False)
            boxes = getattr(detected, "boxes", None)
            if boxes is None or len(boxes) == 0:
                return None
            crops = self._ocr.crop_text_regions(small, boxes)
            wide = [c for c in crops if c.shape[1] > 2 * c.shape[0]][:40]
            if len(wide) < 3:
                return None
            labels = self._ocr._load_cls_model()(wide).cls_res or []
        votes = sum(score if label == "180" else -score for label, score in labels)
        if abs(votes) < 1.0:
            return None
        return bool(votes > 0), "rapidocr-cls"
