from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import imaging
from tests.conftest import DEV_SCANS

BODY = [
    "保险合同约定的保险责任范围内发生保险事故，保险公司应当按照合同约定给付保险金。" * 2,
    "投保人应当如实告知被保险人的健康状况，未如实告知的保险人有权解除合同。" * 2,
] * 4


def _page(samples_module, skew: float = 0.0, rotate: int = 0, blank: bool = False, noise: float = 4.0):  # type: ignore[no-untyped-def]
    img = samples_module.render_page(
        "测试页",
        BODY,
        [("保险合同号", "P2012-000123")],
        skew=skew,
        rotate=rotate,
        blank=blank,
        noise=noise,
        seed=3,
    )
    return np.asarray(img)


@pytest.mark.parametrize("skew", [-10.0, -6.3, -2.5, -0.4, 0.0, 1.7, 4.2, 7.9, 10.0])
def test_deskew_residual_within_a_tenth_of_a_degree(samples_module, skew: float) -> None:  # type: ignore[no-untyped-def]
    estimate = imaging.estimate_skew(_page(samples_module, skew=skew), max_angle=10.0)
    assert abs(estimate.angle - skew) <= 0.1


@pytest.mark.skipif(not (DEV_SCANS / "manifest.json").exists(), reason="shared dev scans not present")
def test_deskew_on_development_scans_with_known_skew() -> None:
    import cv2

    pages = json.loads((DEV_SCANS / "manifest.json").read_text())["pages"]
    residuals = []
    for page in pages:
        gray = cv2.imread(str(DEV_SCANS / f"{page['id']}.jpg"), cv2.IMREAD_GRAYSCALE)
        turns, estimate = imaging.estimate_axis_and_skew(gray)
        assert turns == (1 if page["rotation_ccw"] in (90, 270) else 0), page["id"]
        residuals.append(abs(estimate.angle - page["skew_deg"]))
    assert max(residuals) <= 0.1, residuals


def test_sideways_page_is_detected_and_deskewed(samples_module) -> None:  # type: ignore[no-untyped-def]
    turns, estimate = imaging.estimate_axis_and_skew(_page(samples_module, skew=2.0, rotate=90))
    assert turns == 1
    assert abs(estimate.angle - 2.0) <= 0.1


def test_upside_down_page_is_turned_upright(samples_module, rapid_engine) -> None:  # type: ignore[no-untyped-def]
    upright = imaging.clean_page(_page(samples_module, skew=1.0), 300, judges=(rapid_engine.judge_up_down,))
    flipped = imaging.clean_page(
        _page(samples_module, skew=1.0, rotate=180), 300, judges=(rapid_engine.judge_up_down,)
    )
    assert upright.rotation == 0
    assert flipped.rotation == 180
    assert flipped.orientation_method == "rapidocr-cls"
    # what comes out reads the same way: the title is near the top in both
    top = rapid_engine.recognise(flipped.image).lines[0].text
    assert "测试页" in top


def test_270_degree_page_is_turned_upright(samples_module, rapid_engine) -> None:  # type: ignore[no-untyped-def]
    cleaned = imaging.clean_page(_page(samples_module, rotate=270), 300, judges=(rapid_engine.judge_up_down,))
    # PIL turned it 270 counter-clockwise (= 90 clockwise); 270 clockwise more stands it up
    assert cleaned.rotation == 270
    assert cleaned.image.shape[0] > cleaned.image.shape[1]
    assert "测试页" in rapid_engine.recognise(cleaned.image).lines[0].text


def test_blank_page_with_dust_is_blank_and_text_page_is_not(samples_module) -> None:  # type: ignore[no-untyped-def]
    blank = imaging.clean_page(_page(samples_module, blank=True, noise=6.0), 300)
    assert blank.blank and blank.orientation_method == "blank"
    text = imaging.clean_page(_page(samples_module), 300)
    assert not text.blank
    # a page with a single short line is still not blank
    one_line = np.asarray(samples_module.render_page("", ["同意"], [], seed=1))
    assert not imaging.is_blank(one_line, 300, 0.0001)[0]


def test_dark_scanner_border_is_cropped(samples_module) -> None:  # type: ignore[no-untyped-def]
    page = _page(samples_module)
    framed = np.full((page.shape[0] + 200, page.shape[1] + 160), 20, np.uint8)
    framed[120 : 120 + page.shape[0], 60 : 60 + page.shape[1]] = page
    cropped = imaging.crop_dark_borders(framed)
    assert cropped.shape[0] <= page.shape[0] and cropped.shape[1] <= page.shape[1]
    assert cropped.shape[0] > page.shape[0] * 0.97 and cropped.shape[1] > page.shape[1] * 0.97
    assert cropped[:5].mean() > 150  # no dark band left at the top
