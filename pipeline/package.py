"""PDF/A-2b assembly with pikepdf: page images, an invisible text layer, XMP catalogue metadata.

The text layer uses a glyphless CID font (Tesseract's, Apache-2.0) with Identity-H encoding and
an identity ToUnicode map, so the text extracts exactly as the OCR engine read it. Each box's
text is placed on the engine's own box and stretched to its width, so its characters abut. The
boxes of one visual row share one baseline and size, and where Chinese meets Chinese across two
boxes (a line cut by a seal, a table rule or a gap) the last character is widened up to the next
box: text extractors and viewers see no gap there, so they insert no space and find a phrase
across the cut. Where Latin text or digits meet across a gap, the gap (a word space) is kept.
"""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pikepdf
from pikepdf import Array, Dictionary, Name, Pdf, Stream
from PIL import Image, TiffImagePlugin

from pipeline.models import CatalogueEntry, OcrLine, OcrPage, PageGeometry
from pipeline.ocr.base import joins_without_space, rows

PDFA_FLAVOUR = "2b"
# Catalogue fields written to XMP. pikepdf's allowlist validator denies every XMP extension
# schema, so a project namespace cannot pass validation: the fields go into Dublin Core
# (dc:identifier = archive code, dc:title, dc:description and dc:subject as name=value pairs).
XMP_FIELDS = (
    ("policy_number", "policyNumber"),
    ("policyholder", "policyholder"),
    ("job_serial", "jobSerialNumber"),
    ("page_count", "pageCount"),
    ("year", "year"),
    ("stage", "businessStage"),
    ("retention", "retention"),
    ("security_level", "securityLevel"),
    ("box", "box"),
    ("remarks", "remarks"),
)
_FONT_EM_WIDTH = 0.5  # advance of every glyph, in text space units per unit font size (DW 500)


@dataclass(frozen=True)
class PackagePage:
    image_path: Path  # cleaned page image (PNG or JPEG) in the work folder, or a kept source JPEG
    image_format: str  # "jpeg", "gray", "bilevel", "rgb"
    dpi: int
    ocr: OcrPage | None
    # A kept source JPEG: how the cleanup maps its pixels onto the cleaned page. The JPEG's own
    # bytes become the image, drawn through this map; the page is the cleaned page's size.
    geometry: PageGeometry | None = None
    # A kept source JPEG: the SHA-256 of the page that was read; the bytes stored must have it.
    source_sha256: str | None = None


@dataclass(frozen=True)
class PackageOutcome:
    pdf_path: Path
    pdfa_valid: bool
    validator_findings: tuple[str, ...]


def _glyphless_font(pdf: Pdf) -> Dictionary:
    font_bytes = (Path(__file__).parent / "data" / "glyphless.ttf").read_bytes()
    font_file = Stream(pdf, font_bytes)
    font_file.Length1 = len(font_bytes)
    descriptor = pdf.make_indirect(
        Dictionary(
            Type=Name.FontDescriptor,
            FontName=Name.GlyphLessFont,
            Flags=5,
            FontBBox=Array([0, 0, 500, 1000]),
            ItalicAngle=0,
            Ascent=1000,
            Descent=0,
            CapHeight=1000,
            StemV=80,
            FontFile2=pdf.make_indirect(font_file),
        )
    )
    cid_to_gid = Stream(pdf, b"\x00\x01" * 65536)
    cid_font = pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.CIDFontType2,
            BaseFont=Name.GlyphLessFont,
            CIDSystemInfo=Dictionary(
                Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"), Supplement=0
            ),
            FontDescriptor=descriptor,
            DW=500,
            CIDToGIDMap=pdf.make_indirect(cid_to_gid),
        )
    )
    to_unicode = Stream(pdf, _TO_UNICODE)
    return pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.Type0,
            BaseFont=Name.GlyphLessFont,
            Encoding=Name("/Identity-H"),
            DescendantFonts=Array([cid_font]),
            ToUnicode=pdf.make_indirect(to_unicode),
        )
    )


