"""Dependencies shared by the routes, as `Annotated` aliases: the context, a DB session, the signed-in account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from runix.context import Runix
from runix.db.models import Account, Token
from runix.errors import Forbidden, Unauthorized
from runix.services import auth as auth_service
from runix.services import billing

bearer = HTTPBearer(auto_error=False, description="A session (rnx_s_…) or CLI (rnx_c_…) token")


# Every dependency here is `async def`: none waits on the network for long, and running them on the event loop
# saves a thread-pool hop each (sync dependencies run in threads, where they fight the loop for the GIL).
async def get_ctx(request: Request) -> Runix:
    return request.app.state.runix


async def get_db(request: Request) -> AsyncIterator[Session]:
    # Opening a session does no I/O, so this runs on the event loop without a thread hop.
    session = request.app.state.runix.db.sessions()
    try:
        yield session
    finally:
        session.close()


Ctx = Annotated[Runix, Depends(get_ctx)]
Db = Annotated[Session, Depends(get_db)]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _authenticated(request: Request, credentials: HTTPAuthorizationCredentials | None) -> tuple[Account, Token]:
    """Authenticates the bearer token, then counts the request against the account's rate limit (once a request).

    Each alias below calls this directly rather than through another dependency: a level of dependencies costs
    about as much as the token check itself.
    """
    pair = request.scope.get("runix.auth")
    if pair is not None:
        return pair
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthorized("Malformed Authorization header: send 'Authorization: Bearer <token>'")
        raise Unauthorized("Missing token: send 'Authorization: Bearer <token>' (get one with runix login)")
    ctx: Runix = request.app.state.runix
    account, token = auth_service.authenticate_fast(ctx.db, credentials.credentials)
    quota = billing.hit_request_limit(ctx, account.id, account.plan)
    request.state.rate_limit_headers = quota.headers()
    request.state.account_id = account.id
    request.scope["runix.auth"] = pair = (account, token)
    return pair


async def current_token(request: Request, credentials: Credentials) -> tuple[Account, Token]:
    return _authenticated(request, credentials)


async def current_account(request: Request, credentials: Credentials) -> Account:
    return _authenticated(request, credentials)[0]


async def current_session_token(request: Request, credentials: Credentials) -> tuple[Account, Token]:
    pair = _authenticated(request, credentials)
    if pair[1].kind != "session":
        raise Forbidden("CLI tokens are made with a session token (from email or GitHub sign-in), "
                        "not with another CLI token")
    return pair


CurrentAccount = Annotated[Account, Depends(current_account)]
CurrentToken = Annotated[tuple[Account, Token], Depends(current_token)]
SessionToken = Annotated[tuple[Account, Token], Depends(current_session_token)]
