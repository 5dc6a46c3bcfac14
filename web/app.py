"""The staff web front end: sign-in, sessions, CSRF, languages, and the pages of each role.

Sessions are signed cookies (HttpOnly, SameSite=Lax; Secure with WEB_SECURE_COOKIES)
holding the user name and the session's CSRF token; every form and every scripted POST
sends that token back. Calls to the services carry a token minted per request for the
user's role (web/backend.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
from fastapi import APIRouter, Depends, FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from shared.service.auth import ROLES, signing_key
from shared.service.db import make_engine, make_sessionmaker, migrate, wait_for_database
from web import i18n, users
from web.backend import Backend, BackendError
from web.models import SCHEMA, StaffUser
from web.settings import WebSettings, load_web_settings

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

PAGE_SECONDS = Histogram("branchline_web_page_seconds", "Server time per page",
                         ["route"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5))

#: Where each role starts after signing in.
HOME = {"acquisitions": "/acquisitions", "cataloger": "/cataloging", "desk": "/desk",
        "branch_system": "/desk", "dispatcher": "/dispatch", "driver": "/driver",
        "admin": "/report"}


class SignInRequired(Exception):
    """No session (or its user is gone or disabled): the page sends them to sign in."""


class Forbidden(Exception):
    """The signed-in user's role or site may not open this page."""


class CsrfFailed(Exception):
    pass