_TO_UNICODE = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def
/CMapType 2 def
1 begincodespacerange
<0000> <FFFF>
endcodespacerange
1 beginbfrange
<0000> <FFFF> <0000>
endbfrange
endcmap
CMapName currentdict /CMapResource defineresource pop
end
end
"""


# Start-of-frame markers a PDF's DCTDecode reads (ISO 32000: baseline and progressive JPEG, Huffman
# coded, 8 bits): SOF0 baseline, SOF1 extended sequential, SOF2 progressive. Lossless (SOF3),
# hierarchical (SOF5-7) and arithmetic-coded (SOF9-15) JPEGs are not for DCTDecode.
_DCT_FRAMES = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}
_OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class JpegFacts:
    width: int
    height: int
    components: int  # 1 grey, 3 colour (YCbCr, or RGB when an Adobe marker says so)


def source_jpeg_facts(path: Path) -> tuple[JpegFacts | None, str]:
    """Whether a source JPEG's own bytes can be the page image of a PDF/A as they are: its facts,
    or None and why not (a JPEG PDF readers would draw unlike the decoded page, or one that
    DCTDecode or PDF/A cannot carry).

    Read from its markers up to the first scan, and from Pillow's view of it: an EXIF orientation
    other than 1 (a PDF reader ignores it, but some viewers built on a browser's decoder turn the
    page), CMYK or YCCK (4 components; Adobe's inverted CMYK too), anything but 8 bits, a frame
    type DCTDecode does not read, a multi-picture file (MPO) or a frame whose height comes later
    (DNL)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot be read again ({exc.strerror})"
    return jpeg_facts(data)


def jpeg_facts(data: bytes) -> tuple[JpegFacts | None, str]:
    """`source_jpeg_facts` of bytes already read."""
    if data[:2] != b"\xff\xd8":
        return None, "does not start as a JPEG"
    pos, facts, adobe, component_ids = 2, None, False, b""
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None, "has a damaged marker sequence"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker in _OTHER_FRAMES:
            return None, f"is a JPEG of a frame type DCTDecode does not read (SOF{marker - 0xC0})"
        if marker in _DCT_FRAMES:
            if len(body) < 6:
                return None, "has a damaged frame header"
            bits, height, width, components = (
                body[0],
                int.from_bytes(body[1:3], "big"),
                int.from_bytes(body[3:5], "big"),
                body[5],
            )
            if bits != 8:
                return None, f"is a {bits}-bit JPEG"
            if components == 4:
                return None, "is a CMYK (or YCCK) JPEG"
            if components not in (1, 3):
                return None, f"is a JPEG of {components} colour components"
            if height == 0 or width == 0:
                return None, "gives its height after the first scan (DNL)"
            facts = JpegFacts(width, height, components)
            component_ids = bytes(body[6 + 3 * n] for n in range(components) if 6 + 3 * n < len(body))
        if marker == 0xEE and body[:5] == b"Adobe":
            adobe = True
        if marker == 0xDA:  # start of scan: the headers are over
            break
        pos += 2 + length
    if facts is None:
        return None, "has no frame header a PDF reader knows"
    if facts.components == 3 and component_ids == b"RGB" and not adobe:
        # decoders take components named R, G, B as RGB; a PDF reader takes them as YCbCr
        return None, "stores RGB without the marker that tells a PDF reader so (its colours would change)"
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, mode, size = img.format, img.mode, img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError) as exc:
        return None, f"cannot be opened again ({exc.__class__.__name__})"
    if fmt != "JPEG":
        return None, f"is a {fmt} file (more than one picture)" if fmt == "MPO" else f"is read as {fmt}"
    if orientation not in (1, None):
        return None, f"has an EXIF orientation ({orientation}) that viewers do not agree on"
    if mode not in ("L", "RGB") or size != (facts.width, facts.height):
        return None, f"decodes as {mode} {size[0]}x{size[1]}, not as its frame header says"
    return facts, ""


def page_size(page: PackagePage) -> tuple[int, int]:
    """The page's size in cleaned-page pixels."""
    if page.geometry is not None:
        return page.geometry.size
    with Image.open(page.image_path) as img:
        return img.size


