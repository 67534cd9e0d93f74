"""A local payment provider that speaks the part of Stripe's API Runix uses, over real HTTP, for billing tests
without the internet.

API (`/v1`, the secret key as HTTP basic user, form-encoded bodies as Stripe takes them): `POST /v1/checkout/sessions`
makes a hosted checkout page; `GET /v1/subscriptions/search?query=...` finds subscriptions by metadata and status;
`DELETE /v1/subscriptions/{id}` ends one. The hosted page (`GET /c/pay/{id}`) has a Pay button (`POST /c/pay/{id}`)
that marks the session paid, starts its subscription, sends the signed `checkout.session.completed` webhook and sends
the browser to the session's success_url, as Stripe Checkout does. Webhooks carry `Stripe-Signature:
t=<time>,v1=<HMAC-SHA256 of "<t>.<body>" with the endpoint secret>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.fake_http import LocalService


def _nested(form: dict[str, str]) -> dict[str, Any]:
    """Stripe's bracket form encoding (`a[b][0][c]=1`) as nested dicts (list indexes stay string keys)."""
    out: dict[str, Any] = {}
    for key, value in form.items():
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


@dataclass
class FakePayments(LocalService):
    secret_key: str = field(default_factory=lambda: f"sk_test_{secrets.token_hex(12)}")
    webhook_secret: str = field(default_factory=lambda: f"whsec_{secrets.token_hex(16)}")
    webhook_url: str | None = None  # where events go: the Runix server's /billing/webhook
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    delivered: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # event, the server's status

    def env(self) -> dict[str, str]:
        """The RUNIX_PAYMENTS_* settings pointing a Runix server at this provider."""
        return {"RUNIX_PAYMENTS_API_URL": self.url, "RUNIX_PAYMENTS_SECRET_KEY": self.secret_key,
                "RUNIX_PAYMENTS_WEBHOOK_SECRET": self.webhook_secret}

    # What the provider does
    def signature(self, body: bytes, timestamp: int | None = None, secret: str | None = None) -> str:
        t = int(time.time()) if timestamp is None else timestamp
        digest = hmac.new((secret or self.webhook_secret).encode(), f"{t}.".encode() + body, hashlib.sha256)
        return f"t={t},v1={digest.hexdigest()}"

    def send_event(self, event_type: str, obj: dict[str, Any]) -> int:
        """Delivers a signed event to the webhook URL; the server's status code."""
        assert self.webhook_url, "set webhook_url to the server's /billing/webhook"
        event = {"id": f"evt_{secrets.token_hex(12)}", "object": "event", "type": event_type,
                 "created": int(time.time()), "data": {"object": obj}}
        body = json.dumps(event).encode()
        r = httpx.post(self.webhook_url, content=body, timeout=10,
                       headers={"Content-Type": "application/json", "Stripe-Signature": self.signature(body)})
        self.delivered.append((event, r.status_code))
        return r.status_code

    def pay(self, session_id: str) -> str:
        """The customer pays on the hosted page: the session completes, its subscription starts, the webhook goes
        out. Returns the success URL the browser is sent to."""
        session = self.sessions[session_id]
        subscription_id = f"sub_{secrets.token_hex(10)}"
        self.subscriptions[subscription_id] = {"id": subscription_id, "object": "subscription", "status": "active",
                                               "metadata": dict(session["subscription_data"].get("metadata", {}))}
        session.update(status="complete", payment_status="paid", subscription=subscription_id)
        status = self.send_event("checkout.session.completed", self._public(session))
        assert status == 200, status
        return session["success_url"]

    def cancel(self, subscription_id: str) -> dict[str, Any]:
        subscription = self.subscriptions[subscription_id]
        subscription["status"] = "canceled"
        if self.webhook_url:
            self.send_event("customer.subscription.deleted", subscription)
        return subscription

    @staticmethod
    def _public(session: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in session.items() if k != "subscription_data"}


class _Handler(BaseHTTPRequestHandler):
    service: FakePayments

    @property
    def payments(self) -> FakePayments:
        return self.service

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: object) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"type": "invalid_request_error", "message": message}})

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        key = ""
        if header.startswith("Basic "):
            key = base64.b64decode(header[6:]).decode().partition(":")[0]
        elif header.startswith("Bearer "):
            key = header[7:]
        if not hmac.compare_digest(key, self.payments.secret_key):
            self._error(401, "Invalid API Key provided")
            return False
        return True

    def _form(self) -> dict[str, str]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path.startswith("/c/pay/"):
            session = self.payments.sessions.get(url.path.removeprefix("/c/pay/"))
            if session is None:
                self._send(404, b"<h1>No such checkout</h1>", "text/html")
                return
            item = session["line_items"]["0"]["price_data"]
            page = (f"<h1>Pay {item['product_data']['name']}</h1><p id='amount'>{int(item['unit_amount']) / 100:.2f}"
                    f" {item['currency'].upper()} / {item['recurring']['interval']}</p>"
                    f"<form method='post'><button id='pay' type='submit'>Pay</button></form>")
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif url.path == "/v1/subscriptions/search":
            if not self._authorized():
                return
            query = parse_qs(url.query).get("query", [""])[0]
            account = re.search(r"metadata\['account_id'\]:'([^']*)'", query)
            status = re.search(r"status:'([^']*)'", query)
            found = [s for s in self.payments.subscriptions.values()
                     if (not account or s["metadata"].get("account_id") == account.group(1))
                     and (not status or s["status"] == status.group(1))]
            self._json(200, {"object": "search_result", "data": found, "has_more": False})
        else:
            self._error(404, f"Unrecognized request URL (GET: {url.path})")

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path.startswith("/c/pay/"):
            session_id = url.path.removeprefix("/c/pay/")
            if session_id not in self.payments.sessions:
                self._send(404, b"<h1>No such checkout</h1>", "text/html")
                return
            self._send(303, b"", "text/html", {"Location": self.payments.pay(session_id)})
        elif url.path == "/v1/checkout/sessions":
            if not self._authorized():
                return
            form = _nested(self._form())
            for needed in ("mode", "success_url", "line_items"):
                if needed not in form:
                    self._error(400, f"Missing required param: {needed}.")
                    return
            session_id = f"cs_test_{secrets.token_hex(16)}"
            session = {"id": session_id, "object": "checkout.session", "url": f"{self.payments.url}/c/pay/{session_id}",
                       "status": "open", "payment_status": "unpaid", "subscription": None,
                       "metadata": form.get("metadata", {}), "subscription_data": form.get("subscription_data", {}),
                       **{k: form.get(k) for k in ("mode", "success_url", "cancel_url", "client_reference_id",
                                                   "customer_email", "line_items")}}
            self.payments.sessions[session_id] = session
            self._json(200, self.payments._public(session))
        else:
            self._error(404, f"Unrecognized request URL (POST: {url.path})")

    def do_DELETE(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if not self._authorized():
            return
        subscription_id = url.path.removeprefix("/v1/subscriptions/")
        if subscription_id not in self.payments.subscriptions:
            self._error(404, f"No such subscription: '{subscription_id}'")
            return
        self._json(200, self.payments.cancel(subscription_id))


FakePayments.handler = _Handler
