"""Sign-in by emailed code, session and CLI tokens, and checking a bearer token."""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog
from sqlalchemy import Select, bindparam, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state

from runix.auth.tokens import hash_token, new_code, new_token
from runix.context import Runix
from runix.db.models import Account, LoginCode, Token, utcnow
from runix.db.session import Database
from runix.errors import NotFound, RateLimited, Unauthorized
from runix.ids import new_id
from runix.plans import DEFAULT_PLAN
from runix.services.pagination import Page, page

log = structlog.get_logger("runix.auth")

T = TypeVar("T")

CODE_TTL = timedelta(minutes=10)
CODE_MAX_TRIES = 5
SESSION_TTL = timedelta(days=30)
CODES_PER_HOUR_PER_EMAIL = 10
_WRONG_CODE = "That code is wrong or has expired. Ask for a new one with POST /auth/email."


def _normalise_email(email: str) -> str:
    return email.strip().lower()


def request_code(ctx: Runix, s: Session, email: str) -> None:
    """Mails a one-time 6-digit code and a sign-in link; earlier unused codes for the address stop working."""
    email = _normalise_email(email)
    ctx.limiter.hit("auth-email", email, CODES_PER_HOUR_PER_EMAIL, "hour", "sign-in codes requested for this address")
    code = new_code()
    link_token = secrets.token_urlsafe(24)
    now = utcnow()
    s.execute(update(LoginCode).where(LoginCode.email == email, LoginCode.consumed_at.is_(None))
              .values(consumed_at=now))
    s.add(LoginCode(email=email, code_hash=ctx.vault.keyed_hash(code), link_hash=ctx.vault.keyed_hash(link_token),
                    created_at=now, expires_at=now + CODE_TTL))
    s.commit()
    link = f"{ctx.settings.api_url}/dashboard/login/link?token={link_token}"
    ctx.mailer.send(
        email,
        f"Your Runix sign-in code: {code}",
        f"Your Runix sign-in code is {code}\n\nIt expires in 10 minutes. Or sign in with this link:\n{link}\n\n"
        "If you did not ask to sign in, ignore this message.\n",
    )
    log.info("sign-in code sent", email=email, code=code if not ctx.settings.smtp_url else "(mailed)")


def verify_code(ctx: Runix, s: Session, email: str, code: str) -> tuple[Account, str, Token]:
    """Checks a mailed code; creates the account on first sign-in; returns a new session token."""
    email = _normalise_email(email)
    login = s.scalars(
        select(LoginCode).where(LoginCode.email == email, LoginCode.consumed_at.is_(None))
        .order_by(LoginCode.id.desc()).limit(1)
    ).first()
    now = utcnow()
    if login is None or login.expires_at <= now:
        raise Unauthorized(_WRONG_CODE)
    # Count the try before judging it, in one statement, so concurrent guesses cannot share a try.
    counted = s.execute(update(LoginCode).where(LoginCode.id == login.id, LoginCode.consumed_at.is_(None),
                                                LoginCode.attempts < CODE_MAX_TRIES)
                        .values(attempts=LoginCode.attempts + 1)).rowcount
    s.commit()
    if not counted:
        s.refresh(login)
        if login.consumed_at is not None:
            raise Unauthorized(_WRONG_CODE)
        raise RateLimited("Too many wrong codes. Ask for a new one with POST /auth/email.",
                          retry_after=max(1, int((login.expires_at - now).total_seconds())))
    if not hmac.compare_digest(login.code_hash, ctx.vault.keyed_hash(code.strip())):
        raise Unauthorized(_WRONG_CODE)
    if not _consume(s, login, now):
        raise Unauthorized(_WRONG_CODE)
    account = account_for_email(s, email)
    value, token = issue_token(s, account, "session", "Email sign-in")
    s.commit()
    return account, value, token


def _consume(s: Session, login: LoginCode, now: datetime) -> bool:
    """Marks the code used; False when it already was, even by a request at the same moment."""
    done = s.execute(update(LoginCode).where(LoginCode.id == login.id, LoginCode.consumed_at.is_(None))
                     .values(consumed_at=now)).rowcount
    if not done:
        s.rollback()
    return bool(done)


def verify_link(ctx: Runix, s: Session, link_token: str) -> tuple[Account, str, Token]:
    """Signs in with the link from the sign-in mail (the dashboard's route)."""
    login = s.scalars(select(LoginCode).where(LoginCode.link_hash == ctx.vault.keyed_hash(link_token))).first()
    now = utcnow()
    if login is None or login.expires_at <= now or not _consume(s, login, now):
        raise Unauthorized("That sign-in link is wrong, used or expired. Ask for a new one.")
    account = account_for_email(s, login.email)
    value, token = issue_token(s, account, "session", "Email link sign-in")
    s.commit()
    return account, value, token


