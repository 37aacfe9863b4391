"""The web interface for searchers and QA staff (server-rendered pages, Chinese by default).

Everything shown comes through ArchiveService (security and audit) or the QA functions;
templates escape every value (Jinja2 autoescape), so OCR text, catalogue fields and file names
are shown as text. Forms carry a CSRF token bound to the session; the login form uses a
double-submit cookie. The JSON API of pipeline.web.api is served by the same app.
"""

from __future__ import annotations

import hmac
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from pipeline import qa, watch
from pipeline.errors import AccessDenied, AccountLocked, CaptureError, IndexUnavailable, QueryError
from pipeline.index.analysis import query_terms
from pipeline.index.snippets import segments, split_at
from pipeline.security import level_name
from pipeline.settings import Settings
from pipeline.users import MIN_PASSWORD_LENGTH, Principal, change_password, log_in, principal_of
from pipeline.web.api import add_error_handlers, add_security_headers, api_router_app
from pipeline.web.i18n import pick, translate
from pipeline.web.service import ArchiveService, Forbidden, NotFound
from pipeline.web.sessions import COOKIE, LOGIN_COOKIE, SessionCodec, WebSession, new_session, secret_key

HERE = Path(__file__).resolve().parent
PAGE_CSP = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'none'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PER_PAGE = 10
FILTERS = ("year", "stage", "retention", "box")


class LoginRequired(Exception):
    def __init__(self, expired: bool) -> None:
        self.expired = expired


class WebError(Exception):
    def __init__(self, status: int, key: str, detail: str = "") -> None:
        self.status, self.key, self.detail = status, key, detail