def placement_operators(geometry: PageGeometry, image_size: tuple[int, int], scale: float) -> str:
    """Content-stream operators drawing a source image (image_size pixels) as the cleaned page at
    `scale` points a pixel: the uncovered parts in the paper tone, the image clipped to the part
    the cleanup kept, through the cleanup's map (cleaned pixels are y-down, PDF points y-up)."""
    width, height = geometry.size
    m00, m01, m02, m10, m11, m12 = geometry.matrix
    ops = ["q"]
    if geometry.fill:
        tone = " ".join(f"{min(max(v / 255.0, 0.0), 1.0):.4f}" for v in geometry.fill[:3])
        ops.append(f"{tone} {'g' if len(geometry.fill) == 1 else 'rg'}")
        ops.append(f"0 0 {width * scale:.4f} {height * scale:.4f} re f")
    # source pixel (x, y) -> page point (scale * x', scale * (H - y'))
    a, c, e = scale * m00, scale * m01, scale * m02
    b, d, f = -scale * m10, -scale * m11, scale * (height - m12)
    ops.append(f"{a:.6f} {b:.6f} {c:.6f} {d:.6f} {e:.6f} {f:.6f} cm")
    x0, y0, x1, y1 = geometry.source_crop
    if (x0, y0, x1, y1) != (0, 0, *geometry.source_size):
        ops.append(f"{x0} {y0} {x1 - x0} {y1 - y0} re W n")
    src_w, src_h = image_size
    ops.append(f"{src_w} 0 0 {-src_h} 0 {src_h} cm /Im0 Do Q")
    return "\n".join(ops) + "\n"


def _image_xobject(pdf: Pdf, page: PackagePage) -> tuple[Stream, int, int]:
    """The page image as an image XObject: a JPEG's bytes as they are; a bilevel page (or a grey
    one holding only black and white) as CCITT Group 4; grey as Flate with PNG predictors; colour
    as Flate. Every lossless encoding gives back exactly the cleaned page's pixels."""
    if page.geometry is not None:
        data = page.image_path.read_bytes()  # read once: the bytes checked are the bytes stored
        if page.source_sha256 and hashlib.sha256(data).hexdigest() != page.source_sha256:
            raise ValueError(
                f"{page.image_path.name}: the work folder's copy of the source JPEG is not the page "
                "that was read (its SHA-256 differs); nothing was archived, run the batch again"
            )
        facts, why = jpeg_facts(data)
        if facts is None:
            raise ValueError(f"{page.image_path.name} {why}; it cannot be drawn as the page")
        width, height = facts.width, facts.height
        stream = Stream(pdf, data)
        stream.Filter = Name.DCTDecode
        colour, bits = (Name.DeviceGray if facts.components == 1 else Name.DeviceRGB), 8
        return _image_dictionary(stream, width, height, colour, bits), width, height
    with Image.open(page.image_path) as img:
        img.load()
        width, height = img.size
        if page.image_format == "jpeg":
            stream = Stream(pdf, page.image_path.read_bytes())
            stream.Filter = Name.DCTDecode
            colour, bits = (Name.DeviceGray if img.mode == "L" else Name.DeviceRGB), 8
        elif page.image_format == "bilevel" or (page.image_format == "gray" and only_black_and_white(img)):
            data, black_is_1 = group4(img.convert("1", dither=Image.Dither.NONE))
            stream = Stream(pdf, data)
            stream.Filter = Name.CCITTFaxDecode
            stream.DecodeParms = Dictionary(K=-1, Columns=width, Rows=height, BlackIs1=black_is_1)
            colour, bits = Name.DeviceGray, 1
        elif page.image_format == "gray":
            stream = Stream(pdf, png_idat(img.convert("L")))
            stream.Filter = Name.FlateDecode
            stream.DecodeParms = Dictionary(Predictor=15, Colors=1, BitsPerComponent=8, Columns=width)
            colour, bits = Name.DeviceGray, 8
        else:
            # PNG predictors made colour pages larger at Flate's level 6 and cost 4-6 times the
            # CPU at level 9 (benchmarks/README.md, "Storage"): plain Flate
            stream = Stream(pdf, zlib.compress(img.convert("RGB").tobytes(), 6))
            stream.Filter = Name.FlateDecode
            colour, bits = Name.DeviceRGB, 8
    return _image_dictionary(stream, width, height, colour, bits), width, height


