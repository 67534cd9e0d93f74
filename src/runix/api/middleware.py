"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runix.api.errors import INTERNAL_ERROR_MESSAGE, error_response

log = structlog.get_logger("runix.api")


class RateLimitHeaders:
    """Adds the X-RateLimit-* headers the auth dependency computed to whatever response goes out."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get("rate_limit_headers")
                if extra:
                    existing = {k.lower() for k, _ in message.get("headers", [])}
                    message["headers"] = list(message.get("headers", [])) + [
                        (k.lower().encode(), v.encode()) for k, v in extra.items() if k.lower().encode() not in existing
                    ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses request bodies over a size with a 400 before they are read into memory. A path in `answers` gets the
    response its function makes of the request instead (a dashboard form: a page, not JSON)."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_paths: dict[str, int],
                 answers: dict[str, Callable[[Scope], Response]] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.upload_paths = upload_paths
        self.answers = answers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.upload_paths.get(scope["path"], self.max_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._too_large(scope, receive, send, limit)
                return
        seen, exceeded, answered = 0, False, False

        async def counted_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def send_unless_exceeded(message: Message) -> None:
            # A body cut off by the limit reaches the app as a parse failure (FastAPI answers "There was an error
            # parsing the body"); that answer is dropped for the one saying why.
            nonlocal answered
            if not exceeded:
                answered = True
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counted_receive, send_unless_exceeded)
        if exceeded and not answered:
            await self._too_large(scope, receive, send, limit)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        answer = self.answers.get(scope["path"])
        if answer is not None:
            await answer(scope)(scope, receive, send)
        else:
            await _too_large(send, limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": f"Request body too large (limit {limit} bytes)", "code": "BAD_REQUEST"}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class NulInPath:
    """A path with a NUL character names nothing: 404, before any database is asked (PostgreSQL refuses NULs)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\x00" in scope["path"]:
            await error_response(404, "NOT_FOUND", "No resource has a NUL character in its name")(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Unexpected:
    """Answers an exception no handler took with a 500 in the error shape, and keeps the connection open.

    Left to Starlette, the 500 is sent and the exception re-raised to the server, which then drops the keep-alive
    connection under the client's next request.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            if started:  # too late for a clean answer: let the server close the connection
                raise
            log.exception("unhandled error", path=scope["path"], method=scope["method"])
            response = error_response(500, "INTERNAL_ERROR", INTERNAL_ERROR_MESSAGE)
            await response(scope, receive, send)


class Metrics:
    """Counts requests and their latency per route for GET /metrics (Prometheus text format)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry):
        self.app = app
        self.requests = Counter("runix_http_requests_total", "HTTP requests handled",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("runix_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["method", "route"], registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