def account_for_email(s: Session, email: str, name: str | None = None) -> Account:
    """The account with this (verified) address, made on first sign-in."""
    email = _normalise_email(email)
    account = s.scalars(select(Account).where(Account.email == email)).first()
    if account is None:
        account = Account(id=new_id("usr"), email=email, name=name, plan=DEFAULT_PLAN)
        s.add(account)
        s.flush()
    return account


def issue_token(s: Session, account: Account, kind: str, name: str) -> tuple[str, Token]:
    value, digest = new_token(kind)
    token = Token(id=new_id("tok"), account_id=account.id, kind=kind, name=name[:100], token_hash=digest,
                  expires_at=utcnow() + SESSION_TTL if kind == "session" else None)
    s.add(token)
    s.flush()
    return value, token


def create_cli_token(s: Session, account: Account, name: str | None) -> tuple[str, Token]:
    value, token = issue_token(s, account, "cli", name or f"CLI token {datetime.now(UTC):%Y-%m-%d %H:%M}")
    s.commit()
    return value, token


# Built once: composing a statement costs more than running it, and these run on every API request.
_TOKEN_AND_ACCOUNT = (select(Token, Account).join(Account, Account.id == Token.account_id)
                      .where(Token.token_hash == bindparam("token_hash")))
_TOKEN_COLUMNS = tuple(c.key for c in Token.__table__.c)
_ACCOUNT_COLUMNS = tuple(c.key for c in Account.__table__.c)
_TOKEN_AND_ACCOUNT_ROW = (
    select(*(c.label(f"t_{c.key}") for c in Token.__table__.c), *(c.label(f"a_{c.key}") for c in Account.__table__.c))
    .join_from(Token, Account, Account.id == Token.account_id)
    .where(Token.token_hash == bindparam("token_hash"))
)
_INVALID = "Invalid token. Sign in again (runix login) or create a new token."


def _usable(token: Token) -> None:
    if token.revoked_at is not None:
        raise Unauthorized("This token was revoked. Sign in again (runix login) or create a new token.")
    if token.expires_at is not None and token.expires_at <= utcnow():
        raise Unauthorized("This token has expired. Sign in again (runix login).")


def authenticate(s: Session, value: str) -> tuple[Account, Token]:
    """The account and token behind a bearer token; 401 when it is unknown, revoked or expired."""
    if not value or len(value) > 200:
        raise Unauthorized(_INVALID)
    row = s.execute(_TOKEN_AND_ACCOUNT, {"token_hash": hash_token(value)}).first()
    if row is None:
        raise Unauthorized(_INVALID)
    token, account = row
    _usable(token)
    return account, token


def authenticate_fast(db: Database, value: str) -> tuple[Account, Token]:
    """`authenticate` for the API's per-request path: one raw read, then detached Account and Token objects.

    They carry every column; to change one, `session.add()` the object first (it then saves as an UPDATE).
    """
    if not value or len(value) > 200:
        raise Unauthorized(_INVALID)
    rows = db.raw.rows(_TOKEN_AND_ACCOUNT_ROW, {"token_hash": hash_token(value)})
    if not rows:
        raise Unauthorized(_INVALID)
    row = rows[0]
    token = _detached(Token, {k: row[f"t_{k}"] for k in _TOKEN_COLUMNS})
    _usable(token)
    return _detached(Account, {k: row[f"a_{k}"] for k in _ACCOUNT_COLUMNS}), token


def _detached(cls: type[T], values: dict) -> T:
    """A detached instance holding `values` as if loaded from its row: what the ORM's loader does, without a query
    (and several times cheaper than `cls(**values)` followed by `make_transient_to_detached`)."""
    mapper = sa_inspect(cls)
    obj = mapper.class_manager.new_instance()
    obj.__dict__.update(values)
    instance_state(obj).key = mapper.identity_key_from_primary_key([values["id"]])
    return obj


def list_tokens(s: Session, account: Account) -> list[Token]:
    """Every active token of the account, newest first (the dashboard shows them all on one page)."""
    return list(s.scalars(_active_tokens(account).order_by(Token.id.desc())))


def list_tokens_page(s: Session, account: Account, limit: int | None, cursor: str | None) -> Page[Token]:
    """One page of `list_tokens` (GET /auth/tokens)."""
    return page(s, _active_tokens(account), Token.id, limit, cursor)


def _active_tokens(account: Account) -> Select:
    return (select(Token).where(Token.account_id == account.id, Token.revoked_at.is_(None))
            .where((Token.expires_at.is_(None)) | (Token.expires_at > utcnow())))


def revoke_token(s: Session, account: Account, token_id: str) -> Token:
    token = s.get(Token, token_id)
    if token is None or token.account_id != account.id or token.revoked_at is not None:
        raise NotFound(f"Token {token_id} not found")
    token.revoked_at = utcnow()
    s.commit()
    return token
