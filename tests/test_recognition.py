"""Recognition: the PP-OCRv6 default, Traditional in its own script, offline model loading, the
engine's identity in the cache key and the record, reading again with another engine, reindexing,
and the line-score cut."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.models import OcrLine
from pipeline.ocr.base import create_engine, in_reading_order
from pipeline.ocr.identity import MODEL_SETS, engine_identity
from pipeline.settings import OcrSettings
from tests.conftest import import_catalogue, make_settings

TRAD_LINES = ["理賠申請書已經受理，醫療費用發票原件齊全。", "保險合同號 P2014-008910"]


def _page(samples_module, lines: list[str], script: str = "simp", seed: int = 3):  # type: ignore[no-untyped-def]
    return np.asarray(samples_module.render_page("", lines, [], script=script, size_mm=(210, 80), seed=seed))


def test_default_engine_is_pp_ocrv6_and_keeps_traditional_pages_traditional(
    samples_module, rapid_engine
) -> None:  # type: ignore[no-untyped-def]
    assert OcrSettings().engine == "rapidocr" and MODEL_SETS["rapidocr"].generation == "PP-OCRv6"
    assert "PP-OCRv6" in rapid_engine.version
    page = rapid_engine.recognise(_page(samples_module, TRAD_LINES, "trad"))
    text = page.text.replace(" ", "")
    # 險 was read as nothing by PP-OCRv4 (保合同號); the text layer must keep the page's script
    assert "保險合同號" in text and "理賠申請書" in text and "醫療費用" in text, text
    assert "P2014-008910" in text
    assert all(0.9 < line.confidence <= 1 for line in page.lines)
    first = page.lines[0]
    assert len(first.char_boxes) == len(first.text), "one box per Chinese character"
    assert all(first.box[0] - 2 <= b[0] < b[2] <= first.box[2] + 2 for b in first.char_boxes)


def test_models_load_from_the_wheels_without_the_network(samples_module, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import requests

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"network used: {args} {kwargs}")

    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    engine = create_engine(OcrSettings(engine="rapidocr-ppocrv4", rapidocr_runtime="onnxruntime"))
    assert engine.name == "rapidocr-ppocrv4"
    assert "保险" in engine.recognise(_page(samples_module, ["养老保险待遇核定表"])).text


def test_identity_names_every_model_file_with_its_hash_and_package() -> None:
    identity = engine_identity(OcrSettings())
    assert identity["engine"] == "rapidocr" and identity["runtime"].startswith("openvino ")
    files = {m["role"]: m for m in identity["models"]}
    assert (
        files["det"]["file"] == "PP-OCRv6_det_small.onnx"
        and files["rec"]["file"] == "PP-OCRv6_rec_small.onnx"
    )
    assert files["det"]["package"].startswith("rapidocr 3.")
    from pipeline.ocr.identity import model_files

    for model in model_files("rapidocr"):
        assert hashlib.sha256(model.path.read_bytes()).hexdigest() == files[model.role]["sha256"]
    old = engine_identity(OcrSettings(engine="rapidocr-ppocrv4"))
    assert {m["file"] for m in old["models"]} >= {"ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx"}
    tesseract = engine_identity(OcrSettings(engine="tesseract"))
    assert {m["role"] for m in tesseract["models"]} >= {"chi_sim", "chi_tra"}


def test_the_cache_key_changes_with_the_engine_and_its_model_files(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pipeline import process

    default = make_settings(tmp_path)
    other = make_settings(tmp_path, ocr={"engine": "rapidocr-ppocrv4"})
    assert process.settings_fingerprint(default) != process.settings_fingerprint(other)
    before = process.settings_fingerprint(default)
    real = process.engine_identity

    def retrained(settings):  # type: ignore[no-untyped-def]
        identity = real(settings)
        identity["models"][1]["sha256"] = "0" * 64  # the same file name, other weights
        return identity

    monkeypatch.setattr(process, "engine_identity", retrained)
    assert process.settings_fingerprint(default) != before


def test_another_engine_reads_the_batch_again_and_reindex_takes_the_new_text(  # type: ignore[no-untyped-def]
    tmp_path: Path, samples_module
) -> None:
    from pipeline import process
    from pipeline.index.base import SearchQuery
    from pipeline.index.sqlite import SqliteIndex
    from pipeline.reindex import reindex_all
    from pipeline.store import Store

    item = tmp_path / "batch" / "BX01-2014-LP-D6-0003"
    item.mkdir(parents=True)
    samples_module.render_page("理賠申請書", TRAD_LINES, [], script="trad", size_mm=(210, 100), seed=4).save(
        item / "0001.png", dpi=(300, 300)
    )
    records = []
    for engine in ("rapidocr-ppocrv4", "rapidocr"):
        settings = make_settings(tmp_path / "home", ocr={"engine": engine, "workers": 1})
        pool = process.engine_pool(settings)
        planned, problems = process.plan_item(item, settings)
        cache = settings.work_dir / "pages"
        cache.mkdir(parents=True, exist_ok=True)
        pages = [process.process_page(p, n + 1, settings, pool, cache) for n, p in enumerate(planned)]
        assert pages[0].ocr is not None and pages[0].ocr.engine == engine  # not the other engine's cache
        key = process.item_input_key(planned, problems, None, settings)
        done = process.package_item(item.name, None, pages, problems, key, "b1", settings)
        records.append(json.loads(Path(done.record_path).read_text(encoding="utf-8")))
    software = records[-1]["software"]["ocr"]
    assert software["engine"] == "rapidocr" and software["models_generation"] == "PP-OCRv6 small"
    assert [m["file"] for m in software["models"]][:2] == [
        "PP-OCRv6_det_small.onnx",
        "PP-OCRv6_rec_small.onnx",
    ]
    assert all(len(m["sha256"]) == 64 for m in software["models"])
    assert records[0]["software"]["ocr"]["engine"] == "rapidocr-ppocrv4"
    assert records[-1]["pages"][0]["engine"] == "rapidocr"

    import_catalogue(settings, samples_module_catalogue(tmp_path))
    store = Store(settings.state_url)
    index = SqliteIndex(settings.index_path)
    try:
        outcome = reindex_all(settings, index, store)
        assert outcome.items == 1
        hits = index.search(SearchQuery("保险合同号", limit=5, access=_everyone())).hits
        assert [h.archive_code for h in hits] == ["BX01-2014-LP-D6-0003"]
    finally:
        index.close()
        store.close()


def samples_module_catalogue(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.csv"
    path.write_text("档号,页数,密级\r\nBX01-2014-LP-D6-0003,1,公开\r\n", encoding="utf-8")
    return path


def _everyone():  # type: ignore[no-untyped-def]
    from pipeline.security import FULL_ACCESS

    return FULL_ACCESS


def test_lines_below_the_cut_are_dropped_and_counted(rapid_engine, caplog) -> None:  # type: ignore[no-untyped-def]
    square = [[0, 0], [10, 0], [10, 10], [0, 10]]
    result = SimpleNamespace(
        txts=("保险合同", "噪"),
        scores=(0.98, 0.1),
        boxes=[square, [[0, 20], [10, 20], [10, 30], [0, 30]]],
        word_results=((), ()),
    )
    rapid_engine.min_confidence = 0.2
    with caplog.at_level(logging.DEBUG, logger="pipeline.ocr.rapid"):
        lines = rapid_engine._lines(result)
    rapid_engine.min_confidence = 0.0
    assert [ln.text for ln in lines] == ["保险合同"]
    assert "dropped 1 characters" in caplog.text
    assert OcrSettings().min_line_confidence == 0.2


def test_lines_come_in_reading_order() -> None:
    right = OcrLine("乙", (500, 102, 600, 150), 0.9)
    left = OcrLine("甲", (100, 100, 200, 148), 0.9)
    below = OcrLine("丙", (100, 200, 200, 250), 0.9)
    assert in_reading_order([below, right, left]) == (left, right, below)


@pytest.mark.slow
def test_the_sample_policy_number_phrase_finds_every_item_carrying_it(sample_run, samples_module) -> None:  # type: ignore[no-untyped-def]
    from pipeline.index.base import SearchQuery
    from pipeline.index.sqlite import SqliteIndex
    from pipeline.security import FULL_ACCESS

    settings, _, _ = sample_run
    # every sample item prints its policy number field (保险合同号 / 保險合同號) on its first page
    carrying = {item.archive_code for item in samples_module.ITEMS if not item.pages[0].get("blank")}
    assert "BX01-2014-LP-D6-0003" in carrying  # the Traditional claim item
    index = SqliteIndex(settings.index_path)
    try:
        for query in ("保险合同号", "保險合同號"):
            hits = index.search(SearchQuery(query, limit=50, access=FULL_ACCESS)).hits
            assert {h.archive_code for h in hits} == carrying, query
    finally:
        index.close()


def test_every_short_chinese_string_on_a_page_finds_it_in_either_script(tmp_path: Path) -> None:
    import re

    import opencc

    from pipeline.index.base import IndexItem, IndexPage, SearchQuery
    from pipeline.index.sqlite import SqliteIndex

    # phrases OpenCC converts otherwise than their characters (乾隆 keeps 乾, 瞭解 becomes 了解)
    page = "他於乾隆年間簽訂保險合同，乾淨俐落。後來發現著作權問題，瞭解理髮。隨著藉口反覆核對"
    index = SqliteIndex(tmp_path / "index.sqlite")
    index.index_item(IndexItem("BX01-2014-LP-D6-0003", "t", {}, (IndexPage(1, page),)))
    to_simp, to_trad = opencc.OpenCC("t2s"), opencc.OpenCC("s2t")
    missed = []
    try:
        for run in re.findall(r"[\u4e00-\u9fff]+", page):
            for size in (2, 3, 4):
                for start in range(len(run) - size + 1):
                    text = run[start : start + size]
                    for query in {text, to_simp.convert(text), to_trad.convert(text)}:
                        if not index.search(SearchQuery(query, limit=1)).hits:
                            missed.append(query)
    finally:
        index.close()
    assert missed == []
