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


async def current_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> tuple[Account, Token]:
    """Authenticates the bearer token, then counts the request against the account's rate limit."""
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthorized("Malformed Authorization header: send 'Authorization: Bearer <token>'")
        raise Unauthorized("Missing token: send 'Authorization: Bearer <token>' (get one with runix login)")
    ctx: Runix = request.app.state.runix
    account, token = auth_service.authenticate_fast(ctx.db, credentials.credentials)
    request.state.rate_limit_headers = None
    quota = billing.hit_request_limit(ctx, account.id, account.plan)
    request.state.rate_limit_headers = quota.headers()
    request.state.account_id = account.id
    return account, token


async def current_account(pair: Annotated[tuple[Account, Token], Depends(current_token)]) -> Account:
    return pair[0]


async def current_session_token(
    pair: Annotated[tuple[Account, Token], Depends(current_token)],
) -> tuple[Account, Token]:
    if pair[1].kind != "session":
        raise Forbidden("CLI tokens are made with a session token (from email or GitHub sign-in), "
                        "not with another CLI token")
    return pair


CurrentAccount = Annotated[Account, Depends(current_account)]
CurrentToken = Annotated[tuple[Account, Token], Depends(current_token)]
SessionToken = Annotated[tuple[Account, Token], Depends(current_session_token)]
