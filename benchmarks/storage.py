"""Storage: the archive's bytes per page for each kind of input, beside OCRmyPDF's for the same pages.

Kinds: a bilevel TIFF (Group 4, as bilevel scanners write it), grey and colour TIFF (LZW), grey
and colour JPEG (quality 85); generated pages of Chinese business text with paper noise,
speckles and (colour) a paper tint and a red seal: A4 at 300 dpi, two pages a kind (a quick run:
one A6 page at 150 dpi, and no OCRmyPDF).

Ours: every page through the pipeline's page step (read, clean, OCR with the default engine) and
packaged as the pipeline packages an item (package.build_pdf, write_metadata, save_pdfa), one
PDF/A per kind. Before: the same cleaned images as packaging encoded them until now (bilevel: the
packed bits through Flate at level 9; grey and colour: the raw pixels through Flate at level 6;
JPEG: the cleaned page written again as JPEG at package.jpeg_quality, where the source JPEG's own
bytes are now kept and drawn through the cleanup's map), with the CPU seconds of both encodings.
OCRmyPDF: img2pdf of the same source files, then
`ocrmypdf -l chi_sim+chi_tra+eng --output-type pdfa-2` with its default (lossless) optimisation.
Shares of a PDF: page images (their streams as stored), the text layer (content streams and
fonts) and the rest (XMP, the output intent's ICC profile, object and cross-reference streams,
structure).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("bilevel-tiff", "grey-tiff", "colour-tiff", "grey-jpeg", "colour-jpeg")


def make_pages(folder: Path, quick: bool) -> dict[str, list[Path]]:
    """Source files of every kind, the same page content across kinds."""
    sys.path.insert(0, str(ROOT / "samples"))
    import make_samples

    from benchmarks.run import page_text

    rng = random.Random(21)
    size_mm, dpi, count = ((105, 148), 150, 1) if quick else ((210, 297), 300, 2)
    files: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    for n in range(count):
        grey = make_samples.render_page(
            f"理赔申请书（第{n + 1}页）",
            page_text(rng, 160 if quick else 700),
            [("保险合同号", f"P2014-{rng.randrange(10**6):06d}"), ("投保人", "王建国")],
            dpi=dpi,
            noise=4.0,
            seed=300 + n,
            size_mm=size_mm,
        )
        pixels = np.asarray(grey).astype(np.int16)
        speckles = np.random.default_rng(n)
        ys = speckles.integers(0, pixels.shape[0], 400)
        xs = speckles.integers(0, pixels.shape[1], 400)
        pixels[ys, xs] = speckles.integers(20, 140, 400)
        grey = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        tinted = np.clip(np.stack([pixels + 3, pixels - 1, pixels - 12], axis=-1), 0, 255).astype(np.uint8)
        colour = Image.fromarray(tinted, "RGB")
        x, y, r = colour.width * 0.62, colour.height * 0.72, colour.width * 0.1
        ImageDraw.Draw(colour).ellipse((x - r, y - r, x + r, y + r), outline=(200, 40, 40), width=dpi // 16)
        colour = colour.filter(ImageFilter.GaussianBlur(0.4))
        bilevel = grey.point(lambda v: 255 if v >= 150 else 0).convert("1", dither=Image.Dither.NONE)
        saves: list[tuple[str, Image.Image, str, dict[str, Any]]] = [
            ("bilevel-tiff", bilevel, "tif", {"compression": "group4"}),
            ("grey-tiff", grey, "tif", {"compression": "tiff_lzw"}),
            ("colour-tiff", colour, "tif", {"compression": "tiff_lzw"}),
            ("grey-jpeg", grey, "jpg", {"quality": 85}),
            ("colour-jpeg", colour, "jpg", {"quality": 85}),
        ]
        for kind, img, suffix, options in saves:
            path = folder / kind / f"{n + 1:04d}.{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, dpi=(dpi, dpi), **options)
            files[kind].append(path)
    return files


def pdf_shares(path: Path) -> dict[str, Any]:
    """Bytes of a PDF: total, page images, text layer, the rest; per page too."""
    import pikepdf

    total = path.stat().st_size
    image = text = 0
    with pikepdf.open(path) as pdf:
        pages = len(pdf.pages)
        for obj in pdf.objects:
            if not isinstance(obj, pikepdf.Stream):
                continue
            size = len(obj.read_raw_bytes())
            kind = obj.stream_dict.get("/Type")
            if obj.stream_dict.get("/Subtype") == pikepdf.Name.Image:
                image += size
            elif kind in (pikepdf.Name.Metadata, pikepdf.Name.ObjStm, pikepdf.Name.XRef):
                continue  # the rest
            elif "/N" in obj.stream_dict and "/Subtype" not in obj.stream_dict:
                continue  # an ICC profile (the output intent): the rest
            else:
                text += size  # page content, form XObjects, font programs, ToUnicode, CIDToGIDMap
    return {
        "pages": pages,
        "bytes": total,
        "bytes_per_page": round(total / pages),
        "image_share": round(image / total, 4),
        "text_layer_share": round(text / total, 4),
        "other_share": round((total - image - text) / total, 4),
        "text_layer_bytes_per_page": round(text / pages),
    }


def cleaned_from_source(image_path: Path, geometry: Any) -> np.ndarray:
    """The cleaned page of a kept source JPEG, made again from the source and the cleanup's map as
    imaging.clean_page made it (the same OpenCV warp on pixel centres; the same pixels)."""
    import cv2

    with Image.open(image_path) as img:
        source = np.array(img)
    x0, y0, x1, y1 = geometry.source_crop
    fill = geometry.fill if geometry.fill else (255.0,) * (1 if source.ndim == 2 else 3)
    outside = np.ones(source.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    source[outside] = fill[0] if source.ndim == 2 else fill
    m = np.vstack([np.array(geometry.matrix).reshape(2, 3), [0.0, 0.0, 1.0]])
    centres = (
        np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
        @ m
        @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    )
    return cv2.warpAffine(
        source,
        centres[:2],
        geometry.size,
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill if len(fill) > 1 else fill[0],
    )


def _encoded_before(image_path: Path, image_format: str, geometry: Any = None) -> tuple[int, float]:
    """Bytes and CPU seconds of the page image as packaging encoded it until now."""
    import io

    from pipeline.settings import PackageSettings

    started = time.process_time()
    if geometry is not None:  # a kept source JPEG: the cleaned page was written again as JPEG
        pixels = cleaned_from_source(image_path, geometry)
        started = time.process_time()
        buffer = io.BytesIO()
        quality = PackageSettings().jpeg_quality
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, optimize=True)
        return len(buffer.getvalue()), time.process_time() - started
    with Image.open(image_path) as img:
        if image_format == "jpeg":
            size = image_path.stat().st_size
        elif image_format == "bilevel":
            size = len(zlib.compress(img.convert("1").tobytes(), 9))
        else:
            size = len(zlib.compress(img.convert("L" if image_format == "gray" else "RGB").tobytes(), 6))
    return size, time.process_time() - started


def _encoded_now(
    image_path: Path, image_format: str, dpi: int, geometry: Any = None
) -> tuple[int, str, float]:
    """Bytes, filter and CPU seconds of the page image as packaging encodes it now."""
    import pikepdf

    from pipeline import package

    pdf = pikepdf.Pdf.new()
    started = time.process_time()
    page = package.PackagePage(image_path, image_format, dpi, None, geometry)
    stream, _, _ = package._image_xobject(pdf, page)
    seconds = time.process_time() - started
    return len(stream.read_raw_bytes()), str(stream.Filter), seconds


def lossless_choices(image_path: Path, mode: str) -> dict[str, dict[str, float]]:
    """Image bytes and CPU seconds of the lossless encodings a grey or colour page could have:
    plain Flate and Flate with PNG predictors, each at level 6 and 9 (what the choice rests on)."""
    from pipeline import package

    with Image.open(image_path) as img:
        pixels = img.convert(mode)
    raw = pixels.tobytes()
    encoders = {
        "flate_6": lambda: zlib.compress(raw, 6),
        "flate_9": lambda: zlib.compress(raw, 9),
        "png_predictors_6": lambda: package.png_idat(pixels, level=6),
        "png_predictors_9": lambda: package.png_idat(pixels, level=9),
    }
    choices = {}
    for name, encode in encoders.items():
        started = time.process_time()
        size = len(encode())
        choices[name] = {"bytes": size, "cpu_s": round(time.process_time() - started, 3)}
    return choices


def ours(files: dict[str, list[Path]], work: Path, quick: bool) -> dict[str, Any]:
    """Each kind through the page step and packaged as an item; image bytes before and after."""
    from pipeline import package
    from pipeline.process import EnginePool, plan_files, process_page
    from pipeline.settings import Settings

    settings = Settings(home=str(work / "storage-home"), ocr={"workers": 1})  # type: ignore[arg-type]
    cache = settings.work_dir / "pages"
    cache.mkdir(parents=True, exist_ok=True)
    pool = EnginePool(settings)
    result: dict[str, Any] = {}
    for kind, paths in files.items():
        planned, problems = plan_files(paths, settings)
        if problems:
            raise RuntimeError(f"{kind}: {problems}")
        pages = [process_page(page, n + 1, settings, pool, cache) for n, page in enumerate(planned)]
        packaged = [
            package.PackagePage(Path(p.image_path), p.image_format, p.dpi or 300, p.ocr, p.geometry)
            for p in pages
            if p.image_path
        ]
        pdf = package.build_pdf(packaged)
        package.write_metadata(pdf, f"STORAGE-{kind}", None, "Archive Capture benchmark")
        outcome = package.save_pdfa(pdf, work / f"storage-ours-{kind}.pdf")
        pdf.close()
        shares = pdf_shares(outcome.pdf_path)
        before = [_encoded_before(p.image_path, p.image_format, p.geometry) for p in packaged]
        now = [_encoded_now(p.image_path, p.image_format, p.dpi, p.geometry) for p in packaged]
        image_before, image_now = sum(b for b, _ in before), sum(n for n, _, _ in now)
        result[kind] = {
            **shares,
            "pdfa_valid": outcome.pdfa_valid,
            "image_format": packaged[0].image_format,
            "filter": now[0][1],
            "image_bytes_per_page": round(image_now / len(packaged)),
            "image_bytes_per_page_before": round(image_before / len(packaged)),
            "bytes_per_page_before": round((shares["bytes"] - image_now + image_before) / len(packaged)),
            "image_ratio_now_to_before": round(image_now / image_before, 3),
            "encode_cpu_s_per_page": round(sum(s for _, _, s in now) / len(packaged), 3),
            "encode_cpu_s_per_page_before": round(sum(s for _, s in before) / len(packaged), 3),
            "source_bytes_per_page": round(sum(p.stat().st_size for p in files[kind]) / len(packaged)),
            "image_encoding": sorted({p.image_encoding for p in pages}),
            "image_streams_are_the_source_files": _streams_are_sources(outcome.pdf_path, files[kind]),
            "rotation_skew": [(p.rotation, p.skew_deg) for p in pages],
        }
        if not quick and packaged[0].image_format in ("gray", "rgb"):
            mode = "L" if packaged[0].image_format == "gray" else "RGB"
            result[kind]["lossless_choices_first_page"] = lossless_choices(packaged[0].image_path, mode)
    return result


def _streams_are_sources(pdf_path: Path, sources: list[Path]) -> bool:
    """Whether page n's image stream, as stored, has the SHA-256 of source file n."""
    import pikepdf

    with pikepdf.open(pdf_path) as pdf:
        stored = [
            hashlib.sha256(next(iter(page.get_images().values())).read_raw_bytes()).hexdigest()
            for page in pdf.pages
        ]
    return stored == [hashlib.sha256(p.read_bytes()).hexdigest() for p in sources]


