from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import OcrTimeoutError
from pipeline.ocr import normalise_text
from pipeline.ocr.tesseract import TesseractEngine, judge_up_down_osd

LINES = ["养老保险待遇核定表已经审核完毕。", "保险合同号 P2012-000123"]


def _page(samples_module, script: str = "simp"):  # type: ignore[no-untyped-def]
    img = samples_module.render_page("", LINES, [], script=script, size_mm=(210, 80), seed=2)
    return np.asarray(img)


def test_normalise_folds_width_and_removes_spaces_between_chinese() -> None:
    assert normalise_text("保 险  合同　号：ＡＢＣ１２３") == "保险合同号:ABC123"
    assert normalise_text("policy  No. 12") == "policy No. 12"
    assert normalise_text("合同 P123 号") == "合同 P123 号"


def test_rapidocr_reads_chinese_with_boxes_and_confidence(samples_module, rapid_engine) -> None:  # type: ignore[no-untyped-def]
    page = rapid_engine.recognise(_page(samples_module))
    assert "养老保险待遇核定表" in page.text
    assert "P2012-000123" in page.text.replace(" ", "")
    assert page.mean_confidence is not None and page.mean_confidence > 0.9
    first = page.lines[0]
    x0, y0, x1, y1 = first.box
    assert 0 <= x0 < x1 <= page.width and 0 <= y0 < y1 <= page.height
    assert first.char_boxes, "RapidOCR gives character boxes"


def test_a_grey_page_reads_as_the_same_page_in_colour(samples_module, rapid_engine) -> None:  # type: ignore[no-untyped-def]
    """A grey page is shrunk to RapidOCR's 2000-pixel side before it is made BGR (not made BGR at
    full size first, 26 MB for an A4 page): the lines, boxes, character boxes and scores are
    those of the same page given in colour, which takes RapidOCR's own way."""
    import cv2

    grey = np.asarray(
        samples_module.render_page("投保单", LINES * 3, [("保险合同号", "P2019-004512")], seed=5)
    )
    assert grey.ndim == 2 and max(grey.shape) > 2000  # A4 at 300 dpi: RapidOCR shrinks it
    as_grey = rapid_engine.recognise(grey)
    as_colour = rapid_engine.recognise(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB))
    assert as_grey.lines == as_colour.lines
    assert len(as_grey.lines) >= 6 and all(line.char_boxes for line in as_grey.lines)
    assert (as_grey.width, as_grey.height) == (grey.shape[1], grey.shape[0])


def test_the_detectors_input_is_rapidocrs_to_the_bit(rapid_engine) -> None:  # type: ignore[no-untyped-def]
    """The text detector's input is made a band of rows of one channel at a time (not three
    whole-page float64 copies at once): the same float32 input as RapidOCR's own, for a page
    (its last band a short one), a vote's shrunk page, a wide strip and a narrow one (one band);
    in the sibling engines too."""
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    detector = rapid_engine._ocr.text_det
    rng = np.random.default_rng(7)
    for shape in [(3508, 2480, 3), (1050, 742, 3), (300, 1900, 3), (2900, 70, 3)]:
        page = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = detector.get_preprocess()(page)
        theirs = DetPreProcess(detector.limit_side_len, detector.limit_type, detector.mean, detector.std)(
            page
        )
        assert type(detector.get_preprocess()) is not DetPreProcess
        assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape
        assert ours.tobytes() == theirs.tobytes()
    sibling = rapid_engine.sibling()._ocr.text_det
    assert type(sibling.get_preprocess()) is type(detector.get_preprocess())


def test_the_models_run_in_place_and_give_rapidocrs_own_outputs(samples_module, rapid_engine) -> None:  # type: ignore[no-untyped-def]
    """The detector, recogniser and classifier run on the caller's input and into the request's
    own output buffers (no copy of either): the outputs are RapidOCR's own session's to the bit,
    the input is left as it was, and the shared detector's output is the caller's to keep: a
    later call, by another engine, does not change it."""
    from pipeline.ocr import rapid

    ocr = rapid_engine._ocr
    rng = np.random.default_rng(11)
    page = samples_module.render_page("投保单", ["保险合同变更申请书"] * 3, [], seed=3)
    page = np.asarray(page.convert("RGB"))
    detector_input = ocr.text_det.get_preprocess()(page[:, :, ::-1])
    inputs = [
        (ocr.text_det.session, detector_input),
        (ocr.text_rec.session, rng.uniform(-1, 1, (1, 3, 48, 320)).astype(np.float32)),
        (ocr.text_cls.session, rng.uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)),
    ]
    for session, batch in inputs:
        kept = batch.copy()
        ours = np.array(session(batch))
        rapidocrs = session
        while isinstance(rapidocrs, (rapid._SharedSession, rapid._InPlaceSession)):
            rapidocrs = rapidocrs._session  # down to RapidOCR's own session: OpenVINO's copying defaults
        assert rapidocrs is not session
        theirs = np.array(rapidocrs(batch))
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert ours.tobytes() == theirs.tobytes()
        assert batch.tobytes() == kept.tobytes()
    detector = ocr.text_det.session
    first = detector(detector_input)
    before = first.copy()
    rapid_engine.sibling()._ocr.text_det.session(detector_input[:, :, :320, :320].copy())
    assert first.tobytes() == before.tobytes()
    assert first.max() > 0.5  # the page's text lines were found