def current(request: Request) -> Principal:
    """The logged-in user (their account is read again on every request)."""
    codec: SessionCodec = request.app.state.codec
    session, expired = codec.load(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequired(expired)
    row = request.app.state.service.store.user(session.username)
    if row is None or row.disabled:
        raise LoginRequired(False)
    request.state.session = session
    return principal_of(row)


def qa_staff(who: Annotated[Principal, Depends(current)]) -> Principal:
    if not who.is_qa:
        raise WebError(403, "forbidden")
    return who


Viewer = Annotated[Principal, Depends(current)]
QaUser = Annotated[Principal, Depends(qa_staff)]


def create_web_app(settings: Settings, svc: ArchiveService | None = None) -> FastAPI:
    app = FastAPI(title="Archive Capture", docs_url="/docs", redoc_url=None)
    service = svc or ArchiveService(settings)
    app.state.service = service
    codec = SessionCodec(secret_key(settings.home_dir), settings.web.session_minutes * 60)
    app.state.codec = codec
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    add_security_headers(app, PAGE_CSP)
    add_error_handlers(app)
    api_router_app(app)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # -- helpers ------------------------------------------------------------------------------

    def lang_of(request: Request) -> str:
        return pick(request.query_params.get("lang") or request.cookies.get("lang"))

    def render(
        request: Request, name: str, who: Principal | None, status: int = 200, **context: Any
    ) -> Response:
        lang = lang_of(request)
        session = getattr(request.state, "session", None)
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

    def set_session(response: Response, request: Request, session: WebSession) -> None:
        response.set_cookie(
            COOKIE,
            codec.dump(session),
            max_age=codec.max_age,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def check_csrf(request: Request, token: str) -> None:
        session = getattr(request.state, "session", None)
        if session is None or not hmac.compare_digest(session.csrf, token):
            raise WebError(400, "bad_request", "the form is out of date (CSRF token); reload the page")

    @app.middleware("http")
    async def slide_session(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        session = getattr(request.state, "session", None)
        if session is not None and COOKIE not in response.headers.get("set-cookie", ""):
            set_session(response, request, session)  # idle time starts again
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = urlencode({"next": target, **({"expired": "1"} if exc.expired else {})})
        return RedirectResponse(f"/login?{query}", status_code=303)

    @app.exception_handler(WebError)
    async def web_error(request: Request, exc: WebError) -> Response:
        return render(request, "error.html", None, exc.status, key=exc.key, detail=exc.detail)

    def safe_next(target: str | None) -> str:
        if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
            return "/search"
        return target

    # -- log in / out ---------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/search", expired: str = "") -> Response:
        nonce = secrets.token_urlsafe(24)
        response = render(
            request, "login.html", None, nonce=nonce, next=safe_next(next), expired=bool(expired)
        )
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict")
        return response

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
            who = log_in(
                service.store,
                username,
                password,
                max_failures=settings.web.max_failed_logins,
                lockout_minutes=settings.web.lockout_minutes,
                via="web",
            )
        except AccessDenied as exc:
            nonce = secrets.token_urlsafe(24)
            response = render(
                request,
                "login.html",
                None,
                429 if isinstance(exc, AccountLocked) else 401,
                nonce=nonce,
                next=safe_next(next),
                failed="login_locked" if isinstance(exc, AccountLocked) else "login_failed",
                minutes=settings.web.lockout_minutes,
            )
            response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict")
            return response
        response = RedirectResponse(safe_next(next), status_code=303)
        set_session(response, request, new_session(who.username))
        response.delete_cookie(LOGIN_COOKIE)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, who: Viewer, csrf: Annotated[str, Form(max_length=100)]) -> Response:
        check_csrf(request, csrf)
        request.state.session = None
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
        problem = ""
        if new != repeat:
            problem = "password_mismatch"
        elif len(new) < MIN_PASSWORD_LENGTH:
            problem = "password_too_short"
        else:
            try:
                change_password(service.store, who.username, current, new)
            except AccessDenied:
                service.store.audit(who.username, "password.refused", who.username, {"via": "web"})
                problem = "current_password_wrong"
        if problem:
            return render(request, "account.html", who, 400, problem=problem, min_length=MIN_PASSWORD_LENGTH)
        return RedirectResponse("/account?done=1", status_code=303)

    # -- searchers --------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/search", status_code=303)

    @app.get("/search", response_class=HTMLResponse, include_in_schema=False)
    def search_page(request: Request, who: Viewer, q: str = "", page: int = 1) -> Response:
        filters = {f: request.query_params.get(f, "") for f in FILTERS if request.query_params.get(f)}
        result, problem = None, ""
        page = max(1, min(page, 1000))
        if q.strip():
            try:
                result = service.search(
                    who, q, filters, limit=PER_PAGE, offset=(page - 1) * PER_PAGE, facets=True, via="web"
                )
            except (QueryError, Forbidden) as exc:
                problem = str(exc)
            except IndexUnavailable as exc:
                raise WebError(503, "bad_request", str(exc)) from exc
        hits = []
        for hit in result.hits if result else []:
            pieces = split_at(hit.snippet, hit.highlights)
            link = f"/items/{hit.archive_code}?" + urlencode({"page": hit.page, "q": q})
            hits.append({"hit": hit, "pieces": pieces, "link": link})

        def url(**changes: Any) -> str:
            params = {"q": q, **filters, "page": page, **changes}
            return "/search?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})

        pages = (result.total + PER_PAGE - 1) // PER_PAGE if result else 0
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
        try:
            view = service.open_item(who, archive_code, via="web")
        except NotFound as exc:
            raise WebError(404, "not_found") from exc
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
        try:
            path = service.pdf(who, archive_code, via="web")
        except NotFound as exc:
            raise WebError(404, "not_found") from exc
        return FileResponse(path, media_type="application/pdf", filename=path.name)

    @app.get("/items/{archive_code}/pages/{page}.png", include_in_schema=False)
    def item_png(who: Viewer, archive_code: str, page: int, size: str = "thumb") -> Response:
        try:
            png = service.page_image(
                who, archive_code, page, "full" if size == "full" else "thumb", via="web"
            )
        except NotFound as exc:
            raise WebError(404, "not_found") from exc
        return FileResponse(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    # -- QA staff -------------------------------------------------------------------------------

    @app.get("/qa", response_class=HTMLResponse, include_in_schema=False)
    def qa_queue(
        request: Request, who: QaUser, batch: str = "", finding: str = "", older: int = 0
    ) -> Response:
        cases = service.store.cases("open")
        kinds = Counter(f["code"] for c in cases for f in c.findings)
        batches = sorted({c.batch_id for c in cases})
        now = datetime.now(UTC)
        rows = []
        for case in cases:
            opened = case.opened_at if case.opened_at.tzinfo else case.opened_at.replace(tzinfo=UTC)
            age = now - opened
            if batch and case.batch_id != batch:
                continue
            if finding and finding not in {f["code"] for f in case.findings}:
                continue
            if older and age < timedelta(days=older):
                continue
            rows.append({"case": case, "days": age.days, "codes": sorted({f["code"] for f in case.findings})})
        return render(
            request,
            "qa_list.html",
            who,
            rows=rows,
            total=len(cases),
            kinds=sorted(kinds.items()),
            batches=batches,
            batch=batch,
            finding=finding,
            older=older,
            message=request.query_params.get("message", ""),
        )

    @app.get("/qa/{archive_code}", response_class=HTMLResponse, include_in_schema=False)
    def qa_case(request: Request, who: QaUser, archive_code: str) -> Response:
        case = service.store.open_case(archive_code)
        try:
            view = service.open_item(who, archive_code, via="web-qa")
        except NotFound as exc:
            raise WebError(404, "not_found") from exc
        entry = service.store.catalogue_entry(archive_code)
        low = settings.verify.min_page_confidence
        return render(
            request,
            "qa_case.html",
            who,
            view=view,
            case=case,
            entry=entry,
            low=low,
            decisions=service.store.decisions(archive_code),
            message=request.query_params.get("message", ""),
        )

    @app.post("/qa/{archive_code}/decide", include_in_schema=False)
    def qa_decide(
        request: Request,
        who: QaUser,
        archive_code: str,
        action: Annotated[str, Form(max_length=20)],
        csrf: Annotated[str, Form(max_length=100)],
        reason: Annotated[str, Form(max_length=2000)] = "",
        pages: Annotated[int | None, Form(ge=0, le=100000)] = None,
    ) -> Response:
        check_csrf(request, csrf)
        lang = lang_of(request)
        try:
            if action == "approve":
                qa.approve(service.store, service.index, settings, archive_code, reason, who.username)
            elif action == "rescan":
                qa.rescan(service.store, service.index, settings, archive_code, reason, who.username)
            elif action == "correct":
                if pages is None:
                    raise qa.QaError("a page count is required for a correction")
                qa.correct(service.store, service.index, settings, archive_code, pages, reason, who.username)
            else:
                raise WebError(400, "bad_request", f"unknown action {action[:20]!r}")
        except CaptureError as exc:
            query = urlencode({"message": str(exc)})
            return RedirectResponse(f"/qa/{archive_code}?{query}", status_code=303)
        done = translate(lang, "decided", code=archive_code, action=translate(lang, f"action_{action}"))
        following = [c for c in service.store.cases("open") if c.archive_code != archive_code]
        target = f"/qa/{following[0].archive_code}" if following else "/qa"
        return RedirectResponse(f"{target}?{urlencode({'message': done})}", status_code=303)

    @app.get("/batches", response_class=HTMLResponse, include_in_schema=False)
    def batches_page(request: Request, who: QaUser, all: int = 0) -> Response:
        today = datetime.now(UTC).date()
        rows = []
        for row in sorted(service.store.batches(), key=lambda b: b.started_at, reverse=True):
            started = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
            if not all and started.date() != today:
                continue
            rows.append({"row": row, "totals": row.summary or {}})
        waiting: list[str] = []
        areas = watch.Areas(settings.watch_dir)
        if areas.incoming.is_dir():
            waiting = [p.name for p in watch.candidates(areas)]
        return render(request, "batches.html", who, rows=rows, waiting=waiting, show_all=bool(all))

    return app
