"""What searchers and QA staff can do, with the security checks and the audit in one place.

The HTTP API and the web pages both call this; neither talks to the index or the archive
directly. Every search and every opening of an item (record, PDF, full page image) is written
to the audit log, including refusals. An item a user may not see is answered exactly like an
item that does not exist, so the answer does not reveal that it exists.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.errors import CaptureError, UnsafeNameError
from pipeline.index import SearchQuery, open_backend
from pipeline.index.analysis import join_lines
from pipeline.index.base import SearchBackend, SearchResult
from pipeline.intake import validate_archive_code
from pipeline.pageimages import Size, packaged_pages, page_png
from pipeline.process import RECORD_NAME
from pipeline.security import fonds_of, rank
from pipeline.settings import Settings
from pipeline.store import ItemRow, Store
from pipeline.users import Principal


class NotFound(CaptureError):
    """No such item, or none this user may see (deliberately the same answer)."""


class Forbidden(CaptureError):
    """The user's role does not allow the request at all."""


@dataclass(frozen=True)
class ItemView:
    archive_code: str
    title: str
    catalogue: dict[str, Any]
    pages: list[dict[str, Any]]
    qa_status: str
    visible: bool
    pdf_sha256: str | None
    record: dict[str, Any]

    def to_dict(self, *, for_qa: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "archive_code": self.archive_code,
            "title": self.title,
            "catalogue": self.catalogue,
            "pages": self.pages,
            "pdf_sha256": self.pdf_sha256,
        }
        if for_qa:
            data.update(qa_status=self.qa_status, visible=self.visible)
        return data


class ArchiveService:
    def __init__(
        self, settings: Settings, store: Store | None = None, index: SearchBackend | None = None
    ) -> None:
        self.settings = settings
        self.store = store or Store(settings.state_url)
        self.index = index or open_backend(settings)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.index.close()
        self.store.close()

    # -- search ---------------------------------------------------------------------------

    def search(
        self,
        who: Principal,
        text: str,
        filters: dict[str, str],
        *,
        limit: int = 10,
        offset: int = 0,
        cursor: str | None = None,
        facets: bool = True,
        include_held: bool = False,
        via: str = "api",
    ) -> SearchResult:
        access = who.access
        if include_held and not who.is_qa:
            raise Forbidden("only QA staff may search items held for QA")
        if not include_held:
            access = replace(access, see_held=False)
        query = SearchQuery(text, filters, access, limit=limit, offset=offset, cursor=cursor, facets=facets)
        try:
            result = self.index.search(query)
        except CaptureError as exc:
            self.store.audit(
                who.username, "search.refused", text[:500], {"filters": filters, "why": str(exc), "via": via}
            )
            raise
        self.store.audit(
            who.username,
            "search",
            text,
            {"filters": filters, "hits": result.total, "offset": offset, "cursor": bool(cursor), "via": via},
        )
        return result

    # -- items ----------------------------------------------------------------------------

    def _folder(self, archive_code: str) -> Path:
        try:
            validate_archive_code(archive_code)
        except UnsafeNameError as exc:
            raise NotFound(f"no item {archive_code[:100]!r}") from exc
        return self.settings.archive_dir / archive_code

    def _allowed_record(
        self, who: Principal, archive_code: str, action: str
    ) -> tuple[dict[str, Any], ItemRow, dict[str, Any]]:
        """The item's record, state row and catalogue entry, if `who` may see it; NotFound otherwise."""
        folder = self._folder(archive_code)
        row = self.store.item(archive_code)
        record_path = folder / RECORD_NAME
        if row is None or row.pdf_sha256 is None or not record_path.exists():
            self.store.audit(who.username, f"{action}.refused", archive_code[:100], {"why": "no such item"})
            raise NotFound(f"no item {archive_code!r}")
        record: dict[str, Any] = json.loads(record_path.read_text(encoding="utf-8"))
        entry = self.store.catalogue_entry(archive_code)
        catalogue = entry.to_dict() if entry else dict(record.get("catalogue") or {})
        level = str(catalogue.get("security_level", ""))
        if not who.access.allows(rank(level), fonds_of(archive_code), row.visible):
            self.store.audit(who.username, f"{action}.refused", archive_code, {"why": "not permitted"})
            raise NotFound(f"no item {archive_code!r}")
        return record, row, catalogue

    def open_item(self, who: Principal, archive_code: str, via: str = "api") -> ItemView:
        record, row, catalogue = self._allowed_record(who, archive_code, "view")
        in_pdf = set(packaged_pages(record))
        pages = [
            {
                "page": p["page"],
                "text": join_lines([ln["text"] for ln in p.get("lines", [])]),
                "lines": p.get("lines", []),
                "blank": p.get("blank", False),
                "confidence": p.get("confidence"),
                "rotation": p.get("rotation"),
                "skew_deg": p.get("skew_deg"),
                "width": p.get("width"),
                "height": p.get("height"),
                "packaged": p["page"] in in_pdf,
                "error": p.get("error"),
            }
            for p in record["pages"]
        ]
        self.store.audit(who.username, "view", archive_code, {"via": via})
        return ItemView(
            archive_code,
            catalogue.get("title") or archive_code,
            catalogue,
            pages,
            row.qa_status,
            row.visible,
            row.pdf_sha256,
            record,
        )

    def pdf(self, who: Principal, archive_code: str, via: str = "api") -> Path:
        self._allowed_record(who, archive_code, "download")
        path = self._folder(archive_code) / f"{archive_code}.pdf"
        if not path.is_file():
            raise NotFound(f"the PDF of {archive_code} is missing from the archive")
        self.store.audit(who.username, "download", archive_code, {"via": via})
        return path

    def page_image(self, who: Principal, archive_code: str, page: int, size: Size, via: str = "api") -> Path:
        record, _row, _catalogue = self._allowed_record(who, archive_code, "page")
        path = self._folder(archive_code) / f"{archive_code}.pdf"
        try:
            png = page_png(self.settings.work_dir, record, path, page, size)
        except CaptureError as exc:
            raise NotFound(str(exc)) from exc
        if size == "full":  # thumbnails are part of a view already recorded
            self.store.audit(who.username, "page", archive_code, {"page": page, "via": via})
        return png
