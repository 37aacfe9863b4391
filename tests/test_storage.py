"""Page images in the PDF/A: lossless recompression gives back exactly the cleaned page's pixels.

Bilevel pages (and grey pages holding only black and white) are stored as CCITT Group 4, grey
pages as Flate with PNG predictors, colour as Flate, JPEG as the JPEG's own bytes. Each is read
back three ways: pikepdf's PdfImage, poppler's pdfimages (the stream as stored) and pdftoppm
(the page as a viewer draws it), and the package is validated as PDF/A-2b on its written bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pikepdf
import pytest
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


# ---------------------------------------------------------------- JPEG sources kept as they are


def _page_step(tmp_path: Path, source: Path) -> tuple[Any, Any, np.ndarray]:
    """One source file through the pipeline's page step (read, clean, OCR with the default engine),
    keeping the cleaned pixels the OCR read; then packaged as an item is. Returns the page result,
    the item and the cleaned page."""
    from pipeline import process
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "home")
    cache = settings.work_dir / "pages"
    cache.mkdir(parents=True, exist_ok=True)
    (planned,), problems = process.plan_files([source], settings)
    assert not problems
    pool = process.engine_pool(settings)
    result, loaded = process.read_step(planned, 1, settings, cache)
    assert loaded is not None, result.error
    with pool.engine() as engine:
        begun = process.begin_step(loaded, result, settings)
        cleaned = process.finish_step(begun, result, pool.judges(engine))
        result = process.recognise_step(cleaned, result, engine, settings, cache)
    item = process.package_item(source.parent.name, None, [result], [], "key", "batch", settings)
    return result, item, cleaned.image


def _turned_jpeg(tmp_path: Path, samples_module: Any, mode: str = "RGB", **save: Any) -> Path:
    """A page scanned sideways (90 degrees) and skewed by 2.5 degrees, with a dark scanner edge on
    two sides, saved as a JPEG the way a scanner does."""
    title, paragraphs = samples_module.TEXTS["claim"]
    page = samples_module.render_page(
        title,
        paragraphs,
        [("保险合同号", "P2014-000789")],
        dpi=DPI,
        noise=3.0,
        seed=4,
        size_mm=(148, 210),
        skew=2.5,
        rotate=90,
    )
    pixels = np.asarray(page).copy()
    pixels[:, :30], pixels[:24, :] = 22, 26
    grey = pixels.astype(np.int16)
    img = Image.fromarray(pixels)
    if mode != "L":
        img = Image.fromarray(np.clip(np.stack([grey + 3, grey - 1, grey - 12], -1), 0, 255).astype(np.uint8))
    source = tmp_path / "BX01-2014-LP-0001" / "0001.jpg"
    source.parent.mkdir(parents=True)
    img.convert(mode).save(source, dpi=(DPI, DPI), **({"quality": 85} | save))
    return source


def _mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_a_turned_skewed_jpeg_keeps_its_bytes_and_is_drawn_as_the_cleaned_page(
    tmp_path: Path, samples_module: Any
) -> None:
    """The PDF holds the source JPEG's exact bytes; the page draws it through the cleanup's turn,
    deskew and crops, so it looks like the cleaned page the OCR read, and the text layer (placed
    in the cleaned page's coordinates) lies over the same words."""
    from pipeline.models import SOURCE_JPEG_KEPT
    from pipeline.pageimages import page_png

    source = _turned_jpeg(tmp_path, samples_module)
    result, item, cleaned = _page_step(tmp_path, source)
    assert item.pdfa_valid and item.pdf_path
    assert result.rotation in (90, 270) and 2.3 <= abs(result.skew_deg) <= 2.7
    assert result.image_encoding == SOURCE_JPEG_KEPT and result.geometry is not None
    assert (result.width, result.height) == result.geometry.size == (cleaned.shape[1], cleaned.shape[0])
    pdf_path = Path(item.pdf_path)

    # the stream stored is the source file, byte for byte
    params, raw, _ = _stored_image(pdf_path)
    assert params.Filter == pikepdf.Name.DCTDecode
    assert hashlib.sha256(raw).hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
    record = json.loads((pdf_path.parent / "record.json").read_text(encoding="utf-8"))
    assert record["pages"][0]["image_encoding"] == "source JPEG kept"
    assert record["pages"][0]["source_sha256"] == hashlib.sha256(raw).hexdigest()

    # drawn upright: close to the cleaned page (resampled, so not exact), far from it turned over
    drawn = _drawn(pdf_path, "kept")
    upright = np.asarray(Image.fromarray(cleaned).convert("L"))
    assert _mean_difference(drawn, upright) < 6.0
    assert _mean_difference(drawn, upright[::-1, ::-1]) > 2 * _mean_difference(drawn, upright)
    # the viewer's page image is the cleaned page too, at its size
    record["pdf_sha256"] = item.pdf_sha256
    shown = page_png(tmp_path / "work", record, pdf_path, 1, "full")
    with Image.open(shown) as img:
        assert _mean_difference(np.asarray(img.convert("L")), upright) < 6.0

    # the text layer: the title found where the OCR read it on the cleaned page
    text = subprocess.run(
        ["pdftotext", str(pdf_path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert result.ocr is not None and result.ocr.lines
    title = max(result.ocr.lines, key=lambda line: line.box[3] - line.box[1])
    assert title.text in text.replace(" ", "")
    bbox = subprocess.run(
        ["pdftotext", "-bbox", str(pdf_path), "-"], capture_output=True, text=True, check=True
    ).stdout
    words = re.findall(r'xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)<', bbox)
    x0, y0, x1, y1, _ = next(w for w in words if w[4] and w[4] in title.text)
    scale = 72 / DPI
    assert abs(float(x0) - title.box[0] * scale) < 3 and abs(float(x1) - title.box[2] * scale) < 3
    assert float(y0) < (title.box[1] + title.box[3]) / 2 * scale < float(y1)


def test_a_cmyk_jpeg_is_written_again_and_says_why(tmp_path: Path, samples_module: Any) -> None:
    """A CMYK JPEG is not drawn from its own bytes (PDF readers and Pillow disagree on Adobe's
    inverted CMYK): the cleaned page is stored as JPEG, the record says why, the package validates."""
    source = _turned_jpeg(tmp_path, samples_module, mode="CMYK")
    result, item, cleaned = _page_step(tmp_path, source)
    assert item.pdfa_valid
    assert result.geometry is None
    assert result.image_encoding.startswith("JPEG, quality 90 (the source could not be kept: it is a CMYK")
    params, raw, _ = _stored_image(Path(item.pdf_path or ""))
    assert params.Filter == pikepdf.Name.DCTDecode and params.ColorSpace == pikepdf.Name.DeviceRGB
    assert raw != source.read_bytes()
    drawn = _drawn(Path(item.pdf_path or ""), "fallback")
    assert _mean_difference(drawn, np.asarray(Image.fromarray(cleaned).convert("L"))) < 6.0


def _patched(data: bytes, marker: int, offset: int, value: int) -> bytes:
    """A JPEG with one byte of its first `marker` segment's body changed."""
    at = data.index(bytes([0xFF, marker])) + 4 + offset
    return data[:at] + bytes([value]) + data[at + 1 :]


def test_which_jpegs_are_kept_as_they_are(tmp_path: Path) -> None:
    """Baseline and progressive grey or colour JPEGs, 1 x 1 too, are kept; a CMYK one, one with an
    EXIF turn, 12 bits, arithmetic coding or more than one picture (MPO) are not, each with why."""
    rng = np.random.default_rng(5)
    grey = Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8))
    colour = grey.convert("RGB")
    cases: dict[str, tuple[Image.Image, dict[str, Any]]] = {
        "grey": (grey, {}),
        "colour": (colour, {}),
        "progressive": (colour, {"progressive": True}),
        "one-pixel": (Image.new("L", (1, 1), 200), {}),
        "cmyk": (colour.convert("CMYK"), {}),
    }
    exif = Image.Exif()
    exif[0x0112] = 6
    cases["exif-turned"] = (colour, {"exif": exif.tobytes()})
    exif_upright = Image.Exif()
    exif_upright[0x0112] = 1
    cases["exif-upright"] = (colour, {"exif": exif_upright.tobytes()})
    paths = {}
    for name, (img, options) in cases.items():
        paths[name] = tmp_path / f"{name}.jpg"
        img.save(paths[name], "JPEG", quality=90, **options)
    baseline = paths["grey"].read_bytes()
    paths["12-bit"] = tmp_path / "12-bit.jpg"
    paths["12-bit"].write_bytes(_patched(baseline, 0xC0, 0, 12))
    paths["arithmetic"] = tmp_path / "arithmetic.jpg"
    paths["arithmetic"].write_bytes(baseline.replace(b"\xff\xc0", b"\xff\xc9", 1))
    paths["mpo"] = tmp_path / "mpo.jpg"
    colour.save(paths["mpo"], "MPO", save_all=True, append_images=[grey.convert("RGB")])

    why = {name: package.source_jpeg_facts(path)[1] for name, path in paths.items()}
    assert {name for name, reason in why.items() if not reason} == {
        "grey",
        "colour",
        "progressive",
        "one-pixel",
        "exif-upright",
    }
    assert "CMYK" in why["cmyk"] and "EXIF orientation (6)" in why["exif-turned"]
    assert "12-bit" in why["12-bit"] and "SOF9" in why["arithmetic"] and "MPO" in why["mpo"]
    facts, _ = package.source_jpeg_facts(paths["progressive"])
    assert facts == package.JpegFacts(48, 64, 3)


def test_the_viewer_shows_an_untouched_kept_jpeg_with_its_decoded_pixels(tmp_path: Path) -> None:
    """A kept JPEG the cleanup did not move is drawn filling its page: the viewer's page image is
    its decoded pixels exactly (no drawing, no resampling)."""
    from pipeline.models import PageGeometry
    from pipeline.pageimages import page_png

    source = tmp_path / "upright.jpg"
    rng = np.random.default_rng(9)
    Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8)).save(source, quality=80)
    geometry = PageGeometry((60, 90), (0, 0, 60, 90), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (60, 90))
    pdf = package.build_pdf([package.PackagePage(source, "jpeg", 20, None, geometry)])
    outcome = package.save_pdfa(pdf, tmp_path / "upright.pdf")
    assert outcome.pdfa_valid, outcome.validator_findings
    pages = [{"page": 1, "image_path": str(source)}]
    record = {"archive_code": "A-2", "pdf_sha256": "cd" * 32, "pages": pages}
    shown = page_png(tmp_path / "work", record, outcome.pdf_path, 1, "full")
    with Image.open(shown) as img, Image.open(source) as decoded:
        assert np.array_equal(np.asarray(img), np.asarray(decoded))


