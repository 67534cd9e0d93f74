"""/auth/github: sign-in with GitHub (OAuth 2.0 authorization code with `state`), ending in a dashboard session."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from runix.api.deps import Ctx, Db
from runix.api.errors import error_response, responses
from runix.dashboard import web
from runix.errors import BadRequest, RunixError
from runix.services import github

router = APIRouter(prefix="/auth/github", tags=["auth"])

STATE_TTL_SECONDS = 600
_REDIRECT = {302: {"description": "Redirect (to GitHub, or back to the dashboard)"}}


@router.get("", response_class=RedirectResponse, status_code=302, responses=_REDIRECT | responses(400))
def start_github_sign_in(request: Request, ctx: Ctx,
                         next: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    """Sends the browser to GitHub to authorize Runix. The `state` it carries is also kept in a signed cookie."""
    state = secrets.token_urlsafe(24)
    try:
        url = github.authorization_url(ctx, state)
    except RunixError as exc:
        return _refuse(request, "Sign-in with GitHub is not available", exc)
    response = RedirectResponse(url, status_code=302)
    expires = int(time.time()) + STATE_TTL_SECONDS
    web.set_cookie(request, response, web.GITHUB_STATE_COOKIE,
                   web.sign(ctx, f"{state}|{expires}|{web.safe_next(next)}"), max_age=STATE_TTL_SECONDS)
    return response


@router.get("/callback", response_class=RedirectResponse, status_code=302,
            responses=_REDIRECT | responses(400, 403))
def github_callback(request: Request, ctx: Ctx, db: Db,
                    code: Annotated[str | None, Query(max_length=200)] = None,
                    state: Annotated[str | None, Query(max_length=200)] = None,
                    error: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """GitHub sends the browser back here: the code is exchanged, the account found or made, a session started."""
    # state|expires|next: the page to return to may itself hold a "|", so only the first two split off.
    kept = (web.unsign(ctx, request.cookies.get(web.GITHUB_STATE_COOKIE)) or "").split("|", 2)
    title = "Could not sign in with GitHub"
    if error:
        return _refuse(request, title, BadRequest("GitHub did not authorize Runix (the request was cancelled). "
                                                  "You can try again or sign in with an email code."))
    if len(kept) != 3 or not state or not hmac.compare_digest(kept[0], state) or int(kept[1]) < time.time():
        return _refuse(request, title, BadRequest("This sign-in attempt expired or did not start here (the state "
                                                  "did not match). Start again from the sign-in page."))
    if not code:
        return _refuse(request, title, BadRequest("GitHub did not send an authorization code. Start again."))
    try:
        identity = github.fetch_identity(ctx, code)
        _, session_token, _ = github.sign_in(db, identity)
    except RunixError as exc:
        return _refuse(request, title, exc)
    response = RedirectResponse(web.safe_next(kept[2]), status_code=302)
    web.clear_cookie(request, response, web.GITHUB_STATE_COOKIE)
    web.start_session(request, response, session_token)
    return response


def _refuse(request: Request, title: str, exc: RunixError) -> Response:
    """A page for a browser; the API's `{"error", "code"}` for any other client."""
    if "text/html" in request.headers.get("accept", ""):
        response: Response = web.error_page(request, exc.status, exc.message, title)
    else:
        response = error_response(exc.status, exc.code, exc.message)
    web.clear_cookie(request, response, web.GITHUB_STATE_COOKIE)
    return response