def _image_dictionary(stream: Stream, width: int, height: int, colour: Name, bits: int) -> Stream:
    stream.Type = Name.XObject
    stream.Subtype = Name.Image
    stream.Width, stream.Height = width, height
    stream.ColorSpace = colour
    stream.BitsPerComponent = bits
    return stream


def only_black_and_white(img: Image.Image) -> bool:
    """A grey image whose every pixel is 0 or 255: stored as 1 bit per pixel, no pixel changes."""
    histogram = img.histogram() if img.mode == "L" else []
    return bool(histogram) and not any(histogram[1:255])


def group4(img: Image.Image) -> tuple[bytes, bool]:
    """CCITT Group 4 data of a 1-bit image, encoded by libtiff (through Pillow) as one TIFF strip,
    and the /BlackIs1 that makes a PDF reader give back the same bits.

    libtiff codes 1 bits as black runs; Pillow writes mode "1" as MinIsBlack (1 = white), so the
    decoder must turn black runs into 1 bits (BlackIs1 true); a MinIsWhite file would need false.
    """
    buffer = io.BytesIO()
    img.save(buffer, "TIFF", compression="group4", strip_size=1 << 40)  # one strip, one G4 stream
    with Image.open(buffer) as tiff:
        if not isinstance(tiff, TiffImagePlugin.TiffImageFile):
            raise ValueError("Pillow wrote no TIFF")
        tags = tiff.tag_v2
        offsets, counts = tags[273], tags[279]
        photometric, fill_order = tags[262], tags.get(266, 1)
    if len(offsets) != 1 or fill_order != 1 or photometric not in (0, 1):
        raise ValueError(f"unexpected Group 4 TIFF: {len(offsets)} strips, fill order {fill_order}")
    data = buffer.getvalue()
    return data[offsets[0] : offsets[0] + counts[0]], photometric == 1


