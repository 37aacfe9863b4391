"""Web pages for the archive after capture: access requests (everyone asks, archivists decide),
the lookup register (archivists), the last fixity results and damage (admins).

Like every page they go through pipeline.service (roles checked there, every read audited),
forms carry the session's CSRF token, and templates escape every value.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pipeline.errors import AccessRequestError
from pipeline.service import ArchiveService
from pipeline.web.app import Viewer, WebError  # (app.py imports this module only when it builds the app)
from pipeline.web.i18n import translate

Render = Callable[..., Response]
MAX_REGISTER_DAYS = 366


def add_lifecycle_pages(
    app: FastAPI,
    service: ArchiveService,
    render: Render,
    check_csrf: Callable[[Request, str], None],
    lang_of: Callable[[Request], str],
) -> None:
    settings = service.settings

    def back(target: str, **params: str) -> Response:
        return RedirectResponse(f"{target}?{urlencode(params)}", status_code=303)

    @app.get("/access", response_class=HTMLResponse, include_in_schema=False)
    def access_page(request: Request, who: Viewer, message: str = "", problem: str = "") -> Response:
        overview = service.access_requests(who, via="web")
        return render(
            request,
            "access.html",
            who,
            overview=overview,
            message=message[:500],
            problem=problem[:500],
            default_days=settings.grants.default_days,
            max_days=settings.grants.max_days,
            when=_when,
            live=_live,
        )

    @app.post("/access/request", include_in_schema=False)
    def access_request(
        request: Request,
        who: Viewer,
        csrf: Annotated[str, Form(max_length=100)],
        archive_code: Annotated[str, Form(max_length=200)],
        purpose: Annotated[str, Form(max_length=2000)],
        days: Annotated[int, Form(ge=1, le=3650)] = 7,
    ) -> Response:
        check_csrf(request, csrf)
        try:
            row = service.request_access(who, archive_code, purpose, days)
        except AccessRequestError as exc:
            return back("/access", problem=str(exc))
        return back("/access", message=translate(lang_of(request), "request_sent", id=row.id))

    @app.post("/access/{request_id}/decide", include_in_schema=False)
    def access_decide(
        request: Request,
        who: Viewer,
        request_id: int,
        csrf: Annotated[str, Form(max_length=100)],
        action: Annotated[str, Form(max_length=20)],
        reason: Annotated[str, Form(max_length=2000)] = "",
        days: Annotated[int | None, Form(ge=1, le=3650)] = None,
    ) -> Response:
        check_csrf(request, csrf)
        if action not in ("approve", "refuse"):
            raise WebError(400, "bad_request", "unknown action")
        try:
            service.decide_access(who, request_id, approve=action == "approve", reason=reason, days=days)
        except AccessRequestError as exc:
            return back("/access", problem=str(exc))
        key = "request_approved" if action == "approve" else "request_refused"
        return back("/access", message=translate(lang_of(request), key, id=request_id))

    @app.get("/lookups", response_class=HTMLResponse, include_in_schema=False)
    def lookups_page(
        request: Request, who: Viewer, start: str = "", end: str = "", archive_code: str = ""
    ) -> Response:
        today = datetime.now(UTC).date()
        try:
            first = date.fromisoformat(start) if start else today - timedelta(days=30)
            last = date.fromisoformat(end) if end else today
        except ValueError as exc:
            raise WebError(400, "bad_request", "dates are written YYYY-MM-DD") from exc
        if last < first or (last - first).days > MAX_REGISTER_DAYS:
            raise WebError(400, "bad_request", f"choose a period of at most {MAX_REGISTER_DAYS} days")
        lines = service.lookup_register(who, first, last, archive_code=archive_code[:100], via="web")
        return render(
            request,
            "lookups.html",
            who,
            lines=lines,
            start=first.isoformat(),
            end=last.isoformat(),
            archive_code=archive_code[:100],
            when=_when,
        )

    @app.get("/fixity", response_class=HTMLResponse, include_in_schema=False)
    def fixity_page(request: Request, who: Viewer) -> Response:
        overview = service.fixity_overview(who, via="web")
        return render(request, "fixity.html", who, overview=overview, when=_when)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _when(at: datetime | None) -> str:
    return "" if at is None else f"{_aware(at).astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _live(row: Any) -> bool:
    """An approved request whose grant has not ended yet."""
    until = row.granted_until
    return row.status == "approved" and until is not None and _aware(until) > datetime.now(UTC)
