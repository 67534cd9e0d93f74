"""Sign-in with GitHub: the OAuth 2.0 authorization-code flow (authlib's client), then the GitHub identity is
linked to the Runix account with the same verified primary email."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import httpx
import structlog
from authlib.deprecate import AuthlibDeprecationWarning
from sqlalchemy import select
from sqlalchemy.orm import Session

from runix.context import Runix
from runix.db.models import Account, Token
from runix.errors import BadRequest, Forbidden
from runix.services import auth

# authlib 1.9 nudges httpx users towards its `httpx2` package at import; Runix uses httpx itself, so the notice would
# only add noise to every server start.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning, message=".*httpx2.*")
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import OAuth2Client

log = structlog.get_logger("runix.github")

SCOPE = "read:user user:email"
TIMEOUT = 10.0


@dataclass(frozen=True)
class GitHubIdentity:
    id: int
    login: str
    name: str | None
    verified_email: str | None  # the primary address, only when GitHub says it is verified


def configured(ctx: Runix) -> bool:
    return bool(ctx.settings.github_client_id and ctx.settings.github_client_secret)


def callback_url(ctx: Runix) -> str:
    return f"{ctx.settings.api_url}/auth/github/callback"


def _client(ctx: Runix) -> OAuth2Client:
    if not configured(ctx):
        raise BadRequest("Sign-in with GitHub is not set up on this server: set RUNIX_GITHUB_CLIENT_ID and "
                         "RUNIX_GITHUB_CLIENT_SECRET")
    return OAuth2Client(ctx.settings.github_client_id, ctx.settings.github_client_secret, scope=SCOPE,
                        redirect_uri=callback_url(ctx), token_endpoint_auth_method="client_secret_post",
                        timeout=TIMEOUT)


def authorization_url(ctx: Runix, state: str) -> str:
    """Where to send the browser; GitHub sends it back to the callback with `code` and this `state`."""
    with _client(ctx) as client:
        url, _ = client.create_authorization_url(f"{ctx.settings.github_base_url.rstrip('/')}/login/oauth/authorize",
                                                 state=state)
    return url


def fetch_identity(ctx: Runix, code: str) -> GitHubIdentity:
    """Exchanges the code for an access token, then reads the user and their email addresses."""
    api = ctx.settings.github_api_url.rstrip("/")
    try:
        with _client(ctx) as client:
            client.fetch_token(f"{ctx.settings.github_base_url.rstrip('/')}/login/oauth/access_token", code=code,
                               grant_type="authorization_code")
            headers = {"Accept": "application/vnd.github+json"}
            user = client.get(f"{api}/user", headers=headers)
            user.raise_for_status()
            emails = client.get(f"{api}/user/emails", headers=headers)
            emails.raise_for_status()
    except OAuthError as exc:
        raise BadRequest(f"GitHub refused the sign-in ({exc.error}). Try signing in again.") from exc
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("github unreachable or answered badly", error=str(exc))
        raise BadRequest("Could not complete sign-in with GitHub: GitHub did not answer as expected. "
                         "Try again in a moment.") from exc
    profile = user.json()
    primary = next((e for e in emails.json() if isinstance(e, dict) and e.get("primary")), None)
    verified = primary["email"] if primary and primary.get("verified") and primary.get("email") else None
    return GitHubIdentity(id=int(profile["id"]), login=str(profile.get("login") or ""),
                          name=profile.get("name"), verified_email=verified)


def sign_in(s: Session, identity: GitHubIdentity) -> tuple[Account, str, Token]:
    """The account already linked to this GitHub user, else the one with its verified email (made if new)."""
    account = s.scalars(select(Account).where(Account.github_id == identity.id)).first()
    if account is None:
        if not identity.verified_email:
            raise Forbidden(f"Your GitHub account {identity.login} has no verified primary email address. Verify it "
                            "on GitHub (Settings → Emails), or sign in with an email code instead.")
        account = auth.account_for_email(s, identity.verified_email, name=identity.name)
        account.github_id = identity.id
    account.github_login = identity.login
    if not account.name and identity.name:
        account.name = identity.name
    value, token = auth.issue_token(s, account, "session", "GitHub sign-in")
    s.commit()
    return account, value, token
