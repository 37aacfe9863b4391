"""Page images for people: taken from the archived PDF/A itself, cached as PNG in the work folder.

The PDF is the source of truth (the cleaned images in work/pages may have been cleared), so
page n of an item is the image on the PDF page that holds its n-th packaged page.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Literal

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
    from pikepdf import PdfImage

    with pikepdf.open(pdf_path) as pdf:
        images = list(pdf.pages[index].images.values())
        if not images:
            raise PageNotFound(f"page {seq} of {record['archive_code']} holds no image")
        picture = PdfImage(images[0]).as_pil_image()  # type: ignore[arg-type]
    if size == "thumb":
        picture.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 2))
    tmp = folder / f".{target.name}.{uuid.uuid4().hex}"
    picture.save(tmp, format="PNG")
    os.replace(tmp, target)
    return target