def language(request: Request) -> str:
    lang = request.cookies.get("lang") or request.app.state.settings.web_language
    return lang if lang in i18n.LANGUAGES else "zh"


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def render(request: Request, template: str, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """A page in the user's language, with what every layout needs."""
    lang = language(request)
    user = getattr(request.state, "user", None)
    return templates.TemplateResponse(request, template, status_code=status_code, context={
        "t": lambda key: i18n.translate(key, lang), "lang": lang, "user": user,
        "status": lambda value: i18n.status(value, lang),
        "csrf": csrf_token(request), "home": HOME.get(user.role, "/") if user else "/",
        **context})


async def db(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(db)]


async def current_user(request: Request, session: Session) -> StaffUser:
    name = request.session.get("user")
    signed_at = float(request.session.get("at", 0))
    hours = request.app.state.settings.web_session_hours
    if not name or time.time() - signed_at > hours * 3600:
        raise SignInRequired()
    user = await session.get(StaffUser, name)
    if user is None or not user.active:
        request.session.clear()
        raise SignInRequired()
    request.session["at"] = time.time()  # sliding: the session lasts while it is used
    request.state.user = user
    return user


def role(*allowed: str) -> Callable[..., Awaitable[StaffUser]]:
    """The signed-in user, if their role is one of `allowed` (admin always is)."""
    async def check(user: Annotated[StaffUser, Depends(current_user)]) -> StaffUser:
        if user.role != "admin" and user.role not in allowed:
            raise Forbidden()
        return user
    return check


async def check_csrf(request: Request) -> None:
    """A POST must carry the session's CSRF token (form field or X-CSRF-Token header)."""
    expected = request.session.get("csrf")
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = str((await request.form()).get("csrf_token") or "")
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise CsrfFailed()


Csrf = Depends(check_csrf)


def backend(request: Request) -> Backend:
    user: StaffUser = request.state.user
    state = request.app.state
    return Backend(state.client, state.settings, state.key, user)


def _local(target: str) -> str:
    """`target` if it is a path of this site, else "/": a link never sends someone on to
    another host (`//host`, `/\\host` and `http:` are what browsers read as one)."""
    parts = urlsplit(target)
    if (not target.startswith("/") or target.startswith("//") or "\\" in target
            or parts.scheme or parts.netloc or any(ord(ch) < 32 for ch in target)):
        return "/"
    return target


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


router = APIRouter()


@router.get("/health", include_in_schema=False)
async def health(session: Session) -> Response:
    """Ready when the web schema answers (the services have their own /health)."""
    await session.get(StaffUser, "")
    return Response('{"status": "ok"}', media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus text format: page times per route among them."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def index(request: Request, session: Session) -> Response:
    try:
        user = await current_user(request, session)
    except SignInRequired:
        return redirect("/signin")
    return redirect(HOME.get(user.role, "/signin"))


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "signin.html", next=next, failed=False)


@router.post("/signin", response_class=HTMLResponse, dependencies=[Csrf])
async def signin(request: Request, session: Session,
                 username: Annotated[str, Form(max_length=64)],
                 password: Annotated[str, Form(max_length=256)],
                 next: Annotated[str, Form()] = "/") -> Response:
    user = await users.authenticate(session, username, password)
    if user is None:
        return render(request, "signin.html", status_code=401, next=next, failed=True,
                      username=username)
    request.session.clear()
    request.session.update({"user": user.username, "at": time.time(),
                            "csrf": secrets.token_urlsafe(24)})
    target = _local(next)
    return redirect(target if target != "/" else HOME.get(user.role, "/"))


@router.post("/signout", dependencies=[Csrf])
async def signout(request: Request) -> Response:
    request.session.clear()
    return redirect("/signin")


@router.get("/lang/{code}")
async def switch_language(code: str, next: str = "/") -> Response:
    response = redirect(_local(next))
    if code in i18n.LANGUAGES:
        response.set_cookie("lang", code, max_age=365 * 86400, samesite="lax", httponly=True)
    return response


@router.get("/admin/users", response_class=HTMLResponse)
async def admin_users(request: Request, session: Session,
                      _: Annotated[StaffUser, Depends(role("admin"))]) -> HTMLResponse:
    return render(request, "admin_users.html", users=await users.all_users(session),
                  roles=ROLES, problem=None, saved=False)


@router.post("/admin/users", response_class=HTMLResponse, dependencies=[Csrf])
async def admin_save_user(
    request: Request, session: Session, _: Annotated[StaffUser, Depends(role("admin"))],
    username: Annotated[str, Form(max_length=64)], role_name: Annotated[str, Form()],
    display_name: Annotated[str, Form(max_length=100)] = "",
    site: Annotated[str, Form(max_length=64)] = "",
    driver: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    active: Annotated[str, Form()] = "",
) -> HTMLResponse:
    problem = None
    try:
        await users.save_user(session, username=username, role=role_name,
                              password=password or None, display_name=display_name or None,
                              site=site, driver=driver, active=bool(active))
    except users.UserProblem as exc:
        problem = f"{exc.field}: {exc}"
    return render(request, "admin_users.html", status_code=422 if problem else 200,
                  users=await users.all_users(session), roles=ROLES, problem=problem,
                  saved=problem is None)


def _session_secret(key: str) -> str:
    """The cookie-signing secret, derived from the network's signing key (not the key)."""
    return hmac.new(key.encode(), b"branchline-web-session", hashlib.sha256).hexdigest()


def build_app(settings: WebSettings | None = None) -> FastAPI:
    from web.pages import ROUTERS

    settings = settings or load_web_settings()
    key = signing_key(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, pool_size=5)
        await wait_for_database(engine)
        await migrate(engine, HERE / "migrations", SCHEMA)
        app.state.sessions = make_sessionmaker(engine)
        app.state.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0),
                                             limits=httpx.Limits(max_connections=50))
        try:
            yield
        finally:
            await app.state.client.aclose()
            await engine.dispose()

    app = FastAPI(title="Branchline staff pages", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.settings, app.state.key = settings, key
    app.add_middleware(SessionMiddleware, secret_key=_session_secret(key),
                       session_cookie="branchline_session",
                       max_age=int(settings.web_session_hours * 3600), same_site="lax",
                       https_only=settings.web_secure_cookies)

    @app.middleware("http")
    async def page_time(request: Request, call_next: Callable[[Request], Awaitable[Response]],
                        ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        spent = time.perf_counter() - started
        route = request.scope.get("route")
        PAGE_SECONDS.labels(getattr(route, "path", "other")).observe(spent)
        response.headers["Server-Timing"] = f"app;dur={spent * 1000:.1f}"
        return response

    @app.exception_handler(SignInRequired)
    async def to_signin(request: Request, _: SignInRequired) -> Response:
        if request.method != "GET" or request.headers.get("accept", "").startswith(
                "application/json"):
            return Response(status_code=401, content="sign in again")
        return redirect("/signin?next=" + quote(str(request.url.path)))

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, _: Forbidden) -> Response:
        return render(request, "message.html", status_code=403, title="forbidden.title",
                      body="forbidden.body")

    @app.exception_handler(CsrfFailed)
    async def csrf_failed(request: Request, _: CsrfFailed) -> Response:
        return render(request, "message.html", status_code=403, title="error.title",
                      body="error.csrf")

    @app.exception_handler(BackendError)
    async def backend_failed(request: Request, exc: BackendError) -> Response:
        status = exc.status if 400 <= exc.status < 500 else 502
        return render(request, "message.html", status_code=status, title="error.title",
                      body=None, detail=exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        title = "notfound.title" if exc.status_code == 404 else "error.title"
        return render(request, "message.html", status_code=exc.status_code, title=title,
                      body=None, detail=str(exc.detail) if exc.status_code != 404 else None)

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(router)
    for page_router in ROUTERS:
        app.include_router(page_router)
    return app


def run() -> None:
    import uvicorn

    from shared.service.logs import setup_logging

    settings = load_web_settings()
    setup_logging("web", settings.log_level)
    uvicorn.run(build_app(settings), host=settings.host, port=settings.web_port,
                log_config=None, access_log=False)
