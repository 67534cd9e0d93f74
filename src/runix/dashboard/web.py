"""The dashboard's plumbing: templates, the session cookie, CSRF tokens, flash messages, and the `page` / `action`
decorators every route goes through (so each form action is registered beside the API endpoint it mirrors)."""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from runix.context import Runix
from runix.db.models import Account, Token
from runix.errors import BadRequest, RunixError, Unauthorized
from runix.services import auth, billing

HERE = Path(__file__).parent
SESSION_COOKIE = "runix_session"
ANON_COOKIE = "runix_anon"  # anchors CSRF tokens of the sign-in forms, before there is a session
FLASH_COOKIE = "runix_flash"
GITHUB_STATE_COOKIE = "runix_github_state"

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/dashboard", include_in_schema=False)


def filesize(n: int | None) -> str:
    """A size as people read it: 456 bytes, 12 KiB, 1.5 MiB."""
    n = n or 0
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.3g} MiB"


templates.env.filters["filesize"] = filesize


@dataclass(frozen=True)
class Action:
    """Something a person does in the dashboard (opens a page that shows data, or posts a form that changes it), and
    the API endpoint that does the same thing."""

    method: str
    path: str
    api: str  # "METHOD /path" as in /openapi.json


ACTIONS: list[Action] = []


class SignInRequired(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


@dataclass
class Call:
    """What a dashboard handler gets: the request, a DB session, the platform, the viewer, the form."""

    request: Request
    db: Session
    ctx: Runix
    account: Account | None = None
    token: Token | None = None
    form: FormData | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def me(self) -> Account:
        assert self.account is not None
        return self.account

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name) if self.form is not None else None
        return value.strip() if isinstance(value, str) else default

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return render(self.request, template, status=status, account=self.account, **context)


# Cookies ------------------------------------------------------------------------------------------------------------

def is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=is_https(request))


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=is_https(request))


def start_session(request: Request, response: Response, session_token: str) -> None:
    set_cookie(request, response, SESSION_COOKIE, session_token, max_age=int(auth.SESSION_TTL.total_seconds()))


def sign(ctx: Runix, value: str) -> str:
    return f"{value}.{ctx.vault.keyed_hash('cookie:' + value)[:40]}"


def unsign(ctx: Runix, signed: str | None) -> str | None:
    if not signed or "." not in signed:
        return None
    value, _, mac = signed.rpartition(".")
    return value if hmac.compare_digest(mac, ctx.vault.keyed_hash("cookie:" + value)[:40]) else None


def safe_next(url: str | None, default: str = "/dashboard") -> str:
    """Only a path inside the dashboard: never an open redirect to another site."""
    if not url:
        return default
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path.startswith("/dashboard") or url.startswith("//"):
        return default
    return url


# CSRF: an HMAC of the session cookie (or, before sign-in, of a random anonymous cookie) with the server key ---------

def _csrf_anchor(request: Request) -> str:
    anchor = request.cookies.get(SESSION_COOKIE) or request.cookies.get(ANON_COOKIE)
    if not anchor:
        anchor = getattr(request.state, "new_anon", None) or secrets.token_urlsafe(24)
        request.state.new_anon = anchor
    return anchor


def csrf_token(request: Request) -> str:
    ctx: Runix = request.app.state.runix
    return ctx.vault.keyed_hash("csrf:" + _csrf_anchor(request))


def check_csrf(request: Request, sent: object) -> None:
    if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf_token(request)):
        raise BadRequest("This form expired (its security token did not match). Reload the page and try again.")


# Rendering ----------------------------------------------------------------------------------------------------------

def flash(request: Request, response: Response, text: str, kind: str = "ok") -> None:
    ctx: Runix = request.app.state.runix
    set_cookie(request, response, FLASH_COOKIE, sign(ctx, quote(json.dumps({"kind": kind, "text": text}))))


def _take_flash(request: Request) -> dict[str, str] | None:
    raw = unsign(request.app.state.runix, request.cookies.get(FLASH_COOKIE))
    if raw is None:
        return None
    try:
        return json.loads(unquote(raw))
    except ValueError:
        return None


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    ctx: Runix = request.app.state.runix
    shown_flash = _take_flash(request) if not request.headers.get("hx-request") else None
    context.setdefault("account", None)
    response = templates.TemplateResponse(request, template, {
        "csrf": csrf_token(request), "flash": shown_flash, "path": request.url.path,
        "github_enabled": bool(ctx.settings.github_client_id and ctx.settings.github_client_secret), **context,
    }, status_code=status)
    if getattr(request.state, "new_anon", None):
        set_cookie(request, response, ANON_COOKIE, request.state.new_anon)
    if shown_flash is not None:
        clear_cookie(request, response, FLASH_COOKIE)
    return response


