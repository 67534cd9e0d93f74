"""How the SDK talks HTTP: one small interface, `Transport`, implemented with httpx by
`runix.client.httpx_transport.HttpxTransport` (the SDK's and the `runix` command's; pooling, proxies from the
environment, certifi's CA bundle). A caller may pass any object with the same two methods (a test double, say).

A transport sends one request and hands back a `Response`; it knows nothing of the Runix API. Failures to talk at
all are `TransportError`s; an HTTP error status is an ordinary response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

# What a request body may be: bytes, or chunks sent as they come (chunked, unless a Content-Length header is given).
Body = bytes | Iterable[bytes] | None
# One entry of a Link header: <target> and its ;-parameters (a target may hold commas, the parameters may not).
_LINK_ENTRY = re.compile(r"<([^>]*)>\s*((?:;[^,;]*)*)")


class TransportError(Exception):
    """The request could not be made or its answer not read."""


class ConnectFailed(TransportError):
    """No connection: nothing listens there, the host is unknown, or the network is down."""


class TimedOut(TransportError):
    """The server did not answer in time."""


class ConnectionBroken(TransportError):
    """The connection broke while the answer was being read (a stream can be resumed on a new one)."""


class Transport(Protocol):
    def send(self, method: str, url: str, headers: Mapping[str, str], body: Body = None, *,
             stream: bool = False) -> Response:
        """Sends one request to the absolute `url`. With `stream`, the body is left unread for `iter_lines` and
        reads have no time limit (a log stream can be quiet for long); otherwise it is read before returning."""
        ...

    def close(self) -> None:
        ...


class Response:
    """An answer: status, headers (names in lower case; repeated ones joined with ', ') and the body, read whole
    or line by line. A transport passes how to read it all, how to read its lines, and how to give the connection
    back once the body is read or abandoned (`release`)."""

    def __init__(self, status: int, reason: str, headers: Iterable[tuple[str, str]], *,
                 read_all: Callable[[], bytes], lines: Callable[[], Iterator[str]], release: Callable[[], None]):
        self.status = status
        self.reason = reason
        self.headers: dict[str, str] = {}
        for name, value in headers:
            name = name.lower()
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        self._read_all = read_all
        self._lines = lines
        self._release: Callable[[], None] | None = release
        self._content: bytes | None = None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content(self) -> bytes:
        if self._content is None:
            try:
                self._content = self._read_all()
            finally:
                self.close()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def iter_lines(self) -> Iterator[str]:
        """The body's lines as they arrive, without their line endings."""
        try:
            yield from self._lines()
        finally:
            self.close()

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def link(self, rel: str) -> str | None:
        """The target of the `Link` header's entry with this rel (RFC 8288), e.g. the next page."""
        for target, params in _LINK_ENTRY.findall(self.headers.get("link", "")):
            for param in params.split(";"):
                name, _, value = param.partition("=")
                if name.strip().lower() == "rel" and rel in value.strip().strip('"').split():
                    return target
        return None

