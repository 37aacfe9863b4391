"""Page images in the PDF/A: lossless recompression gives back exactly the cleaned page's pixels.

Bilevel pages (and grey pages holding only black and white) are stored as CCITT Group 4, grey
pages as Flate with PNG predictors, colour as Flate, JPEG as the JPEG's own bytes. Each is read
back three ways: pikepdf's PdfImage, poppler's pdfimages (the stream as stored) and pdftoppm
(the page as a viewer draws it), and the package is validated as PDF/A-2b on its written bytes.
"""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pikepdf
from PIL import Image

from pipeline import package

DPI = 150


def _text_page(samples_module: Any, noise: float = 0.0) -> Image.Image:
    """A grey A5 page of Chinese text at 150 dpi (the sample renderer's own fonts and layout)."""
    title, paragraphs = samples_module.TEXTS["claim"]
    return samples_module.render_page(
        title, paragraphs, [("保险合同号", "P2014-000789")], dpi=DPI, noise=noise, seed=4, size_mm=(148, 210)
    )


def _bilevel(page: Image.Image) -> Image.Image:
    return page.point(lambda v: 255 if v >= 140 else 0).convert("1", dither=Image.Dither.NONE)


def _package(tmp_path: Path, img: Image.Image, image_format: str, name: str) -> tuple[Path, Any]:
    source = tmp_path / f"{name}.png"
    img.save(source)
    pdf = package.build_pdf([package.PackagePage(source, image_format, DPI, None)])
    outcome = package.save_pdfa(pdf, tmp_path / f"{name}.pdf")
    pdf.close()
    assert outcome.pdfa_valid, outcome.validator_findings
    return outcome.pdf_path, source


def _stored_image(pdf_path: Path) -> tuple[pikepdf.Dictionary, bytes, np.ndarray]:
    """The page image's dictionary, its stored (still encoded) bytes, and its pixels per pikepdf."""
    with pikepdf.open(pdf_path) as pdf:
        (image,) = pdf.pages[0].get_images().values()
        raw = image.read_raw_bytes()
        pixels = np.asarray(pikepdf.PdfImage(image).as_pil_image().convert("L"))
        params = pikepdf.Dictionary({k: image.stream_dict[k] for k in image.stream_dict.keys()})
    return params, raw, pixels


def _drawn(pdf_path: Path, name: str, mode: str = "L") -> np.ndarray:
    """The page as pdftoppm (poppler) draws it at the image's own resolution."""
    target = pdf_path.parent / name
    subprocess.run(
        ["pdftoppm", "-r", str(DPI), "-png", "-singlefile", str(pdf_path), str(target)], check=True
    )
    with Image.open(target.with_suffix(".png")) as drawn:
        return np.asarray(drawn.convert(mode))


def _poppler_pixels(pdf_path: Path, source: Image.Image, mode: str = "L") -> tuple[np.ndarray, bool]:
    """The image as pdfimages extracts it, and whether pdftoppm draws the page exactly as it draws
    the same page holding the source's pixels unencoded, at the stored bit depth (a reference made
    here: poppler smooths 1-bit images when drawing, so a drawing is compared with a drawing)."""
    folder = pdf_path.parent
    subprocess.run(["pdfimages", "-png", str(pdf_path), str(folder / "extracted")], check=True)
    (extracted,) = folder.glob("extracted-*.png")
    with Image.open(extracted) as img:
        pixels = np.asarray(img.convert(mode))
    reference = folder / "reference.pdf"
    with pikepdf.open(pdf_path) as pdf:
        (image,) = pdf.pages[0].get_images().values()
        if image.stream_dict.BitsPerComponent == 1:  # the same pixels as bits (1 = white)
            source = source.convert("1", dither=Image.Dither.NONE)
        image.write(source.tobytes())  # no filter: the pixels as they are
        for key in ("/Filter", "/DecodeParms"):
            if key in image.stream_dict:
                del image.stream_dict[key]
        pdf.save(reference)
    same = np.array_equal(_drawn(pdf_path, "drawn", mode), _drawn(reference, "drawn-reference", mode))
    return pixels, same


def _assert_same_everywhere(pdf_path: Path, source: Image.Image) -> None:
    expected = np.asarray(source.convert("L"))
    _, _, pikepdf_pixels = _stored_image(pdf_path)
    assert pikepdf_pixels.shape == expected.shape
    assert np.array_equal(pikepdf_pixels, expected)
    extracted, drawn_alike = _poppler_pixels(pdf_path, source)
    assert np.array_equal(extracted, expected)
    assert drawn_alike


def test_a_bilevel_page_is_stored_as_group4_with_every_pixel_unchanged(
    tmp_path: Path, samples_module: Any
) -> None:
    page = _bilevel(_text_page(samples_module))
    pdf_path, _ = _package(tmp_path, page, "bilevel", "bilevel")
    params, raw, _ = _stored_image(pdf_path)
    assert params.Filter == pikepdf.Name.CCITTFaxDecode and params.BitsPerComponent == 1
    assert params.DecodeParms.K == -1 and params.DecodeParms.Columns == page.width
    _assert_same_everywhere(pdf_path, page)
    # what was stored before: the packed bits through Flate at level 9
    assert len(raw) < len(zlib.compress(page.tobytes(), 9))


