"""A page read and cleaned ahead by the preparing thread (`pipeline.flows.items.PageWork`) comes
out exactly as a page thread alone makes it; a failure there is the page's; closing waits for it.

Real RapidOCR, OpenCV and Tesseract; no mocks (the spy below calls the real function).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import process
from pipeline.batchplan import ItemPlan
from pipeline.flows.items import PageWork, _Ahead
from tests.conftest import make_settings


def _files(samples_module, folder: Path, count: int) -> list[Path]:  # type: ignore[no-untyped-def]
    """A4-ish pages with text, one upside down, one blank."""
    folder.mkdir(parents=True)
    files = []
    for n in range(count):
        lines = [f"第{n + 1}页 保险合同变更申请书，投保人同意按本单办理。", "理赔申请材料清单"]
        image = samples_module.render_page(
            f"业务档案{n + 1}",
            lines,
            [],
            size_mm=(148, 105),
            seed=n,
            skew=1.5,
            rotate=180 if n == 2 else 0,
            blank=n == 3,
        )
        path = folder / f"{n + 1:04d}.jpg"
        image.save(path, quality=85, dpi=(300, 300))
        files.append(path)
    return files


def _seen(result: Any) -> tuple[Any, ...]:
    ocr = result.ocr
    lines = [(line.text, line.box, line.confidence, line.char_boxes) for line in ocr.lines] if ocr else None
    return (
        result.seq,
        result.error,
        result.blank,
        result.rotation,
        result.skew_deg,
        result.orientation_method,
        result.width,
        result.height,
        result.geometry,
        lines,
    )


def test_pages_begun_ahead_come_out_as_a_page_thread_makes_them(
    samples_module, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "home", ocr={"workers": 1})
    planned, problems = process.plan_files(_files(samples_module, tmp_path / "in", 6), settings)
    assert not problems
    pool = process.engine_pool(settings)
    alone_cache = settings.work_dir / "alone"
    alone_cache.mkdir()
    alone = [process.process_page(p, seq, settings, pool, alone_cache) for seq, p in enumerate(planned, 1)]

    prepared_by: list[str] = []
    real = process.prepare_page

    def spy(*args: Any, **kwargs: Any) -> Any:
        prepared_by.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(process, "prepare_page", spy)
    cache = settings.work_dir / "pages"
    cache.mkdir(parents=True, exist_ok=True)
    plan = ItemPlan("A-1", None, planned, [], "key", False)
    work = PageWork([plan], settings, cache)
    try:
        together = [result for _, result in work.results()]
    finally:
        work.close()

    assert [_seen(r) for r in together] == [_seen(r) for r in alone]
    assert together[2].rotation == 180 and together[3].blank and not together[0].blank
    assert "".join(line.text for line in together[0].ocr.lines).count("保险合同") == 1
    # one page thread, one engine: the preparing thread had a core of its own for the next pages
    assert len(prepared_by) == 6 and "page-ahead" in prepared_by
    assert pool._queued == 0


def test_closing_mid_batch_waits_for_the_preparing_thread_and_leaves_nothing(
    samples_module, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "home", ocr={"workers": 1})
    planned, _ = process.plan_files(_files(samples_module, tmp_path / "in", 8), settings)
    cache = settings.work_dir / "pages"
    cache.mkdir(parents=True, exist_ok=True)
    work = PageWork([ItemPlan("A-1", None, planned, [], "key", False)], settings, cache)
    results = work.results()
    first = next(results)
    assert first[1].ocr is not None
    started = time.monotonic()
    work.close()
    work.close()  # the flow and its caller both close it
    assert time.monotonic() - started < 30
    assert not [t for t in threading.enumerate() if t.name == "page-ahead" and t.is_alive()]
    assert process.engine_pool(settings)._queued == 0


def test_a_failure_while_preparing_ahead_is_raised_by_the_page_that_wanted_it() -> None:
    room = threading.Semaphore(0)
    ahead = _Ahead(room)
    assert ahead.claim()  # the preparing thread got there first
    assert not ahead.claim()
    ahead.give(OSError("the snapshot could not be read"))
    with pytest.raises(OSError, match="snapshot"):
        ahead.take()
    assert room.acquire(blocking=False)  # its room is given back all the same

    left = _Ahead(threading.Semaphore(0))
    assert left.take() is None  # not begun: the page thread prepares it itself


def test_opencvs_threads_keep_their_priority_when_the_preparing_thread_starts_them() -> None:
    """OpenCV starts its worker threads at its first parallel call, and a new thread takes the
    priority of the thread that starts it: started by the preparing thread at the lowest
    priority, they would slow every page thread's OpenCV work. In a process of its own, where
    OpenCV has started nothing yet."""
    probe = textwrap.dedent(
        """
        import os, threading
        import cv2, numpy as np
        from pipeline.flows.items import _lowest_priority, _start_opencv_threads

        def nice(tid):
            try:
                stat = open(f"/proc/self/task/{tid}/stat").read()
            except FileNotFoundError:  # a thread that has just ended
                return None
            return int(stat[stat.rindex(")") + 2 :].split()[16])

        def prepare(first):
            if first:
                _start_opencv_threads()
            _lowest_priority()
            page = np.zeros((2000, 1400), np.uint8)
            cv2.warpAffine(page, cv2.getRotationMatrix2D((700, 1000), 1.0, 1.0), (1400, 2000))
            return threading.get_native_id()

        found = []
        thread = threading.Thread(target=lambda: found.append(prepare(os.environ["FIRST"] == "1")))
        thread.start()
        thread.join()
        # The preparing thread itself, at 19, may outlive its join by a moment: it is left out.
        others = [nice(t) for t in os.listdir("/proc/self/task") if int(t) != found[0]]
        print(sorted(n for n in others if n is not None))
        """
    )
    seen = {}
    for first in ("1", "0"):
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, "FIRST": first}
        )
        assert done.returncode == 0, done.stderr
        seen[first] = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(seen["1"]) > 1 and 19 not in seen["1"]  # the pool, started, at the page threads' priority
    assert 19 in seen["0"]  # what it guards against: without it the pool takes the lowest


def test_a_finished_cleaning_keeps_no_pixels_in_what_it_began(samples_module, rapid_engine) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from pipeline import imaging

    page = np.asarray(samples_module.render_page("投保单", ["保险合同变更申请书"] * 4, [], seed=4, skew=2.0))
    begun = imaging.begin_cleaning(page, 300)
    assert isinstance(begun, imaging.BegunPage) and begun.gray is not None
    cleaned = imaging.finish_cleaning(begun, (rapid_engine.judge_up_down,))
    whole = imaging.clean_page(page, 300, judges=(rapid_engine.judge_up_down,))
    assert (cleaned.rotation, cleaned.skew_deg, cleaned.geometry) == (
        whole.rotation,
        whole.skew_deg,
        whole.geometry,
    )
    assert np.array_equal(cleaned.image, whole.image)
    assert begun.image.size == 0 and begun.gray is None  # spent: a holder of it keeps no page
