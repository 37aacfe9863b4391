"""The values passed between stages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CatalogueEntry:
    """One row of the 归档目录: one item.

    The two retention start dates (合同终止日期, 形成日期) are ISO dates (YYYY-MM-DD) or empty.
    `to_dict` leaves them out while they are empty, so the records and input keys of items
    catalogued without them stay exactly as they were before the dates existed.
    """

    archive_code: str
    page_count: int
    policy_number: str = ""
    policyholder: str = ""
    job_serial: str = ""
    year: str = ""
    stage: str = ""
    retention: str = ""
    security_level: str = ""
    box: str = ""
    remarks: str = ""
    title: str = ""
    contract_end_date: str = ""  # 合同终止日期
    creation_date: str = ""  # 形成日期

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in DATE_FIELDS:
            if not data[name]:
                del data[name]
        return data


DATE_FIELDS = ("contract_end_date", "creation_date")


@dataclass(frozen=True)
class RowProblem:
    """A catalogue row that was not loaded, and why."""

    row: int
    reason: str
    archive_code: str = ""


@dataclass(frozen=True)
class CatalogueLoad:
    source: str
    entries: tuple[CatalogueEntry, ...]
    problems: tuple[RowProblem, ...]


@dataclass(frozen=True)
class PageSource:
    """One page to read: a file, and the frame inside it for multi-page TIFF or PDF."""

    path: Path
    frame: int = 0
    kind: str = "image"  # "image", "tiff", "pdf"


@dataclass(frozen=True)
class SourceSnapshot:
    """A private copy of one source file, made once at planning: the only bytes ever decoded.

    `sha256` is the hash of exactly these bytes (computed while copying); `size` and `mtime_ns`
    are the original's at the time it was read, to notice a source changed during the run.
    """

    original: Path  # the file in the batch, named in records and findings
    path: Path  # the copy in the work folder
    sha256: str
    size: int
    mtime_ns: int
    read_at: str  # ISO-8601 UTC time the copy was made
    holder: str = ""  # the plan that holds the copy (released when its item is done)

    @property
    def name(self) -> str:
        return self.original.name


@dataclass(frozen=True)
class PlannedPage:
    """One page of an item: a frame of a source file, decoded only from the file's snapshot."""

    snapshot: SourceSnapshot
    frame: int = 0
    kind: str = "image"  # "image", "tiff", "pdf"

    @property
    def name(self) -> str:
        return self.snapshot.name

    @property
    def sha256(self) -> str:
        return self.snapshot.sha256

    @property
    def decode_source(self) -> PageSource:
        """What the decoder opens: the snapshot, never the original."""
        return PageSource(self.snapshot.path, self.frame, self.kind)


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in cleaned-image pixels
    confidence: float  # 0..1
    char_boxes: tuple[tuple[float, float, float, float], ...] = ()


@dataclass(frozen=True)
class OcrPage:
    engine: str
    lines: tuple[OcrLine, ...]
    width: int
    height: int

    @property
    def mean_confidence(self) -> float | None:
        """Mean line confidence weighted by characters; None for a page with no text."""
        weight = sum(len(line.text) for line in self.lines)
        if weight == 0:
            return None
        return sum(line.confidence * len(line.text) for line in self.lines) / weight

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """Something QA should look at. Findings never stop a batch."""

    code: str
    message: str
    severity: Severity = Severity.WARNING
    page: int | None = None
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Severity) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class PageGeometry:
    """How the cleanup turned the decoded source into the cleaned page, as one affine map.

    Coordinates are continuous pixel coordinates, y down, (0, 0) the top-left corner of the
    top-left pixel. `matrix` (m00, m01, m02, m10, m11, m12) maps a source point (x, y) to the
    cleaned page's (m00 x + m01 y + m02, m10 x + m11 y + m12). `source_crop` (x0, y0, x1, y1) is
    the part of the source the cleanup kept before it turned the page (the first border crop):
    outside it, and wherever no source pixel lands, the cleaned page shows `fill` (the paper tone,
    one value per channel; empty when nothing was left uncovered). `size` is the cleaned page's
    (width, height). Packaging draws a kept source JPEG through this map.
    """

    source_size: tuple[int, int]
    source_crop: tuple[int, int, int, int]
    matrix: tuple[float, float, float, float, float, float]
    size: tuple[int, int]
    fill: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "source_size": list(self.source_size),
            "source_crop": list(self.source_crop),
            "matrix": [round(v, 9) for v in self.matrix],
            "size": list(self.size),
            "fill": [round(v, 2) for v in self.fill],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PageGeometry:
        sw, sh = data["source_size"]
        x0, y0, x1, y1 = data["source_crop"]
        m = [float(v) for v in data["matrix"]]
        w, h = data["size"]
        return cls(
            (int(sw), int(sh)),
            (int(x0), int(y0), int(x1), int(y1)),
            (m[0], m[1], m[2], m[3], m[4], m[5]),
            (int(w), int(h)),
            tuple(float(v) for v in data.get("fill", ())),
        )


