"""/auth: sign-in by email code, CLI tokens, token list and revocation, logout."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from runix.api.deps import Ctx, CurrentAccount, CurrentToken, Db, SessionToken
from runix.api.errors import AUTHED, responses
from runix.api.routes.pages import Cursor, Limit, link_next
from runix.schemas import (
    CliTokenCreate,
    EmailSent,
    EmailSignIn,
    EmailVerify,
    LoggedOut,
    SessionPublic,
    TokenCreated,
    TokenPublic,
    UserPublic,
)
from runix.services import auth

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/email", response_model=EmailSent, responses=responses(400, 429, 500))
def request_email_code(body: EmailSignIn, ctx: Ctx, db: Db) -> EmailSent:
    """Mails a one-time 6-digit code (valid 10 minutes) and a sign-in link to the address."""
    auth.request_code(ctx, db, body.email)
    return EmailSent(sent=True)


@router.post("/email/verify", response_model=SessionPublic, responses=responses(400, 401, 429, 500))
def verify_email_code(body: EmailVerify, ctx: Ctx, db: Db) -> SessionPublic:
    """Exchanges the mailed code for a session token; the account is created on first sign-in."""
    account, value, token = auth.verify_code(ctx, db, body.email, body.code)
    return SessionPublic(token=value, expires_at=token.expires_at, user=UserPublic.model_validate(account))


@router.post("/cli-token", status_code=201, response_model=TokenCreated, responses=AUTHED | responses(403))
def create_cli_token(pair: SessionToken, db: Db, body: CliTokenCreate | None = None) -> TokenCreated:
    """Creates a long-lived CLI token. Needs a session token; the value is shown only in this response."""
    value, token = auth.create_cli_token(db, pair[0], body.name if body else None)
    return TokenCreated(token=value, **TokenPublic.model_validate(token).model_dump())


@router.get("/tokens", response_model=list[TokenPublic], responses=AUTHED)
def list_tokens(request: Request, response: Response, account: CurrentAccount, db: Db,
                limit: Limit = 20, cursor: Cursor = None) -> list[TokenPublic]:
    """Your active tokens (never their values), newest first."""
    page = auth.list_tokens_page(db, account, limit, cursor)
    link_next(request, response, page.next_cursor)
    return [TokenPublic.model_validate(t) for t in page.items]


@router.delete("/tokens/{token_id}", response_model=TokenPublic, responses=AUTHED)
def revoke_token(token_id: str, account: CurrentAccount, db: Db) -> TokenPublic:
    """Revokes one of your tokens; it answers 401 from then on."""
    return TokenPublic.model_validate(auth.revoke_token(db, account, token_id))


@router.post("/logout", response_model=LoggedOut, responses=AUTHED)
def logout(pair: CurrentToken, db: Db) -> LoggedOut:
    """Revokes the token used for this call."""
    auth.revoke_token(db, pair[0], pair[1].id)
    return LoggedOut(revoked=True)
