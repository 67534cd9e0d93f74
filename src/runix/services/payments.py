"""Paid plans through a payment provider that speaks Stripe's API: a hosted checkout session per upgrade, and
webhooks signed with the endpoint's secret (the `Stripe-Signature` header: `t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`). Runix keeps no card data and no subscription table: what a session or subscription is for travels
in its metadata (`account_id`, `plan`), which only Runix (with the secret key) can set."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from runix.errors import BadRequest, NotFound, RunixError
from runix.plans import Plan
from runix.settings import Settings

log = structlog.get_logger("runix.payments")

TIMEOUT = 10.0
SIGNATURE_TOLERANCE_SECONDS = 300  # older signed events are refused, so a captured one cannot be replayed later


class PaymentsUnavailable(RunixError):
    status, code = 503, "SERVICE_UNAVAILABLE"

    def __init__(self, message: str):
        super().__init__(message, headers={"Retry-After": "30"})


class BadSignature(BadRequest):
    code = "BAD_SIGNATURE"


@dataclass(frozen=True)
class Checkout:
    id: str
    url: str


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    object: dict[str, Any]

    @property
    def metadata(self) -> dict[str, str]:
        meta = self.object.get("metadata")
        return meta if isinstance(meta, dict) else {}


def configured(settings: Settings) -> bool:
    return bool(settings.payments_secret_key)


def _request(settings: Settings, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    try:
        r = httpx.request(method, f"{settings.payments_api_url.rstrip('/')}{path}", timeout=TIMEOUT,
                          auth=(settings.payments_secret_key or "", ""), **kwargs)
    except httpx.HTTPError as exc:
        log.warning("payment provider unreachable", path=path, error=str(exc))
        raise PaymentsUnavailable("The payment provider cannot be reached; try again in a minute") from exc
    if r.status_code >= 400:
        log.warning("payment provider refused", path=path, status=r.status_code, body=r.text[:500])
        raise PaymentsUnavailable(f"The payment provider refused the request ({r.status_code}); try again later")
    return r.json()


def create_checkout(settings: Settings, *, account_id: str, email: str, plan: Plan, success_url: str,
                    cancel_url: str) -> Checkout:
    """A hosted checkout page for a monthly subscription to `plan`; the webhook tells when it is paid."""
    metadata = {"account_id": account_id, "plan": plan.name}
    form = {
        "mode": "subscription",
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": account_id,
        "customer_email": email,
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": settings.payments_currency,
        "line_items[0][price_data][unit_amount]": str(plan.price_per_month_usd * 100),
        "line_items[0][price_data][recurring][interval]": "month",
        "line_items[0][price_data][product_data][name]": f"Runix {plan.title}",
    }
    for key, value in metadata.items():
        form[f"metadata[{key}]"] = value
        form[f"subscription_data[metadata][{key}]"] = value
    session = _request(settings, "POST", "/v1/checkout/sessions", data=form)
    return Checkout(id=str(session["id"]), url=str(session["url"]))


def cancel_subscriptions(settings: Settings, account_id: str) -> int:
    """Ends the account's active subscriptions at the provider (a move down to a cheaper plan); how many."""
    found = _request(settings, "GET", "/v1/subscriptions/search",
                     params={"query": f"metadata['account_id']:'{account_id}' AND status:'active'"})
    ended = 0
    for subscription in found.get("data", []):
        _request(settings, "DELETE", f"/v1/subscriptions/{subscription['id']}")
        ended += 1
    return ended


def parse_webhook(settings: Settings, body: bytes, signature: str | None, now: float | None = None) -> WebhookEvent:
    """The event in a webhook, once its signature is checked; raises BadSignature otherwise."""
    secret = settings.payments_webhook_secret
    if not secret:  # this server takes no payments: there is no webhook to call
        raise NotFound("This server takes no payments (no RUNIX_PAYMENTS_WEBHOOK_SECRET), so it has no webhook")
    parts: dict[str, list[str]] = {}
    for item in (signature or "").split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise BadSignature("Missing or malformed Stripe-Signature header") from None
    if abs((now if now is not None else time.time()) - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        raise BadSignature("The event's signature is too old")
    expected = _digest(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, given) for given in parts.get("v1", [])):
        raise BadSignature("The event's signature does not match")
    try:
        event = json.loads(body)
        return WebhookEvent(id=str(event["id"]), type=str(event["type"]), object=dict(event["data"]["object"]))
    except (ValueError, KeyError, TypeError):
        raise BadSignature("The signed event is not one Runix can read") from None


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The Stripe-Signature header for `body` (what the provider sends; Runix's tests and tools use it too)."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
