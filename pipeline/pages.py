"""Read page files: list an item folder's pages in order and decode one page with its DPI."""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from pipeline.errors import PageReadError
from pipeline.models import PageSource

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
PDF_SUFFIXES = {".pdf"}
# Files scanner software and desktops leave behind; never pages, never reported.
IGNORED_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}

# Pillow refuses absurd images (decompression bombs); A0 at 1200 dpi stays below this.
Image.MAX_IMAGE_PIXELS = 40_000 * 60_000


@dataclass(frozen=True)
class LoadedPage:
    pixels: np.ndarray  # grey (H, W) uint8 or RGB (H, W, 3) uint8
    dpi: int | None  # None when the file does not say
    source_format: str  # "jpeg", "png", "tiff", "pdf"
    bilevel: bool


@dataclass(frozen=True)
class FileProblem:
    file: str
    reason: str


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_pages(item_dir: Path) -> tuple[list[PageSource], list[FileProblem]]:
    """The item's pages in scanner order; every file that is not a readable page is a problem."""
    sources: list[PageSource] = []
    problems: list[FileProblem] = []
    for path in sorted(item_dir.iterdir(), key=_natural_key):
        name = path.name
        if name.lower() in IGNORED_NAMES or name.startswith("."):
            continue
        if path.is_symlink():
            problems.append(FileProblem(name, "is a symbolic link; links are not followed"))
            continue
        if path.is_dir():
            problems.append(FileProblem(name, "is a folder inside an item folder; not read"))
            continue
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES | PDF_SUFFIXES:
            problems.append(FileProblem(name, f"is not a page image (unsupported type '{suffix or name}')"))
            continue
        if path.stat().st_size == 0:
            problems.append(FileProblem(name, "is empty (0 bytes)"))
            continue
        try:
            sources.extend(_expand(path))
        except PageReadError as exc:
            problems.append(FileProblem(name, str(exc)))
    return sources, problems


def _expand(path: Path) -> list[PageSource]:
    """One PageSource per page: multi-page TIFF frames and PDF pages are separate pages."""
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return [PageSource(path, i, "pdf") for i in range(_pdf_page_count(path))]
    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise PageReadError(f"cannot be read as an image ({exc.__class__.__name__})") from exc
    kind = "tiff" if suffix in {".tif", ".tiff"} else "image"
    return [PageSource(path, i, kind) for i in range(frames)]


def _pdf_page_count(path: Path) -> int:
    import pikepdf

    try:
        with pikepdf.open(path) as pdf:
            return len(pdf.pages)
    except pikepdf.PasswordError as exc:
        raise PageReadError("is a password-protected PDF") from exc
    except pikepdf.PdfError as exc:
        raise PageReadError(f"is not a readable PDF ({exc})") from exc


def _pdf_native_dpi(path: Path, page: int) -> int | None:
    """Resolution of the largest image on a scanner PDF page, from `pdfimages -list`."""
    try:
        out = subprocess.run(
            ["pdfimages", "-list", "-f", str(page + 1), "-l", str(page + 1), str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    best: tuple[int, int] | None = None
    for line in out.splitlines()[2:]:
        cols = line.split()
        if len(cols) >= 14 and cols[3].isdigit() and cols[12].isdigit():
            pixels = int(cols[3]) * int(cols[4])
            if best is None or pixels > best[0]:
                best = (pixels, int(cols[12]))
    return best[1] if best else None


def _pixels(img: Image.Image) -> tuple[np.ndarray, bool]:
    bilevel = img.mode == "1"
    if img.mode in ("1", "L", "I;16", "I", "F", "LA"):
        img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img).copy(), bilevel


def _dpi_of(img: Image.Image) -> int | None:
    dpi = img.info.get("dpi")
    if not dpi:
        return None
    value = float(dpi[0])
    return int(round(value)) if value >= 10 else None


def read_page(source: PageSource) -> LoadedPage:
    """Decode one page; PageReadError names what is wrong with the file."""
    if source.kind == "pdf":
        return _read_pdf_page(source)
    try:
        with Image.open(source.path) as img:
            frame: Image.Image = img
            if source.frame:
                frame = ImageSequence.Iterator(img)[source.frame]
            frame.load()
            pixels, bilevel = _pixels(frame)
            fmt = (img.format or "").lower()
            return LoadedPage(pixels, _dpi_of(frame), "jpeg" if fmt in ("jpeg", "mpo") else fmt, bilevel)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, IndexError) as exc:
        raise PageReadError(f"cannot be decoded ({exc.__class__.__name__}: {exc})") from exc


def _read_pdf_page(source: PageSource) -> LoadedPage:
    from pdf2image import convert_from_path
    from pdf2image.exceptions import PDFPageCountError, PDFSyntaxError

    dpi = _pdf_native_dpi(source.path, source.frame)
    try:
        images = convert_from_path(
            str(source.path),
            dpi=dpi or 300,
            first_page=source.frame + 1,
            last_page=source.frame + 1,
            grayscale=False,
        )
    except (PDFPageCountError, PDFSyntaxError, OSError) as exc:
        raise PageReadError(f"page {source.frame + 1} cannot be rasterised ({exc})") from exc
    if not images:
        raise PageReadError(f"page {source.frame + 1} rasterised to nothing")
    pixels, bilevel = _pixels(images[0])
    if (
        pixels.ndim == 3
        and np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 1], pixels[..., 2])
    ):
        pixels = np.ascontiguousarray(pixels[..., 0])
    return LoadedPage(pixels, dpi, "pdf", bilevel)
