"""Page images for people: taken from the archived PDF/A itself, cached as PNG in the work folder.

The PDF is the source of truth (the cleaned images in work/pages may have been cleared), so
page n of an item is the PDF page that holds its n-th packaged page. Where that page's image
fills the page as it is, its pixels are shown exactly; where the page draws a kept source JPEG
through the cleanup's map (turned, deskewed, cropped), the page is drawn by poppler at the
image's own resolution, as a PDF viewer shows it.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.errors import PageNotFound

Size = Literal["thumb", "full"]
THUMB_WIDTH = 320


def packaged_pages(record: dict[str, Any]) -> list[int]:
    """The page numbers that are in the PDF, in order: the readable pages (as package_item takes them)."""
    return [p["page"] for p in record["pages"] if p.get("error") is None and p.get("image_path")]


def pdf_page_index(record: dict[str, Any], seq: int) -> int:
    """Where page `seq` sits in the PDF."""
    packaged = packaged_pages(record)
    if seq not in packaged:
        raise PageNotFound(f"{record['archive_code']} has no packaged page {seq}")
    return packaged.index(seq)


def page_png(work_dir: Path, record: dict[str, Any], pdf_path: Path, seq: int, size: Size) -> Path:
    """A PNG of one page (made once per package and size)."""
    index = pdf_page_index(record, seq)
    folder = work_dir / "page-images" / record["archive_code"] / str(record.get("pdf_sha256", "x"))[:16]
    target = folder / f"{seq:04d}-{size}.png"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    import pikepdf
    from PIL import Image

    from pipeline.pages import render_pdf_page

    with pikepdf.open(pdf_path) as pdf:
        pdf_page = pdf.pages[index]
        images = list(pdf_page.get_images().values())
        if not images:
            raise PageNotFound(f"page {seq} of {record['archive_code']} holds no image")
        drawn = _drawn_as(pdf_page, images[0])
        grey = images[0].get("/ColorSpace") == pikepdf.Name.DeviceGray
        picture = pikepdf.PdfImage(images[0]).as_pil_image() if drawn is None else None  # type: ignore[arg-type]
    if picture is None:
        assert drawn is not None
        dpi, width_pt = drawn
        if size == "thumb":  # no wider than needed for the thumbnail
            dpi = min(dpi, max(1, math.ceil(THUMB_WIDTH * 72 / width_pt)))
        pixels = render_pdf_page(pdf_path, index, dpi)
        picture = Image.fromarray(np.ascontiguousarray(pixels[..., 0]) if grey else pixels)
    if size == "thumb":
        picture.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 2))
    tmp = folder / f".{target.name}.{uuid.uuid4().hex}"
    picture.save(tmp, format="PNG")
    os.replace(tmp, target)
    return target


def _drawn_as(page: Any, image: Any) -> tuple[int, float] | None:
    """None when the page draws its image filling the page box as it is (no turn, no clip, no fill):
    its pixels are the page. Otherwise the resolution (dpi) at which the image's pixels are drawn,
    and the page's width in points: the page must be drawn to be seen as the reader sees it."""
    import pikepdf

    box = [float(v) for v in page.mediabox]
    width_pt, height_pt = box[2] - box[0], box[3] - box[1]
    matrices: list[list[float]] = []
    plain = True
    for instruction in pikepdf.parse_content_stream(page):
        op = str(instruction.operator)
        if op == "cm":
            matrices.append([float(v) for v in instruction.operands])
        elif op in ("W", "W*", "re", "f"):
            plain = False
        elif op == "Do":
            break
    ctm = np.eye(3)
    for a, b, c, d, e, f in matrices:
        ctm = np.array([[a, b, 0.0], [c, d, 0.0], [e, f, 1.0]]) @ ctm
    a, b, c, d, e, f = ctm[0, 0], ctm[0, 1], ctm[1, 0], ctm[1, 1], ctm[2, 0], ctm[2, 1]
    fills = np.allclose([a, b, c, d, e, f], [width_pt, 0, 0, height_pt, box[0], box[1]], atol=0.01)
    if plain and fills:
        return None
    pixels = float(image.Width) * float(image.Height)
    area = abs(a * d - b * c)  # square points covered by the whole image
    dpi = round(72 * math.sqrt(pixels / area)) if area > 0 else 300
    return max(dpi, 1), width_pt
