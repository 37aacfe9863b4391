"""The web interface for searchers and QA staff (server-rendered pages, Chinese by default).

Everything shown comes through pipeline.service (one access decision, every read audited);
templates escape every value (Jinja2 autoescape), so OCR text, catalogue fields and file names
are shown as text. Sessions live in the state store: the cookie holds a random token, so
log-out, a password change, disabling or deleting the account end the session at once. Forms
carry the session's CSRF token; the login form uses a double-submit cookie. The JSON API of
pipeline.web.api is served by the same app.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.access import Principal
from pipeline.errors import (
    AccessDenied,
    AccountLocked,
    CaptureError,
    ConfigError,
    Forbidden,
    NotFound,
    QaError,
    QueryError,
)
from pipeline.index.analysis import query_terms
from pipeline.index.snippets import segments, split_at
from pipeline.security import level_name
from pipeline.service import ArchiveService
from pipeline.settings import Settings
from pipeline.users import (
    MIN_PASSWORD_LENGTH,
    Lockout,
    WebSession,
    change_password,
    end_session,
    log_in,
    session_id,
    session_user,
    start_session,
)
from pipeline.web.api import (
    add_docs,
    add_security_headers,
    api_router_app,
    audit_error,
    bad_parameter_json,
    capture_error_json,
    http_error_json,
)
from pipeline.web.i18n import pick, translate

HERE = Path(__file__).resolve().parent
PAGE_CSP = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'none'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
COOKIE = "capture_session"
LOGIN_COOKIE = "capture_login"
PER_PAGE = 10
MAX_RESULT_PAGE = 1000
FILTERS = ("year", "stage", "retention", "box")


class LoginRequired(Exception):
    def __init__(self, expired: bool) -> None:
        self.expired = expired


class WebError(Exception):
    def __init__(self, status: int, key: str, detail: str = "") -> None:
        self.status, self.key, self.detail = status, key, detail


def current(request: Request) -> Principal:
    """The logged-in user: an open session of an enabled account, checked on every request."""
    svc: ArchiveService = request.app.state.service
    token = request.cookies.get(COOKIE, "")
    found = session_user(svc.store, token, request.app.state.settings.web.session_minutes)
    if found is None:
        raise LoginRequired(bool(token))
    who, session = found
    request.state.session = session
    request.state.principal = who
    return who


Viewer = Annotated[Principal, Depends(current)]


def create_web_app(settings: Settings, svc: ArchiveService | None = None) -> FastAPI:
    app = FastAPI(title="Archive Capture", docs_url=None, redoc_url=None)
    service = svc or ArchiveService(settings)
    app.state.service = service
    app.state.settings = settings
    lockout = Lockout(settings.web.max_failed_logins, settings.web.lockout_minutes)
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    # -- helpers ------------------------------------------------------------------------------

    def lang_of(request: Request) -> str:
        return pick(request.query_params.get("lang") or request.cookies.get("lang"))

    def render(
        request: Request, name: str, who: Principal | None, status: int = 200, **context: Any
    ) -> Response:
        lang = lang_of(request)
        session: WebSession | None = getattr(request.state, "session", None)
        response = templates.TemplateResponse(
            request,
            name,
            {
                "t": lambda key, **v: translate(lang, key, **v),
                "lang": lang,
                "other_lang": "en" if lang == "zh" else "zh",
                "who": who,
                "csrf": session.csrf if session else "",
                "path": request.url.path,
                "clearance_name": level_name,
                **context,
            },
            status_code=status,
        )
        if request.query_params.get("lang"):
            response.set_cookie("lang", lang, max_age=365 * 86400, samesite="lax", httponly=True)
        return response

    def error_page(request: Request, status: int, key: str, detail: str = "") -> Response:
        who = getattr(request.state, "principal", None)
        return render(request, "error.html", who, status, key=key, detail=detail)

    def set_session_cookie(response: Response, request: Request, session: WebSession) -> None:
        response.set_cookie(
            COOKIE,
            session.token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def check_csrf(request: Request, token: str) -> None:
        session: WebSession | None = getattr(request.state, "session", None)
        if session is None or not hmac.compare_digest(session.csrf, token):
            raise WebError(400, "bad_request", "the form is out of date (CSRF token); reload the page")

    def is_page(request: Request) -> bool:
        return not request.url.path.startswith("/api/")

    add_security_headers(app, PAGE_CSP, on_crash=lambda request: error_page(request, 500, "internal_error"))
    add_docs(app)
    api_router_app(app)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = urlencode({"next": target[:2000], **({"expired": "1"} if exc.expired else {})})
        response = RedirectResponse(f"/login?{query}", status_code=303)
        if exc.expired:
            response.delete_cookie(COOKIE)
        return response

    @app.exception_handler(WebError)
    async def web_error(request: Request, exc: WebError) -> Response:
        audit_error(request, exc.status, exc.detail or exc.key)
        return error_page(request, exc.status, exc.key, exc.detail)

    @app.exception_handler(CaptureError)
    async def capture_error(request: Request, exc: CaptureError) -> Response:
        if not is_page(request):
            return await capture_error_json(request, exc)
        key = {404: "not_found", 403: "forbidden", 503: "index_away", 429: "account_locked"}.get(
            exc.http_status, "bad_request" if exc.http_status < 500 else "internal_error"
        )
        audit_error(request, exc.http_status, str(exc))
        detail = str(exc) if exc.http_status in (400, 503) else ""
        return error_page(request, exc.http_status, key, detail)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        if not is_page(request):
            return await bad_parameter_json(request, exc)
        audit_error(request, 422, "bad parameter")
        return error_page(request, 422, "bad_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not is_page(request):
            return await http_error_json(request, exc)
        audit_error(request, exc.status_code, str(exc.detail))
        return error_page(request, exc.status_code, "not_found" if exc.status_code == 404 else "bad_request")

    def safe_next(target: str | None) -> str:
        if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
            return "/search"
        if any(ord(c) < 32 for c in target):
            return "/search"
        return target

    # -- log in / out ---------------------------------------------------------------------------

    def login_form(request: Request, status: int = 200, **context: Any) -> Response:
        nonce = secrets.token_urlsafe(24)
        response = render(request, "login.html", None, status, nonce=nonce, **context)
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict")
        return response

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/search", expired: str = "") -> Response:
        return login_form(request, next=safe_next(next), expired=bool(expired))

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=100)],
        password: Annotated[str, Form(max_length=1000)],
        csrf: Annotated[str, Form(max_length=100)],
        next: Annotated[str, Form(max_length=2000)] = "/search",
    ) -> Response:
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, csrf):
            raise WebError(400, "bad_request", "the log-in form is out of date; reload the page")
        try:
            who = log_in(service.store, username, password, lockout, via="web")
            session = start_session(service.store, who)
        except AccessDenied as exc:
            locked = isinstance(exc, AccountLocked)
            return login_form(
                request,
                429 if locked else 401,
                next=safe_next(next),
                failed="login_locked" if locked else "login_failed",
                minutes=settings.web.lockout_minutes,
            )
        old = request.cookies.get(COOKIE)
        if old:
            end_session(service.store, old, "replaced by a new log-in")
        response = RedirectResponse(safe_next(next), status_code=303)
        set_session_cookie(response, request, session)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, who: Viewer, csrf: Annotated[str, Form(max_length=100)]) -> Response:
        check_csrf(request, csrf)
        session: WebSession = request.state.session
        end_session(service.store, session.token, "logged out")
        service.store.audit(who.username, "logout", "", {"via": "web"})
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/account", response_class=HTMLResponse, include_in_schema=False)
    def account_page(request: Request, who: Viewer, done: int = 0) -> Response:
        return render(request, "account.html", who, changed=bool(done), min_length=MIN_PASSWORD_LENGTH)

    @app.post("/account/password", include_in_schema=False)
    def account_password(
        request: Request,
        who: Viewer,
        csrf: Annotated[str, Form(max_length=100)],
        current: Annotated[str, Form(max_length=1000)],
        new: Annotated[str, Form(max_length=1000)],
        repeat: Annotated[str, Form(max_length=1000)],
    ) -> Response:
        check_csrf(request, csrf)
        session: WebSession = request.state.session
        problem, status = "", 400
        if new != repeat:
            problem = "password_mismatch"
        elif len(new) < MIN_PASSWORD_LENGTH:
            problem = "password_too_short"
        else:
            try:
                change_password(
                    service.store, who.username, current, new, lockout, keep_session=session_id(session.token)
                )
            except AccountLocked:
                problem, status = "account_locked", 429
            except (AccessDenied, ConfigError):
                problem = "current_password_wrong"
        if problem:
            return render(
                request, "account.html", who, status, problem=problem, min_length=MIN_PASSWORD_LENGTH
            )
        return RedirectResponse("/account?done=1", status_code=303)

    # -- searchers --------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/search", status_code=303)

    @app.get("/search", response_class=HTMLResponse, include_in_schema=False)
    def search_page(request: Request, who: Viewer, q: str = "", page: int = 1) -> Response:
        filters = {f: request.query_params.get(f, "") for f in FILTERS if request.query_params.get(f)}
        result, problem = None, ""
        page = max(1, min(page, MAX_RESULT_PAGE))
        if q.strip():
            try:
                result = service.search(
                    who, q, filters, limit=PER_PAGE, offset=(page - 1) * PER_PAGE, facets=True, via="web"
                )
            except QueryError as exc:
                problem = str(exc)
        hits = []
        for hit in result.hits if result else []:
            pieces = split_at(hit.snippet, hit.highlights)
            link = f"/items/{hit.archive_code}?" + urlencode({"page": hit.page, "q": q})
            hits.append({"hit": hit, "pieces": pieces, "link": link})

        def url(**changes: Any) -> str:
            params = {"q": q, **filters, "page": page, **changes}
            return "/search?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})

        pages = min((result.total + PER_PAGE - 1) // PER_PAGE, MAX_RESULT_PAGE) if result else 0
        return render(
            request,
            "search.html",
            who,
            q=q,
            filters=filters,
            result=result,
            hits=hits,
            problem=problem,
            page=page,
            pages=pages,
            url=url,
        )

    @app.get("/items/{archive_code}", response_class=HTMLResponse, include_in_schema=False)
    def item_page(request: Request, who: Viewer, archive_code: str, page: int = 0, q: str = "") -> Response:
        view = service.open_item(who, archive_code, via="web")
        packaged = [p for p in view.pages if p["packaged"]]
        current_page = next((p for p in packaged if p["page"] == page), packaged[0] if packaged else None)
        terms = query_terms(q)[:16] if q and len(q) <= 200 else []
        marked = segments(current_page["text"], terms) if current_page else []
        return render(
            request,
            "item.html",
            who,
            view=view,
            packaged=packaged,
            current=current_page,
            marked=marked,
            q=q,
            hit_count=sum(1 for _, hit in marked if hit),
        )

    @app.get("/items/{archive_code}/pdf", include_in_schema=False)
    def item_pdf(who: Viewer, archive_code: str) -> Response:
        path = service.pdf(who, archive_code, via="web")
        return FileResponse(path, media_type="application/pdf", filename=path.name)

    @app.get("/items/{archive_code}/pages/{page}.png", include_in_schema=False)
    def item_png(who: Viewer, archive_code: str, page: int, size: str = "thumb") -> Response:
        png = service.page_image(who, archive_code, page, "full" if size == "full" else "thumb", via="web")
        return FileResponse(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    # -- QA staff -------------------------------------------------------------------------------

    @app.get("/qa", response_class=HTMLResponse, include_in_schema=False)
    def qa_queue(
        request: Request, who: Viewer, batch: str = "", finding: str = "", older: int = 0
    ) -> Response:
        try:
            queue = service.qa_queue(who, batch=batch, finding=finding, older_days=older, via="web")
        except QaError as exc:
            raise WebError(400, "bad_request", str(exc)) from exc
        return render(
            request,
            "qa_list.html",
            who,
            rows=queue.rows,
            total=queue.total,
            kinds=queue.kinds,
            batches=queue.batches,
            batch=batch,
            finding=finding,
            older=older,
            message=request.query_params.get("message", "")[:500],
        )

    @app.get("/qa/{archive_code}", response_class=HTMLResponse, include_in_schema=False)
    def qa_case(request: Request, who: Viewer, archive_code: str) -> Response:
        shown = service.qa_case(who, archive_code, via="web")
        return render(
            request,
            "qa_case.html",
            who,
            view=shown.view,
            case=shown.case,
            entry=shown.entry,
            low=settings.verify.min_page_confidence,
            decisions=shown.decisions,
            message=request.query_params.get("message", "")[:500],
        )

    @app.post("/qa/{archive_code}/decide", include_in_schema=False)
    def qa_decide(
        request: Request,
        who: Viewer,
        archive_code: str,
        action: Annotated[str, Form(max_length=20)],
        csrf: Annotated[str, Form(max_length=100)],
        reason: Annotated[str, Form(max_length=2000)] = "",
        pages: Annotated[int | None, Form(ge=0, le=100000)] = None,
    ) -> Response:
        check_csrf(request, csrf)
        lang = lang_of(request)
        try:
            service.decide(who, archive_code, action, reason, pages=pages, via="web")
        except (NotFound, Forbidden):
            raise
        except CaptureError as exc:
            query = urlencode({"message": str(exc)[:500]})
            return RedirectResponse(f"/qa/{archive_code}?{query}", status_code=303)
        done = translate(lang, "decided", code=archive_code, action=translate(lang, f"action_{action}"))
        following = service.next_case(who, archive_code)
        target = f"/qa/{following}" if following else "/qa"
        return RedirectResponse(f"{target}?{urlencode({'message': done})}", status_code=303)

    @app.get("/batches", response_class=HTMLResponse, include_in_schema=False)
    def batches_page(request: Request, who: Viewer, all: int = 0) -> Response:
        overview = service.batch_overview(who, everything=bool(all), via="web")
        return render(
            request, "batches.html", who, rows=overview.rows, waiting=overview.waiting, show_all=bool(all)
        )

    from pipeline.web.lifecycle import add_lifecycle_pages  # (it imports this module: imported here)

    add_lifecycle_pages(app, service, render, check_csrf, lang_of)
    return app


__all__ = ["COOKIE", "LOGIN_COOKIE", "create_web_app"]
