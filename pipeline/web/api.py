"""The HTTP API (FastAPI) for the web interface and other systems; OpenAPI at /openapi.json and /docs.

Every request carries an API token (`Authorization: Bearer cap_...`, made with
`capture user token NAME`); the token's user brings a role, a clearance and maybe a fonds
restriction, which the search backend applies inside its query. Errors are JSON
`{"detail": "..."}` with a 4xx status that says what is wrong; the index being away is 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline import __version__
from pipeline.errors import AccessDenied, CaptureError, IndexUnavailable, QueryError
from pipeline.index.base import MAX_LIMIT, given_filters
from pipeline.settings import Settings
from pipeline.users import Principal, user_for_token
from pipeline.web.service import ArchiveService, Forbidden, NotFound

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"

_bearer = HTTPBearer(auto_error=False, description="An API token made with `capture user token NAME`")


def service(request: Request) -> ArchiveService:
    svc: ArchiveService = request.app.state.service
    return svc


def api_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AccessDenied("an API token is required: send `Authorization: Bearer <token>`")
    return user_for_token(service(request).store, credentials.credentials)


User = Annotated[Principal, Depends(api_user)]
Service = Annotated[ArchiveService, Depends(service)]


def _status(exc: CaptureError) -> int:
    if isinstance(exc, AccessDenied):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, QueryError):
        return 400
    if isinstance(exc, IndexUnavailable):
        return 503
    return 500


def add_security_headers(app: FastAPI, csp: str) -> None:
    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Content-Security-Policy", API_CSP)
            response.headers.setdefault("Cache-Control", "no-store")
        else:
            response.headers.setdefault("Content-Security-Policy", csp)
        return response


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CaptureError)
    async def capture_error(request: Request, exc: CaptureError) -> JSONResponse:
        status = _status(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def api_router_app(app: FastAPI) -> None:
    """The /api routes (also mounted by the web interface's app)."""

    @app.get("/api/search", tags=["search"], summary="Full-text search over the pages a user may see")
    def search(
        user: User,
        svc: Service,
        q: Annotated[str, Query(description="Words to find (Chinese, letters, digits)")],
        year: str | None = None,
        stage: str | None = None,
        retention: str | None = None,
        box: str | None = None,
        security_level: str | None = None,
        archive_code: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10,
        offset: Annotated[int, Query(ge=0)] = 0,
        cursor: Annotated[
            str | None, Query(max_length=2000, description="next_cursor of the previous page")
        ] = None,
        facets: bool = True,
        include_held: Annotated[bool, Query(description="QA staff: include items waiting for QA")] = False,
    ) -> dict[str, Any]:
        filters = given_filters(
            year=year,
            stage=stage,
            retention=retention,
            box=box,
            security_level=security_level,
            archive_code=archive_code,
        )
        result = svc.search(
            user,
            q,
            filters,
            limit=limit,
            offset=offset,
            cursor=cursor,
            facets=facets,
            include_held=include_held,
        )
        return {"query": q, "filters": filters, **result.to_dict()}

    @app.get("/api/items/{archive_code}", tags=["items"], summary="An item's catalogue record and page texts")
    def item(user: User, svc: Service, archive_code: str) -> dict[str, Any]:
        view = svc.open_item(user, archive_code)
        data = view.to_dict(for_qa=user.is_qa)
        data["pdf_url"] = f"/api/items/{archive_code}/pdf"
        for page in data["pages"]:
            if page["packaged"]:
                page["image_url"] = f"/api/items/{archive_code}/pages/{page['page']}.png"
        return data

    @app.get(
        "/api/items/{archive_code}/pdf",
        tags=["items"],
        summary="The archived PDF/A",
        response_class=FileResponse,
    )
    def pdf(user: User, svc: Service, archive_code: str) -> FileResponse:
        path = svc.pdf(user, archive_code)
        return FileResponse(path, media_type="application/pdf", filename=path.name)

    @app.get(
        "/api/items/{archive_code}/pages/{page}.png",
        tags=["items"],
        summary="One page as PNG (thumbnail or full size)",
        response_class=FileResponse,
    )
    def page_image(
        user: User, svc: Service, archive_code: str, page: int, size: Literal["thumb", "full"] = "thumb"
    ) -> FileResponse:
        return FileResponse(svc.page_image(user, archive_code, page, size), media_type="image/png")

    @app.get("/api/me", tags=["users"], summary="Who the token belongs to")
    def me(user: User) -> dict[str, Any]:
        return {
            "username": user.username,
            "role": user.role,
            "clearance": user.clearance,
            "fonds": list(user.fonds),
        }


def create_app(settings: Settings, svc: ArchiveService | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.service.close()

    app = FastAPI(
        title="Archive Capture",
        version=__version__,
        description=(
            "Search archived pages and open items, within the caller's clearance. Every call is audited."
        ),
        lifespan=lifespan,
    )
    app.state.service = svc or ArchiveService(settings)
    add_security_headers(app, "default-src 'self'; frame-ancestors 'none'")
    add_error_handlers(app)
    api_router_app(app)
    return app
