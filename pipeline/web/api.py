"""The HTTP API (FastAPI) for the web interface and other systems; OpenAPI at /openapi.json and /docs.

Every request carries an API token (`Authorization: Bearer cap_...`, made with
`capture user token NAME`); the token's user brings a role, a clearance and maybe a fonds
restriction, and every route goes through pipeline.service (one access decision, audited).
Every error, whatever raised it, is answered as JSON `{"detail": "..."}` with the security
headers, and recorded in the audit log: the status comes from the error tree
(pipeline/errors.py), 422 for a malformed parameter, 500 for a bug (no details leak).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline import __version__
from pipeline.access import Principal
from pipeline.errors import AccessDenied, CaptureError
from pipeline.index.base import MAX_LIMIT, MAX_OFFSET, given_filters
from pipeline.service import ArchiveService
from pipeline.settings import Settings
from pipeline.users import user_for_token

log = logging.getLogger(__name__)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI runs from files the app serves itself (no CDN); it needs its own script and the
# inline styles it sets on elements, nothing from elsewhere.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DOCS_ASSETS = Path(__file__).resolve().parent / "docs"

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
    who = user_for_token(service(request).store, credentials.credentials)
    request.state.principal = who
    return who


User = Annotated[Principal, Depends(api_user)]
Service = Annotated[ArchiveService, Depends(service)]


def _who(request: Request) -> str:
    principal = getattr(request.state, "principal", None)
    return principal.username if principal is not None else "anonymous"


def audit_error(request: Request, status: int, detail: str) -> None:
    """Every error answer is recorded: who, which request, the status and why."""
    try:
        service(request).store.audit(
            _who(request),
            "http.error",
            request.url.path[:500],
            {
                "status": status,
                "method": request.method,
                "query": str(request.url.query)[:500],
                "why": detail[:500],
            },
        )
    except Exception:  # noqa: BLE001 - the answer must go out even when the state store is away
        log.exception("could not record an error response in the audit log")


def error_response(request: Request, status: int, detail: str) -> JSONResponse:
    audit_error(request, status, detail)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _security_headers(request: Request, response: Response, csp: str) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    path = request.url.path
    if path.startswith("/api/"):
        response.headers.setdefault("Content-Security-Policy", API_CSP)
        response.headers.setdefault("Cache-Control", "no-store")
    elif path == "/docs" or path.startswith("/docs/"):
        response.headers.setdefault("Content-Security-Policy", DOCS_CSP)
    else:
        response.headers.setdefault("Content-Security-Policy", csp)
    return response


def add_security_headers(
    app: FastAPI, csp: str, on_crash: Callable[[Request], Response] | None = None
) -> None:
    """Security headers on every response, including the answer to a bug (which is also audited)."""

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - a bug: a plain answer, the traceback in the log only
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            if on_crash is not None and not request.url.path.startswith("/api/"):
                response = on_crash(request)
                audit_error(request, 500, "internal error")
            else:
                response = error_response(request, 500, "internal error; the administrator's log has details")
        return _security_headers(request, response, csp)


async def capture_error_json(request: Request, exc: CaptureError) -> Response:
    return error_response(request, exc.http_status, str(exc))


async def bad_parameter_json(request: Request, exc: RequestValidationError) -> Response:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:5]
    )
    return error_response(request, 422, f"bad parameter: {problems}"[:1000])


async def http_error_json(request: Request, exc: StarletteHTTPException) -> Response:
    return error_response(request, exc.status_code, str(exc.detail))


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CaptureError, capture_error_json)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, bad_parameter_json)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error_json)  # type: ignore[arg-type]


def add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, from the swagger-ui-bundle package and our own start-up script."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/ui", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    app.mount("/docs/app", StaticFiles(directory=str(DOCS_ASSETS)), name="docs-app")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{app.title} API</title>"
            "<link rel='stylesheet' href='/docs/ui/swagger-ui.css'></head>"
            "<body><div id='swagger-ui'></div>"
            "<script src='/docs/ui/swagger-ui-bundle.js'></script>"
            "<script src='/docs/app/start.js'></script></body></html>"
        )


def api_router_app(app: FastAPI) -> None:
    """The /api routes (also mounted by the web interface's app)."""

    @app.get("/api/search", tags=["search"], summary="Full-text search over the pages a user may see")
    def search(
        user: User,
        svc: Service,
        q: Annotated[str, Query(max_length=1000, description="Words to find (Chinese, letters, digits)")],
        year: Annotated[str | None, Query(max_length=100)] = None,
        stage: Annotated[str | None, Query(max_length=100)] = None,
        retention: Annotated[str | None, Query(max_length=100)] = None,
        box: Annotated[str | None, Query(max_length=100)] = None,
        security_level: Annotated[str | None, Query(max_length=100)] = None,
        archive_code: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
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
        user: User,
        svc: Service,
        archive_code: str,
        page: Annotated[int, PathParam(ge=1, le=100000)],
        size: Literal["thumb", "full"] = "thumb",
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
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = svc or ArchiveService(settings)
    add_security_headers(app, "default-src 'self'; frame-ancestors 'none'")
    add_error_handlers(app)
    add_docs(app)
    api_router_app(app)
    return app
