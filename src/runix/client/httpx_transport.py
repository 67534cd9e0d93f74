"""The SDK's default transport: httpx (connection pooling, proxies from the environment, certifi's CA bundle)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import httpx

from runix.client.transport import Body, ConnectFailed, ConnectionBroken, Response, TimedOut, TransportError

T = TypeVar("T")
# An idle connection is reused only this soon: servers close theirs after a few seconds (uvicorn, and so Runix,
# after 5, which is httpx's own default), and one closing just as a request goes out drops it, which cannot be
# resent if it is a POST.
KEEPALIVE_EXPIRY = 4.0
# A request whose connection breaks before any answer (a pooled one the server closed meanwhile) is sent once more
# when it can be sent again as it was (its body is bytes or nothing) and doing it twice is harmless (the server may
# have carried it out before the connection broke): never a POST or PATCH.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class HttpxTransport:
    def __init__(self, timeout: float = 30.0, *, verify: bool = True, keepalive_expiry: float = KEEPALIVE_EXPIRY,
                 client: httpx.Client | None = None):
        """`verify=False` skips loading the CA bundle, for a client that only ever talks plain HTTP. `client` lends
        an httpx.Client of the caller's own (its proxies, certificates, event hooks, limits); closing the transport
        closes it."""
        self.timeout = timeout
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=keepalive_expiry)
        self.http = client or httpx.Client(timeout=timeout, verify=verify, limits=limits)

    def send(self, method: str, url: str, headers: Mapping[str, str], body: Body = None, *,
             stream: bool = False) -> Response:
        timeout = httpx.Timeout(self.timeout, read=None) if stream else httpx.USE_CLIENT_DEFAULT
        try:
            request = self.http.build_request(method, url, headers=headers, content=body, timeout=timeout)
        except httpx.InvalidURL as exc:  # a host that is no address, a port out of range
            raise TransportError(f"not a valid URL: {url} ({exc})") from exc
        try:
            answer = _failing_as_transport_errors(lambda: self.http.send(request, stream=True))
        except ConnectionBroken:
            if method not in IDEMPOTENT or not (body is None or isinstance(body, bytes)):
                raise
            answer = _failing_as_transport_errors(lambda: self.http.send(request, stream=True))
        response = Response(answer.status_code, answer.reason_phrase, answer.headers.multi_items(),
                            read_all=lambda: _failing_as_transport_errors(answer.read),
                            lines=lambda: _lines(answer), release=answer.close)
        if not stream:
            response.content  # noqa: B018 - read now, so the connection goes back to the pool
        return response

    def close(self) -> None:
        self.http.close()


def _lines(answer: httpx.Response) -> Iterator[str]:
    lines = answer.iter_lines()
    while True:
        line = _failing_as_transport_errors(lambda: next(lines, None))
        if line is None:
            return
        yield line


def _failing_as_transport_errors(step: Callable[[], T]) -> T:
    try:
        return step()
    except httpx.ConnectError as exc:
        if _tls_failure(exc):  # the handshake, not the connection, failed: say so, not "connection refused"
            raise TransportError(f"TLS failed: {exc}") from exc
        raise ConnectFailed(str(exc) or "connection failed") from exc
    except httpx.TimeoutException as exc:
        raise TimedOut("the server did not answer in time") from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise ConnectionBroken(str(exc) or type(exc).__name__) from exc
    except httpx.TransportError as exc:
        raise TransportError(str(exc) or type(exc).__name__) from exc


def _tls_failure(exc: BaseException) -> bool:
    """Whether an ssl.SSLError is among the causes httpx chained to `exc` (a few links deep at most)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