def test_a_grey_page_of_only_black_and_white_becomes_group4_without_a_pixel_changed(
    tmp_path: Path, samples_module: Any
) -> None:
    page = _bilevel(_text_page(samples_module)).convert("L")  # a bilevel scan saved as grey
    assert set(np.unique(np.asarray(page))) == {0, 255}
    pdf_path, _ = _package(tmp_path, page, "gray", "grey-bw")
    params, _, _ = _stored_image(pdf_path)
    assert params.Filter == pikepdf.Name.CCITTFaxDecode
    _assert_same_everywhere(pdf_path, page)


def test_a_grey_page_is_never_binarised_and_predictors_make_it_smaller(
    tmp_path: Path, samples_module: Any
) -> None:
    page = _text_page(samples_module, noise=4.0)
    pixels = np.asarray(page)
    assert len(np.unique(pixels)) > 2
    pdf_path, _ = _package(tmp_path, page, "gray", "grey")
    params, raw, _ = _stored_image(pdf_path)
    assert params.Filter == pikepdf.Name.FlateDecode and params.BitsPerComponent == 8
    assert params.DecodeParms.Predictor == 15 and params.DecodeParms.Colors == 1
    _assert_same_everywhere(pdf_path, page)
    assert len(raw) < len(zlib.compress(page.tobytes(), 6))  # what was stored before


def test_three_grey_levels_stay_eight_bit(tmp_path: Path) -> None:
    pixels = np.full((120, 90), 255, np.uint8)
    pixels[10:50, 10:80], pixels[60:100, 20:70] = 0, 128
    page = Image.fromarray(pixels)
    pdf_path, _ = _package(tmp_path, page, "gray", "three")
    params, _, _ = _stored_image(pdf_path)
    assert params.BitsPerComponent == 8 and params.Filter == pikepdf.Name.FlateDecode
    _assert_same_everywhere(pdf_path, page)


def test_a_colour_page_keeps_every_pixel(tmp_path: Path, samples_module: Any) -> None:
    grey = np.asarray(_text_page(samples_module, noise=3.0)).astype(np.int16)
    rgb = np.clip(np.stack([grey + 4, grey - 2, grey - 15], axis=-1), 0, 255).astype(np.uint8)
    rgb[200:260, 300:420] = (200, 40, 40)  # a red seal
    page = Image.fromarray(rgb, "RGB")
    pdf_path, _ = _package(tmp_path, page, "rgb", "colour")
    params, _, _ = _stored_image(pdf_path)
    assert params.ColorSpace == pikepdf.Name.DeviceRGB
    with pikepdf.open(pdf_path) as pdf:
        (image,) = pdf.pages[0].get_images().values()
        assert np.array_equal(np.asarray(pikepdf.PdfImage(image).as_pil_image()), rgb)
    extracted, drawn_alike = _poppler_pixels(pdf_path, page, "RGB")
    assert np.array_equal(extracted, rgb) and drawn_alike


def test_a_jpeg_is_stored_as_its_own_bytes(tmp_path: Path, samples_module: Any) -> None:
    source = tmp_path / "page.jpg"
    _text_page(samples_module, noise=4.0).save(source, quality=80)
    pdf = package.build_pdf([package.PackagePage(source, "jpeg", DPI, None)])
    outcome = package.save_pdfa(pdf, tmp_path / "jpeg.pdf")
    assert outcome.pdfa_valid, outcome.validator_findings
    params, raw, _ = _stored_image(outcome.pdf_path)
    assert params.Filter == pikepdf.Name.DCTDecode and raw == source.read_bytes()


def test_group4_says_how_its_bits_read() -> None:
    """Pillow writes mode "1" as MinIsBlack (a 1 bit is white) and libtiff codes 1 bits as black
    runs: a reader must turn black runs back into 1 bits (BlackIs1), or the page comes out inverted."""
    img = Image.fromarray(np.eye(16, dtype=np.uint8) * 255).convert("1", dither=Image.Dither.NONE)
    data, black_is_1 = package.group4(img)
    assert data and black_is_1 is True


def test_the_viewer_shows_a_group4_page_as_scanned(tmp_path: Path, samples_module: Any) -> None:
    """Page images for people (pageimages.page_png, behind the web viewer, the API and QA) come
    from the archived PDF: a Group 4 page comes out with the scan's own pixels."""
    from pipeline.pageimages import page_png

    page = _bilevel(_text_page(samples_module))
    pdf_path, source = _package(tmp_path, page, "bilevel", "viewer")
    record = {
        "archive_code": "A-1",
        "pdf_sha256": "ab" * 32,
        "pages": [{"page": 1, "image_path": str(source)}],
    }
    full = page_png(tmp_path / "work", record, pdf_path, 1, "full")
    thumb = page_png(tmp_path / "work", record, pdf_path, 1, "thumb")
    with Image.open(full) as shown, Image.open(thumb) as small:
        assert np.array_equal(np.asarray(shown.convert("L")), np.asarray(page.convert("L")))
        assert small.width == 320 and np.asarray(small.convert("L")).mean() > 128  # not inverted