# What record.json says of a page image kept exactly as its source file (PageResult.image_encoding).
SOURCE_JPEG_KEPT = "source JPEG kept"


@dataclass
class PageResult:
    """What happened to one page: facts for the item record, the text layer and the index."""

    seq: int
    source: str
    frame: int
    source_sha256: str
    dpi: int | None = None
    dpi_assumed: bool = False
    rotation: int = 0
    skew_deg: float = 0.0
    orientation_method: str = ""
    blank: bool = False
    confidence: float | None = None
    image_path: str | None = None  # cleaned image in the work folder (or a kept source JPEG's copy)
    image_format: str = ""  # "jpeg", "gray", "bilevel", "rgb"
    # How the page image is stored: SOURCE_JPEG_KEPT (image_path holds the source JPEG's own bytes,
    # drawn through `geometry`), "JPEG, quality N (...why the source could not be kept)" for a
    # cleaned JPEG page written again, "lossless" for the rest; "" in results made before this.
    image_encoding: str = ""
    geometry: PageGeometry | None = None  # source pixels -> cleaned page, for a kept source JPEG
    width: int = 0
    height: int = 0
    ocr: OcrPage | None = None
    error: str | None = None
    error_code: str | None = None  # finding code for the error, e.g. "page_too_large"
    # The snapshot this page was read from (this run only; not stored): the package step checks
    # that its original did not change during the run.
    snapshot: SourceSnapshot | None = field(default=None, repr=False, compare=False)

    @property
    def readable(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return self.ocr.text if self.ocr else ""

    def facts(self) -> dict[str, Any]:
        return {
            "page": self.seq,
            "source": self.source,
            "frame": self.frame,
            "source_sha256": self.source_sha256,
            "dpi": self.dpi,
            "dpi_assumed": self.dpi_assumed,
            "rotation": self.rotation,
            "skew_deg": round(self.skew_deg, 3),
            "orientation_method": self.orientation_method,
            "blank": self.blank,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "width": self.width,
            "height": self.height,
            "image_encoding": self.image_encoding,
            "characters": len(self.text.replace("\n", "")),
            "error": self.error,
        }


class Verdict(StrEnum):
    PASSED = "passed"  # straight through
    NEEDS_QA = "needs_qa"  # packaged, held for QA
    FAILED = "failed"  # no package could be made


@dataclass
class ItemResult:
    archive_code: str
    entry: CatalogueEntry | None
    pages: list[PageResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    verdict: Verdict = Verdict.PASSED
    pdf_path: str | None = None
    record_path: str | None = None
    pdf_sha256: str | None = None
    pdfa_valid: bool = False
    reused: bool = False

    @property
    def page_count(self) -> int:
        return len(self.pages)

    @property
    def blank_pages(self) -> int:
        return sum(1 for p in self.pages if p.blank)

    def summary(self) -> dict[str, Any]:
        return {
            "archive_code": self.archive_code,
            "title": self.entry.title if self.entry else "",
            "pages": self.page_count,
            "blank_pages": self.blank_pages,
            "catalogue_pages": self.entry.page_count if self.entry else None,
            "verdict": str(self.verdict),
            "findings": [f.to_dict() for f in self.findings],
            "pdf": self.pdf_path,
            "record": self.record_path,
            "pdf_sha256": self.pdf_sha256,
            "pdfa_valid": self.pdfa_valid,
            "reused": self.reused,
        }