def test_a_kept_jpeg_whose_work_copy_changed_is_never_archived(tmp_path: Path, samples_module: Any) -> None:
    """The archive holds the bytes that were read: a kept source JPEG whose copy in the work
    folder was swapped is refused at packaging (nothing archived, the reason named), and the
    page's cached result is not reused (the page is read again from its snapshot)."""
    from pipeline import process
    from tests.conftest import make_settings

    source = _turned_jpeg(tmp_path, samples_module)
    result, item, _ = _page_step(tmp_path, source)
    assert item.pdfa_valid and result.geometry is not None
    kept = Path(result.image_path)
    with Image.open(source) as img:
        Image.new("RGB", img.size, "white").save(tmp_path / "other.jpg", quality=90)
    kept.write_bytes((tmp_path / "other.jpg").read_bytes())

    settings = make_settings(tmp_path / "home")
    with pytest.raises(ValueError, match="SHA-256"):
        process.package_item("AGAIN-0001", None, [result], [], "key2", "batch", settings)
    assert not list(settings.archive_dir.rglob("AGAIN-0001*"))
    assert process._cached_page(kept.with_name(kept.name.replace("_clean.jpg", "_page.json"))) is None


def test_a_jpeg_naming_its_components_rgb_is_written_again(tmp_path: Path) -> None:
    """Decoders take components named R, G, B as RGB, a PDF reader as YCbCr: such a JPEG without
    Adobe's marker would change colour in the archive, so it is not kept as it is."""
    colour = Image.fromarray(np.random.default_rng(3).integers(0, 255, (32, 24, 3), dtype=np.uint8))
    colour.save(tmp_path / "c.jpg", "JPEG", quality=90)
    data = (tmp_path / "c.jpg").read_bytes()
    for n, letter in enumerate(b"RGB"):
        data = _patched(data, 0xC0, 6 + 3 * n, letter)
    facts, why = package.jpeg_facts(data)
    assert facts is None and "RGB" in why