def png_idat(img: Image.Image, level: int = 9) -> bytes:
    """The zlib stream of a PNG of `img` (Pillow's encoder: PNG row filters, Flate at `level`): what
    a PDF's FlateDecode with /Predictor 15 reads back into exactly these pixels (8 bits, no
    interlace, the colour type of an L or RGB image)."""
    buffer = io.BytesIO()
    img.save(buffer, "PNG", compress_level=level)
    data, chunks, pos = buffer.getvalue(), [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IHDR" and (data[pos + 16] != 8 or data[pos + 20] != 0):
            raise ValueError("PNG predictors need 8-bit, non-interlaced rows")
        if kind == b"IDAT":
            chunks.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return b"".join(chunks)


def _cid_hex(text: str) -> str:
    return "".join(f"{ord(c):04X}" if ord(c) <= 0xFFFF else "FFFD" for c in text)


def text_layer(ocr: OcrPage | None, scale: float, page_height_pt: float) -> str:
    """Content-stream operators placing the OCR text invisibly on its boxes, row by row."""
    if ocr is None or not ocr.lines:
        return ""
    ops = ["BT", "3 Tr"]
    for row in rows(ocr.lines):
        ops.extend(_row_operators(row, scale, page_height_pt))
    ops.append("ET")
    return "\n".join(ops)


def _row_operators(row: list[OcrLine], scale: float, page_height_pt: float) -> list[str]:
    """One visual row: a common baseline and size; Chinese-to-Chinese cuts bridged by the last glyph."""
    row = [line for line in row if line.text]
    if not row:
        return []
    boxes = [tuple(v * scale for v in line.box) for line in row]
    size = max(statistics.median(b[3] - b[1] for b in boxes), 1.0)
    baseline = page_height_pt - statistics.median(b[3] for b in boxes) + 0.12 * size
    em = _FONT_EM_WIDTH * size
    ops = [f"/F1 {size:.2f} Tf"]
    end = -1.0e9  # where the previous box's text ended
    for n, (line, (x0, _, x1, _)) in enumerate(zip(row, boxes, strict=True)):
        start = max(x0, end)
        width = max(x1 - start, 0.1 * len(line.text))
        step = width / len(line.text)
        last = step
        if n + 1 < len(row) and joins_without_space(line.text, row[n + 1].text):
            last = max(step, boxes[n + 1][0] - (start + width - step))
        ops.append(f"1 0 0 1 {start:.2f} {baseline:.2f} Tm")
        if len(line.text) > 1:
            ops.append(f"{100.0 * step / em:.3f} Tz <{_cid_hex(line.text[:-1])}> Tj")
        ops.append(f"{100.0 * last / em:.3f} Tz <{_cid_hex(line.text[-1])}> Tj")
        end = start + width - step + last
    return ops


def build_pdf(pages: list[PackagePage]) -> Pdf:
    pdf = Pdf.new()
    font = _glyphless_font(pdf)
    for page in pages:
        image, width, height = _image_xobject(pdf, page)
        scale = 72.0 / page.dpi
        if page.geometry is not None:  # the source JPEG drawn as the cleaned page
            w_pt, h_pt = page.geometry.size[0] * scale, page.geometry.size[1] * scale
            drawing = placement_operators(page.geometry, (width, height), scale)
        else:
            w_pt, h_pt = width * scale, height * scale
            drawing = f"q {w_pt:.3f} 0 0 {h_pt:.3f} 0 0 cm /Im0 Do Q\n"
        content = drawing + text_layer(page.ocr, scale, h_pt)
        pdf_page = pikepdf.Page(
            Dictionary(
                Type=Name.Page,
                MediaBox=Array([0, 0, round(w_pt, 3), round(h_pt, 3)]),
                Resources=Dictionary(
                    XObject=Dictionary(Im0=pdf.make_indirect(image)), Font=Dictionary(F1=font)
                ),
                Contents=pdf.make_stream(content.encode("ascii")),
            )
        )
        pdf.pages.append(pdf_page)
    return pdf


def write_metadata(pdf: Pdf, archive_code: str, entry: CatalogueEntry | None, software: str) -> None:
    title = (entry.title if entry and entry.title else "") or archive_code
    with pdf.open_metadata(set_pikepdf_as_editor=False) as meta:
        meta["dc:identifier"] = archive_code
        meta["dc:title"] = title
        meta["xmp:CreatorTool"] = software
        meta["pdf:Producer"] = software
        meta["xmp:CreateDate"] = datetime.now(UTC).isoformat(timespec="seconds")
        if entry:
            pairs = [
                f"{name}={getattr(entry, attr)}" for attr, name in XMP_FIELDS if getattr(entry, attr) != ""
            ]
            meta["dc:description"] = "; ".join(pairs)
            meta["dc:subject"] = set(pairs)


def save_pdfa(pdf: Pdf, path: Path) -> PackageOutcome:
    """Prepare, write, re-validate the written bytes, then move into place; else say why."""
    import pikepdf.pdfa as pdfa

    try:
        pdfa.save(pdf, path, PDFA_FLAVOUR)
        return PackageOutcome(path, True, ())
    except pdfa.PdfaError as exc:
        findings = tuple(str(f) for f in exc.report.findings[:50])
    pdf.save(path)  # kept for QA, flagged, never presented as PDF/A
    return PackageOutcome(path, False, findings)


def encode_page_image(pixels: np.ndarray, image_format: str, path_stem: Path, jpeg_quality: int) -> Path:
    """Write a cleaned page for packaging: JPEG stays JPEG, everything else lossless PNG.

    Written under a temporary name and renamed into place, so a process killed mid-write never
    leaves a truncated image that a later run would take from the cache and archive."""
    img = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        path = path_stem.with_suffix(".jpg")
        img.save(buffer, "JPEG", quality=jpeg_quality, optimize=True)
    else:
        path = path_stem.with_suffix(".png")
        if image_format == "bilevel":
            img = img.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1")
        img.save(buffer, "PNG", compress_level=1)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path
