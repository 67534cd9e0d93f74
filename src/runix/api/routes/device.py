"""/auth/device: the OAuth 2.0 device authorization grant (RFC 8628) behind `runix login --web`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from runix.api.deps import Ctx, Db, SessionToken
from runix.api.errors import AUTHED, responses
from runix.services import device

router = APIRouter(prefix="/auth/device", tags=["auth"])

STARTS_PER_MINUTE_PER_ADDRESS = 60
NO_STORE = {"Cache-Control": "no-store"}


class DeviceStart(BaseModel):
    client_name: str | None = Field(None, max_length=100, description="Shown to the person approving, e.g. a host.")
    interval: int | None = Field(None, ge=device.MIN_INTERVAL, le=device.MAX_INTERVAL,
                                 description="Seconds between polls the client wants (default: the server's).")


class DeviceStarted(BaseModel):
    device_code: str = Field(description="Secret: the CLI polls /auth/device/token with it.")
    user_code: str = Field(description="Shown to the person, who enters or confirms it in the dashboard.")
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class DeviceTokenRequest(BaseModel):
    device_code: str = Field(max_length=200)
    grant_type: str = Field(max_length=100, examples=[device.GRANT_TYPE])


class DeviceToken(BaseModel):
    access_token: str = Field(description="A CLI token (rnx_c_…), handed out once.")
    token_type: str = "bearer"
    id: str
    name: str
    created_at: datetime


class DeviceGrantErrorBody(BaseModel):
    error: str = Field(description="authorization_pending, slow_down, access_denied, expired_token or invalid_grant")
    code: str = "BAD_REQUEST"
    error_description: str


class DeviceDecision(BaseModel):
    user_code: str = Field(min_length=1, max_length=20)
    approve: bool = True


class DeviceDecided(BaseModel):
    user_code: str
    status: str = Field(description="approved or denied")
    client_name: str


@router.post("", response_model=DeviceStarted, responses=responses(400, 429, 500))
def start_device_login(request: Request, ctx: Ctx, db: Db, body: DeviceStart | None = None) -> DeviceStarted:
    """Starts a browser login for a CLI: show `user_code` and `verification_uri`, then poll /auth/device/token."""
    client = request.client.host if request.client else "unknown"
    ctx.limiter.hit("device-start", client, STARTS_PER_MINUTE_PER_ADDRESS, "minute", "device logins started")
    started = device.start(ctx, db, body.client_name if body else None, body.interval if body else None)
    row = started.authorization
    uri = f"{ctx.settings.api_url}/dashboard/device"
    return DeviceStarted(device_code=started.device_code, user_code=row.user_code, verification_uri=uri,
                         verification_uri_complete=f"{uri}?user_code={row.user_code}",
                         expires_in=int(device.EXPIRES_IN.total_seconds()), interval=row.interval)


_TOKEN_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": DeviceTokenRequest.model_json_schema()},
    "application/x-www-form-urlencoded": {"schema": DeviceTokenRequest.model_json_schema()},
}}}


@router.post("/token", response_model=DeviceToken, openapi_extra=_TOKEN_BODY,
             responses={400: {"model": DeviceGrantErrorBody, "description": "Not yet approved, denied, expired, "
                                                                            "or polling too fast (RFC 8628 §3.5)"}})
async def poll_device_token(request: Request, ctx: Ctx, db: Db) -> Any:
    """Polled by the CLI every `interval` seconds; 400 `authorization_pending` until approved, then a CLI token."""
    try:
        fields = await _token_request(request)
        account, value, token = device.poll(db, fields.device_code, fields.grant_type)
    except device.DeviceGrantError as exc:
        return JSONResponse({"error": exc.error, "code": "BAD_REQUEST", "error_description": exc.description},
                            status_code=400, headers=NO_STORE)
    body = DeviceToken(access_token=value, id=token.id, name=token.name, created_at=token.created_at)
    return JSONResponse(body.model_dump(mode="json"), headers=NO_STORE)


async def _token_request(request: Request) -> DeviceTokenRequest:
    """RFC 8628 clients send a form; the Runix CLI may send JSON. Both are accepted."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/x-www-form-urlencoded":
            raw: Any = dict((await request.form()).items())
        else:
            raw = json.loads(await request.body() or b"{}")
        return DeviceTokenRequest.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        raise device.DeviceGrantError("invalid_request", "Send device_code and grant_type as JSON or as a form") \
            from exc


@router.post("/approve", response_model=DeviceDecided, responses=AUTHED | responses(403, 409))
def decide_device_login(body: DeviceDecision, pair: SessionToken, db: Db) -> DeviceDecided:
    """Approves (or, with `approve: false`, denies) the CLI login showing `user_code`, for your account."""
    row = device.decide(db, pair[0], body.user_code, body.approve)
    return DeviceDecided(user_code=row.user_code, status=row.status, client_name=row.client_name)
