"""The SDK's transport over the standard library's http.client: no third-party import, so a short-lived program
(the `runix` command) starts tens of milliseconds sooner than with httpx. Keep-alive connections are pooled per
host and handed to one request at a time, so threads may share the transport. No proxies: where one is configured
(runix.client.transport.proxy_configured), use HttpxTransport."""

from __future__ import annotations

import http.client
import select
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from runix.client.transport import Body, ConnectFailed, ConnectionBroken, Response, TimedOut, TransportError

T = TypeVar("T")
Origin = tuple[str, str, int]  # scheme, host, port
READ_BYTES = 64 * 1024
# An idle connection is reused only this soon: servers close theirs after a few seconds (uvicorn, and so Runix,
# after 5), and one closing just as a request goes out drops it, which cannot be resent if it is a POST.
KEEPALIVE_EXPIRY = 4.0
# An idle connection that breaks as it is reused (the server closed it meanwhile) is replaced once, when the
# request can be sent again as it was (its body is bytes or nothing) and doing it twice is harmless (the server may
# have carried it out before the connection broke): never for a POST or PATCH.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class StdlibTransport:
    def __init__(self, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None,
                 keepalive_expiry: float = KEEPALIVE_EXPIRY):
        self.timeout = timeout
        self.keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        # Idle connections per origin, with the time each went idle (time.monotonic()).
        self._idle: dict[Origin, list[tuple[http.client.HTTPConnection, float]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def send(self, method: str, url: str, headers: Mapping[str, str], body: Body = None, *,
             stream: bool = False) -> Response:
        try:
            parts = urlsplit(url)
            origin = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        except ValueError as exc:  # a host that is no address, a port out of range
            raise TransportError(f"not a valid URL: {url} ({exc})") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http:// or https:// URL: {url}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        resendable = method in IDEMPOTENT and (body is None or isinstance(body, bytes))
        connection, reused = self._take(origin)
        try:
            answer = _failing_as_transport_errors(lambda: self._exchange(connection, method, target, headers, body))
        except ConnectionBroken as exc:
            connection.close()
            if not (reused and resendable and isinstance(exc.__cause__, STALE)):
                raise
            connection = self._connect(origin)
            try:
                answer = self._guarded(connection, lambda: self._exchange(connection, method, target, headers, body))
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()
            raise
        if stream and connection.sock is not None:
            connection.sock.settimeout(None)  # a log stream may be quiet for minutes

        def release() -> None:
            if answer.isclosed() and not answer.will_close:
                if connection.sock is not None:
                    connection.sock.settimeout(self.timeout)
                with self._lock:
                    if not self._closed:
                        self._idle.setdefault(origin, []).append((connection, time.monotonic()))
                        return
            # Not read to its end, the server ends the connection, or the transport is closed: it goes.
            answer.close()
            connection.close()

        response = Response(answer.status, answer.reason, answer.getheaders(),
                            read_all=lambda: self._guarded(connection, answer.read),
                            lines=lambda: self._lines(connection, answer), release=release)
        if not stream:
            response.content  # noqa: B018 - read now, so the connection goes back to the pool
        return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection, _ in connections:
                connection.close()

    @staticmethod
    def _exchange(connection: http.client.HTTPConnection, method: str, target: str, headers: Mapping[str, str],
                  body: Body) -> http.client.HTTPResponse:
        try:
            connection.request(method, target, body=body, headers=dict(headers))  # type: ignore[arg-type]
        except (BrokenPipeError, ConnectionResetError) as exc:
            # A server (or a proxy before it) may answer before reading the whole body, a size limit say, and close:
            # its answer says more than the broken pipe. None there: the connection broke, as it seemed.
            try:
                return connection.getresponse()
            except (http.client.HTTPException, OSError):
                raise exc from None
        return connection.getresponse()

    def _lines(self, connection: http.client.HTTPConnection, answer: http.client.HTTPResponse) -> Iterator[str]:
        # read1, not readline: http.client's readline takes a chunked body cut short for its end.
        pending = b""
        while data := self._guarded(connection, lambda: answer.read1(READ_BYTES)):
            if b"\n" not in data:  # a long line: keep gathering it without splitting it again and again
                pending += data
                continue
            *lines, rest = data.split(b"\n")
            lines[0] = pending + lines[0]
            pending = rest
            for line in lines:
                yield line.decode("utf-8", errors="replace").removesuffix("\r")
        if answer.length:  # a sized body that ended before its Content-Length
            connection.close()
            raise ConnectionBroken(f"the answer ended {answer.length} bytes early")
        if pending:
            yield pending.decode("utf-8", errors="replace").removesuffix("\r")

    @staticmethod
    def _guarded(connection: http.client.HTTPConnection, step: Callable[[], T]) -> T:
        try:
            return _failing_as_transport_errors(step)
        except TransportError:
            connection.close()
            raise

    def _take(self, origin: Origin) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to `origin` that the server has not closed, else a new one; and whether it was idle."""
        with self._lock:
            idle = self._idle.get(origin, [])
            while idle:
                connection, since = idle.pop()
                if time.monotonic() - since < self.keepalive_expiry and _still_open(connection):
                    return connection, True
                connection.close()
        return self._connect(origin), False

    def _connect(self, origin: Origin) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = _default_tls()
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self._ssl_context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            connection.connect()
        except TimeoutError as exc:
            raise TimedOut(f"connecting to {host}:{port} timed out") from exc
        except ssl.SSLError as exc:
            reason = getattr(exc, "verify_message", None) or exc.reason or exc
            raise TransportError(f"TLS with {host}:{port} failed: {reason}") from exc
        except OSError as exc:  # refused, unreachable, or a name that does not resolve
            raise ConnectFailed(f"{host}:{port}: {exc.strerror or exc}") from exc
        return connection


def _default_tls() -> ssl.SSLContext:
    """The system's CA certificates, and certifi's bundle (which httpx uses) where it is installed: either one
    vouching for the server will do, as where the system has no store of its own."""
    context = ssl.create_default_context()
    try:
        import certifi
    except ImportError:
        return context
    context.load_verify_locations(certifi.where())
    return context


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection is readable only once the server has closed it (or broken the protocol)."""
    if connection.sock is None:
        return False
    poller = select.poll()  # not select(): it fails for descriptors past 1024 in a long-lived program
    try:
        poller.register(connection.sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def _failing_as_transport_errors(step: Callable[[], T]) -> T:
    try:
        return step()
    except TransportError:
        raise
    except TimeoutError as exc:
        raise TimedOut("the server did not answer in time") from exc
    except (http.client.HTTPException, OSError) as exc:
        raise ConnectionBroken(str(exc) or type(exc).__name__) from exc