def redirect(request: Request, url: str, message: str | None = None, kind: str = "ok") -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if message:
        flash(request, response, message, kind)
    return response


def back(request: Request, fallback: str, message: str, kind: str = "error") -> RedirectResponse:
    """After a failed action: the page the form was on, with the reason."""
    referer = request.headers.get("referer", "")
    parts = urlsplit(referer)
    same_site = parts.netloc == request.url.netloc
    target = safe_next(parts.path + (f"?{parts.query}" if parts.query else ""), fallback) if same_site else fallback
    return redirect(request, target, message, kind)


ERROR_TITLES = {404: "Not found", 403: "Not allowed", 429: "Slow down"}


def error_page(request: Request, status: int, message: str, title: str | None = None,
               account: Account | None = None) -> HTMLResponse:
    """The page a failed GET shows; with the viewer known, the page keeps its navigation."""
    return render(request, "error.html", status=status if status in (400, 401, 403, 404, 409, 429) else 400,
                  title=title or ERROR_TITLES.get(status, "Something went wrong"), message=message, account=account)


# The viewer ---------------------------------------------------------------------------------------------------------

def viewer(request: Request, db: Session) -> tuple[Account, Token]:
    value = request.cookies.get(SESSION_COOKIE)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not value:
        raise SignInRequired(target)
    try:
        account, token = auth.authenticate(db, value)
    except Unauthorized as exc:
        raise SignInRequired(target) from exc
    if token.kind != "session":
        raise SignInRequired(target)
    return account, token


# Route decorators ---------------------------------------------------------------------------------------------------

def page(path: str, *, api: tuple[str, ...] = (),
         signed_in: bool = True) -> Callable[[Callable[[Call], Response]], Callable[[Call], Response]]:
    """A GET page showing what the `api` reads show. Failures show the error page with the reason (another account's
    project: 404)."""

    def register(handler: Callable[[Call], Response]) -> Callable[[Call], Response]:
        ACTIONS.extend(Action("GET", router.prefix + path, read) for read in api)

        async def endpoint(request: Request) -> Response:
            return await _run(request, handler, signed_in, form=None, on_error=None)

        router.add_api_route(path, endpoint, methods=["GET"], response_class=HTMLResponse, name=handler.__name__)
        return handler

    return register


def action(path: str, api: str, *, signed_in: bool = True, fallback: str = "/dashboard"):
    """A form POST that does what `api` does, through the same service. Checks CSRF, counts against the account's
    request rate limit like the API, and on failure returns to the form's page with the reason."""

    def register(handler: Callable[[Call], Response]) -> Callable[[Call], Response]:
        ACTIONS.append(Action("POST", router.prefix + path, api))

        async def endpoint(request: Request) -> Response:
            form = await request.form()
            try:
                check_csrf(request, form.get("csrf"))
            except RunixError as exc:
                return back(request, fallback, exc.message)
            return await _run(request, handler, signed_in, form=form, on_error=fallback)

        router.add_api_route(path, endpoint, methods=["POST"], name=handler.__name__)
        return handler

    return register


async def _run(request: Request, handler: Callable[[Call], Response], signed_in: bool, form: FormData | None,
               on_error: str | None) -> Response:
    ctx: Runix = request.app.state.runix

    def call() -> Response:
        with ctx.db.sessions() as db:
            c = Call(request=request, db=db, ctx=ctx, form=form, params=dict(request.path_params))
            if signed_in:
                c.account, c.token = viewer(request, db)
                if form is not None:
                    billing.hit_request_limit(ctx, c.account.id, c.account.plan)
            elif request.cookies.get(SESSION_COOKIE):
                with contextlib.suppress(SignInRequired):
                    c.account, c.token = viewer(request, db)
            try:
                return handler(c)
            except RunixError as exc:
                if on_error is not None:
                    raise
                return error_page(request, exc.status, exc.message, account=c.account)

    try:
        return await run_in_threadpool(call)
    except SignInRequired as exc:
        # After signing in, come back to the page (a form's target is no page to come back to).
        next_url = exc.next_url if form is None else "/dashboard"
        if request.headers.get("hx-request"):  # a live part polling after the session ended: reload as a page
            next_url = urlsplit(request.headers.get("hx-current-url", "")).path or "/dashboard"
            response: Response = Response(headers={"HX-Redirect": f"/dashboard/login?next={quote(next_url)}"})
        else:
            response = redirect(request, f"/dashboard/login?next={quote(next_url)}")
        clear_cookie(request, response, SESSION_COOKIE)
        return response
    except RunixError as exc:
        if on_error is None:
            return error_page(request, exc.status, exc.message)
        return back(request, on_error, exc.message)