def test_both_rapidocr_runtimes_read_the_same_text(samples_module, rapid_engine) -> None:  # type: ignore[no-untyped-def]
    from pipeline.ocr.base import create_engine
    from pipeline.settings import OcrSettings

    assert rapid_engine.runtime == "openvino" and "openvino" in rapid_engine.version
    onnx = create_engine(OcrSettings(rapidocr_runtime="onnxruntime"))
    assert onnx.runtime == "onnxruntime"  # type: ignore[attr-defined]
    image = _page(samples_module, script="trad")
    ours, theirs = rapid_engine.recognise(image), onnx.recognise(image)
    assert "保险合同号" in ours.text and ours.text == theirs.text
    # the detector's map is a quarter of the page: a pixel there is 2-4 pixels here
    boxes = [v for line in ours.lines for v in line.box]
    assert boxes == pytest.approx([v for line in theirs.lines for v in line.box], abs=5)


def test_tesseract_reads_chinese(samples_module) -> None:  # type: ignore[no-untyped-def]
    engine = TesseractEngine()
    page = engine.recognise(_page(samples_module))
    text = page.text.replace(" ", "")
    assert "保险" in text
    assert "000123" in text
    assert all(0 <= line.confidence <= 1 for line in page.lines)


def test_tesseract_timeout_is_a_transient_error(samples_module) -> None:  # type: ignore[no-untyped-def]
    engine = TesseractEngine(timeout=0.01)
    with pytest.raises(OcrTimeoutError):
        engine.recognise(_page(samples_module))


def test_osd_never_fails_the_page_on_traditional_text(samples_module) -> None:  # type: ignore[no-untyped-def]
    verdict = judge_up_down_osd(_page(samples_module, script="trad"))
    assert verdict is None or verdict[1] == "tesseract-osd"


def test_engine_threads_do_not_touch_the_parent_environment() -> None:
    import os
    import subprocess

    import pytesseract

    from pipeline.ocr.tesseract import ChildEnviron, _run

    before = os.environ.get("OMP_THREAD_LIMIT")
    TesseractEngine(threads=1)
    assert isinstance(pytesseract.pytesseract.environ, ChildEnviron)  # what tesseract is started with

    def child_sees(**_: object) -> str:
        env = pytesseract.pytesseract.environ
        return subprocess.run(
            ["sh", "-c", "echo $OMP_THREAD_LIMIT"], env=env, capture_output=True, text=True
        ).stdout

    assert _run(child_sees, timeout=5, threads=2).strip() == "2"
    assert os.environ.get("OMP_THREAD_LIMIT") == before


def test_engines_of_one_pool_share_one_detector_and_read_alike_at_once(samples_module, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The worker threads' engines share the text detector (the bulk of an engine's memory):
    read side by side, at the same time, they give what a lone engine gives."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import ExitStack

    from pipeline.ocr.rapid import RapidOcrEngine
    from pipeline.process import EnginePool
    from pipeline.settings import Settings

    pages = [_page(samples_module), _page(samples_module, script="trad")] * 2
    alone = RapidOcrEngine()
    expected = [alone.recognise(p).lines for p in pages]
    pool = EnginePool(Settings(home=str(tmp_path / "home"), ocr={"workers": 2}))  # type: ignore[arg-type]
    pool.load(2)
    with ExitStack() as stack:
        first, second = (stack.enter_context(pool.engine()) for _ in range(2))
    assert first is not second
    assert first._ocr.text_det.session is second._ocr.text_det.session  # type: ignore[attr-defined]
    assert first._ocr.text_rec is not second._ocr.text_rec  # type: ignore[attr-defined]

    def read(n: int):  # type: ignore[no-untyped-def]
        with pool.engine() as engine:
            return engine.recognise(pages[n]).lines

    with ThreadPoolExecutor(2) as threads:
        got = list(threads.map(read, range(len(pages))))
    assert got == expected
    assert "养老保险待遇核定表" in "".join(line.text for line in got[0])


