"""OAuth 2.0 device authorization grant (RFC 8628): how `runix login --web` gets a CLI token through the browser.

The CLI starts an authorization and shows its user code; a signed-in person approves that code on the dashboard
(or through POST /auth/device/approve); the CLI's polling then receives a CLI token, exactly once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from runix.auth.tokens import hash_token
from runix.context import Runix
from runix.db.models import Account, DeviceAuthorization, Token, utcnow
from runix.errors import Conflict, NotFound
from runix.ids import new_id
from runix.services import auth

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
EXPIRES_IN = timedelta(minutes=10)
SLOW_DOWN_STEP = 5  # seconds added to the interval each time a client polls too fast (RFC 8628 §3.5)
MIN_INTERVAL, MAX_INTERVAL = 1, 60
# No vowels (no words by accident) and no look-alike characters; 20^8 codes.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"


class DeviceGrantError(Exception):
    """An RFC 8628 token-endpoint error: `error` is the protocol's code, the API answers 400 with it."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass
class Started:
    authorization: DeviceAuthorization
    device_code: str


def new_user_code() -> str:
    raw = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def normalise_user_code(value: str) -> str:
    """People type codes loosely: case, spaces and the dash do not matter."""
    raw = "".join(ch for ch in value.upper() if ch.isalnum())
    return f"{raw[:4]}-{raw[4:]}" if len(raw) == 8 else raw


def start(ctx: Runix, s: Session, client_name: str | None, interval: int | None = None) -> Started:
    device_code = secrets.token_urlsafe(32)
    now = utcnow()
    wanted = interval if interval is not None else ctx.settings.device_poll_interval
    row = DeviceAuthorization(
        id=new_id("dev"), device_code_hash=hash_token(device_code), user_code=_free_user_code(s),
        client_name=(client_name or "runix CLI").strip()[:100] or "runix CLI",
        interval=min(MAX_INTERVAL, max(MIN_INTERVAL, wanted)),
        status="pending", created_at=now, expires_at=now + EXPIRES_IN,
    )
    s.add(row)
    s.commit()
    return Started(row, device_code)


def _free_user_code(s: Session) -> str:
    while True:
        code = new_user_code()
        if s.scalar(select(DeviceAuthorization.id).where(DeviceAuthorization.user_code == code)) is None:
            return code


def pending_by_user_code(s: Session, user_code: str) -> DeviceAuthorization:
    """The authorization waiting for a person's decision; unknown, expired or decided codes are not found."""
    row = s.scalars(select(DeviceAuthorization)
                    .where(DeviceAuthorization.user_code == normalise_user_code(user_code))).first()
    if row is None or row.expires_at <= utcnow():
        raise NotFound("That code is unknown or has expired. Run `runix login --web` again for a new one.")
    if row.status != "pending":
        raise _already_decided(row)
    return row


def _already_decided(row: DeviceAuthorization) -> Conflict:
    return Conflict(f"That code was already {row.status}. Run `runix login --web` again for a new one.")


def decide(s: Session, account: Account, user_code: str, approve: bool) -> DeviceAuthorization:
    """Approves (for this account) or denies the device login showing `user_code`."""
    row = pending_by_user_code(s, user_code)
    # Compare-and-set: of two decisions at the same moment only one lands (the other gets the 409 it would get later).
    decided = s.execute(update(DeviceAuthorization)
                        .where(DeviceAuthorization.id == row.id, DeviceAuthorization.status == "pending")
                        .values(status="approved" if approve else "denied",
                                account_id=account.id if approve else None)).rowcount
    s.commit()
    s.refresh(row)
    if not decided:
        raise _already_decided(row)
    return row


def poll(s: Session, device_code: str, grant_type: str | None) -> tuple[Account, str, Token]:
    """The token endpoint: raises DeviceGrantError until approved, then hands out one CLI token, once."""
    if grant_type != GRANT_TYPE:
        raise DeviceGrantError("unsupported_grant_type", f"grant_type must be {GRANT_TYPE}")
    if not device_code:
        raise DeviceGrantError("invalid_request", "device_code is required")
    row = s.scalars(select(DeviceAuthorization)
                    .where(DeviceAuthorization.device_code_hash == hash_token(device_code))).first()
    if row is None or row.status == "used":
        raise DeviceGrantError("invalid_grant", "Unknown or already used device code. Start the login again.")
    now = utcnow()
    if row.expires_at <= now:
        raise DeviceGrantError("expired_token", "The code expired before it was approved. Start the login again.")
    if row.status == "denied":
        raise DeviceGrantError("access_denied", "The login was denied in the browser.")
    too_soon = row.last_polled_at is not None and (now - row.last_polled_at).total_seconds() < row.interval * 0.8
    row.last_polled_at = now
    if row.status == "pending":
        if too_soon:
            row.interval = min(MAX_INTERVAL, row.interval + SLOW_DOWN_STEP)
            s.commit()
            raise DeviceGrantError("slow_down", f"Polling too fast: wait {row.interval} seconds between requests.")
        s.commit()
        raise DeviceGrantError("authorization_pending", "Waiting for the code to be approved in the browser.")
    # Approved: claim it atomically so two concurrent polls cannot both receive a token.
    claimed = s.execute(update(DeviceAuthorization)
                        .where(DeviceAuthorization.id == row.id, DeviceAuthorization.status == "approved")
                        .values(status="used", last_polled_at=now)).rowcount
    if claimed != 1:
        s.rollback()
        raise DeviceGrantError("invalid_grant", "Unknown or already used device code. Start the login again.")
    account = s.get(Account, row.account_id)
    if account is None:
        s.rollback()
        raise DeviceGrantError("access_denied", "The approving account no longer exists.")
    value, token = auth.issue_token(s, account, "cli", f"{row.client_name} (browser login {now:%Y-%m-%d %H:%M})")
    s.commit()
    return account, value, token