def ocrmypdf_output(files: dict[str, list[Path]], work: Path) -> dict[str, Any] | None:
    """OCRmyPDF's PDF/A for the same source files, one per kind; None when it is not installed."""
    try:
        import img2pdf
        import ocrmypdf  # noqa: F401
    except ImportError:
        return None
    if shutil.which("gs") is None:
        return None
    result: dict[str, Any] = {}
    for kind, paths in files.items():
        source, output = work / f"storage-ocrmypdf-in-{kind}.pdf", work / f"storage-ocrmypdf-{kind}.pdf"
        source.write_bytes(img2pdf.convert([str(p) for p in paths]))
        command = [sys.executable, "-m", "ocrmypdf", "--quiet", "-l", "chi_sim+chi_tra+eng"]
        command += ["--output-type", "pdfa-2", "--jobs", "2", str(source), str(output)]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        result[kind] = {**pdf_shares(output), "seconds": round(time.perf_counter() - started, 1)}
    return result


def bench_storage(work: Path, quick: bool) -> dict[str, Any]:
    files = make_pages(work / "storage-pages", quick)
    result: dict[str, Any] = {"pages_per_kind": len(files[KINDS[0]]), "ours": ours(files, work, quick)}
    theirs = None if quick else ocrmypdf_output(files, work)
    if theirs is not None:
        result["ocrmypdf"] = theirs
        for kind, mine in result["ours"].items():
            mine["ratio_to_ocrmypdf"] = round(mine["bytes_per_page"] / theirs[kind]["bytes_per_page"], 3)
    return result


def storage_rows(s: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows for benchmarks.run's table: per kind, bytes per page ours / before / OCRmyPDF."""
    rows = []
    theirs = s.get("ocrmypdf") or {}
    for kind, mine in s["ours"].items():
        other = theirs.get(kind)
        baseline = f"before {mine['bytes_per_page_before'] // 1024} KB"
        if other:
            baseline += f"; OCRmyPDF {other['bytes_per_page'] // 1024} KB (images {other['image_share']:.0%})"
        rows.append(
            (
                f"storage KB/page, {kind} ({mine['filter']})",
                f"{mine['bytes_per_page'] // 1024} (images {mine['image_share']:.0%}, "
                f"text {mine['text_layer_share']:.1%})",
                baseline,
                str(mine.get("ratio_to_ocrmypdf", mine["image_ratio_now_to_before"])),
                "source JPEG kept" if mine.get("image_streams_are_the_source_files") else "smaller, lossless",
            )
        )
    return rows