def test_an_idle_engine_reads_half_of_a_pages_lines_the_text_unchanged(samples_module, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """At the end of a batch (or in a batch of one page) the other engine has no page: half of
    the page's text lines go to it, read in a thread of its own, and the lines, boxes, character
    boxes and scores are what one engine alone gives, even from an engine that has never read
    (RapidOCR keeps its last call's switches). An engine in use is never lent, nor one while a
    page is still to take its engine."""
    from contextlib import ExitStack

    from pipeline.ocr.rapid import RapidOcrEngine
    from pipeline.process import EnginePool
    from pipeline.settings import Settings

    page = np.asarray(samples_module.render_page("", LINES * 4, [], size_mm=(210, 150), seed=3))
    expected = RapidOcrEngine().recognise(page).lines
    assert all(line.char_boxes for line in expected)
    pool = EnginePool(Settings(home=str(tmp_path / "home"), ocr={"workers": 2}))  # type: ignore[arg-type]
    pool.load(2)
    read: dict[int, list[int]] = {}
    with ExitStack() as stack:  # count each engine's lines, without reading anything yet
        engines = [stack.enter_context(pool.engine()) for _ in range(2)]
        for engine in engines:
            own = engine._read_lines  # type: ignore[attr-defined]

            def counted(crops, own=own, engine=engine):  # type: ignore[no-untyped-def]
                read.setdefault(id(engine), []).append(len(crops))
                return own(crops)

            engine._read_lines = counted  # type: ignore[attr-defined]
    with pool.engine() as engine:
        shared = engine.recognise(page).lines
    other = next(e for e in engines if e is not engine)
    mine, theirs = read[id(engine)], read[id(other)]
    assert shared == expected
    assert len(mine) == len(theirs) == 1 and abs(mine[0] - theirs[0]) <= 1 and mine[0] + theirs[0] >= 8
    read.clear()
    with ExitStack() as stack:
        first, second = (stack.enter_context(pool.engine()) for _ in range(2))
        assert first.recognise(page).lines == expected and list(read) == [id(first)]  # the other is in use
    read.clear()
    pool.pages_queued(1)  # a page is still to take its engine: nothing is lent
    with pool.engine() as engine:
        assert engine.recognise(page).lines == expected and list(read) == [id(engine)]
    pool.pages_queued(-1)


def test_page_threads_asking_at_once_share_one_engine_pool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two pools for the same settings meant a second full engine (its own text detector)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pipeline import process
    from pipeline.settings import Settings

    settings = Settings(home=str(tmp_path), ocr={"engine": "tesseract", "workers": 3})  # type: ignore[arg-type]
    start = threading.Barrier(8)

    def ask(_: int) -> int:
        start.wait()
        return id(process.engine_pool(settings))

    with ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(ask, range(8)))) == 1


def test_engines_loaded_in_the_background_are_the_only_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Pages that begin while the engines load wait for them rather than making their own; a
    load that fails is the error of every page waiting."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.errors import OcrError
    from pipeline.process import EnginePool
    from pipeline.settings import Settings

    settings = Settings(home=str(tmp_path), ocr={"engine": "tesseract", "workers": 2})  # type: ignore[arg-type]
    pool = EnginePool(settings)
    pool.load_in_background(2)

    def borrow(_: int) -> int:
        with pool.engine() as engine:
            return id(engine)

    with ThreadPoolExecutor(6) as threads:
        assert len(set(threads.map(borrow, range(30)))) <= 2
    assert pool._created <= 2

    broken = EnginePool(
        Settings(home=str(tmp_path), ocr={"engine": "rapidocr", "rapidocr_runtime": "openvino"})
    )  # type: ignore[arg-type]
    broken._settings = broken._settings.model_copy(update={"engine": "no-such-models"})
    broken.load_in_background(2)
    for _ in range(3):
        with pytest.raises(OcrError), broken.engine():
            pass


def test_pages_share_the_engines_that_loaded_when_another_one_fails(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """One engine loaded, the next one failing (memory, a broken install): the pages take turns
    on the engine there is, every one of them, instead of some failing with the other's error;
    loaded in the background or on demand alike."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.process import EnginePool
    from pipeline.settings import Settings

    def broken_after_one() -> EnginePool:
        pool = EnginePool(Settings(home=str(tmp_path), ocr={"engine": "tesseract", "workers": 2}))  # type: ignore[arg-type]
        pool.load(1)
        pool._settings = pool._settings.model_copy(update={"engine": "no-such-engine"})
        return pool

    def borrowed(pool: EnginePool) -> set[int]:
        def borrow(_: int) -> int:
            with pool.engine() as engine:
                time.sleep(0.02)  # held a while: the other threads find no engine idle
                return id(engine)

        with ThreadPoolExecutor(4) as threads:
            return set(threads.map(borrow, range(12)))

    background = broken_after_one()
    background.load_in_background(2)
    for thread in threading.enumerate():
        if thread.name == "engine-load":
            thread.join(timeout=30)
    assert len(borrowed(background)) == 1 and background._created == 1
    assert "only 1 of 2 OCR engines could be loaded" in caplog.text

    on_demand = broken_after_one()
    assert len(borrowed(on_demand)) == 1 and on_demand._created == 1
    assert "another OCR engine could not be loaded" in caplog.text
