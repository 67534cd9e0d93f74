"""The built-in router: an asyncio reverse proxy that serves app traffic, choosing the deployment by Host header.

Built for throughput: plain asyncio Protocols (no streams and no task per request on the hot path), only the framing
headers are parsed, bodies are forwarded byte for byte as they arrive (never buffered whole), and every upstream has a
pool of keep-alive connections, so a request costs one write each way. A response head that needs no rewriting is
forwarded as the very bytes the app sent.

Run it on its own for benchmarks and debugging:
    python -m runix.pipeline.router.embedded --port 8080 --route blog.localhost=127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from time import monotonic

from runix.pipeline.router import Router, Upstream, Waker, pages

log = logging.getLogger("runix.router")

_MAX_HEAD = 64 * 1024
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_HEAD = re.compile(_TOKEN + rb" [^ \x00-\x20\x7f]+ HTTP/1\.[01](?:\r\n" + _TOKEN + rb":[^\r\n\x00]*)*")
_MAX_CHUNK_LINE = 8 * 1024
_MAX_HOST_CACHE = 4096
_SWEEP_EVERY = 0.5
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

# Request headers the router reads; a request carrying none but Host/Content-Length/Transfer-Encoding is forwarded with
# its head untouched (plus the X-Forwarded-* lines).
_REQUEST_SPECIAL = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"upgrade",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-real-ip",
        b"forwarded",
    }
)
# Hop-by-hop headers, and the X-Forwarded-* ones the router sets itself (a client must not be able to forge them).
_REQUEST_DROP = _REQUEST_SPECIAL - {b"host", b"content-length", b"transfer-encoding"}
_RESPONSE_DROP = frozenset({b"connection", b"keep-alive", b"proxy-connection"})
_RESPONSE_FIELDS = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|keep-alive|proxy-connection)[ \t]*:([^\r]*)", re.IGNORECASE
)

# Client side: reading the request head -> waiting for an upstream connection (or a wake) -> streaming the request body
# -> waiting for the response to end -> back to reading the next head. An Upgrade turns the connection into a tunnel.
_HEAD, _PENDING, _BODY, _WAIT, _TUNNEL, _CLOSED = range(6)
# Upstream side.
_IDLE, _RESPONSE_HEAD, _RESPONSE_BODY, _UPSTREAM_TUNNEL = range(4)
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# How a response body ends.
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)


class BadMessage(ValueError):
    """Bytes that are not the HTTP/1.x the router speaks."""


class _Chunked:
    """Finds where a chunked body ends while its bytes are passed on unchanged."""

    __slots__ = ("state", "remaining", "line")
    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self.state = self._SIZE
        self.remaining = 0
        self.line = b""

    def feed(self, data: bytes, pos: int) -> int:
        """Consume data[pos:]; return the index just past the body's end, or -1 if the body goes on."""
        end = len(data)
        while pos < end:
            if self.state == self._DATA:
                left = end - pos
                if left < self.remaining:
                    self.remaining -= left
                    return -1
                pos += self.remaining
                self.remaining = 0
                self.state = self._DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self.line += data[pos:]
                if len(self.line) > _MAX_CHUNK_LINE:
                    raise BadMessage("chunk line too long")
                return -1
            line = self.line + data[pos:newline] if self.line else data[pos:newline]
            self.line = b""
            pos = newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if self.state == self._SIZE:
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise BadMessage("bad chunk size")
                self.remaining = int(size, 16)
                self.state = self._DATA if self.remaining else self._TRAILER
            elif self.state == self._DATA_END:
                if line:
                    raise BadMessage("chunk data longer than its size")
                self.state = self._SIZE
            elif not line:  # the empty line that ends the trailer section
                return pos
        return -1


def _host_name(raw: bytes) -> str:
    """Host header value -> the lower-case name the route table is keyed by (no port, no trailing dot)."""
    host = raw.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.partition(":")[0].rstrip(".")


def _fields_regex(names: frozenset[bytes] | set[bytes]) -> re.Pattern[bytes]:
    """Picks the request header fields named `names` out of a whole head, with their values."""
    return re.compile(rb"\r\n(" + b"|".join(sorted(names)) + rb"):([^\r]*)", re.IGNORECASE)


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


class _Client(asyncio.Protocol):
    """One connection from a browser or other HTTP client."""

    __slots__ = (
        "router",
        "transport",
        "buf",
        "state",
        "up",
        "target",
        "deployment",
        "host",
        "keep_alive",
        "http10",
        "head_request",
        "upgrade",
        "req_done",
        "remaining",
        "chunks",
        "out",
        "replayable",
        "forwarded",
        "fields",
        "drop",
        "write_paused",
        "idle_since",
    )

    def __init__(self, router: EmbeddedRouter) -> None:
        self.router = router
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = b""
        self.state = _HEAD
        self.up: _Upstream | None = None
        self.target: Upstream | None = None
        self.deployment: str | None = None  # set while this client's request counts as in flight
        self.host = b""
        self.keep_alive = True
        self.http10 = False
        self.head_request = False
        self.upgrade = False
        self.req_done = True
        self.remaining = 0
        self.chunks: _Chunked | None = None
        self.out = b""  # the request as first sent upstream; sent again if a pooled connection turns out dead
        self.replayable = False  # ... which is safe for idempotent methods only
        self.forwarded = b""
        self.fields = router._request_fields  # which client headers count: set per peer in connection_made
        self.drop = router._request_drop
        self.write_paused = False
        self.idle_since = monotonic()

    # -- asyncio callbacks -------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else "unknown"
        if self.router.trusts(address):  # a proxy of the operator's: its X-Forwarded-For/Proto/Host are kept
            self.fields, self.drop = self.router._trusted_fields, self.router._trusted_drop
        else:
            node = f'"[{address}]"' if ":" in address else address  # RFC 7239 quotes IPv6 nodes
            self.forwarded = (
                b"\r\nX-Forwarded-For: " + address.encode() + b"\r\nX-Real-IP: " + address.encode()
                + b"\r\nForwarded: for=" + node.encode() + b";proto=" + self.router.scheme
                + b"\r\nX-Forwarded-Proto: " + self.router.scheme
            ) + b"\r\nX-Forwarded-Host: "
        self.router._clients.add(self)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == _HEAD:
            self.buf = self.buf + data if self.buf else data
            self._process()
        elif state == _BODY:
            self._forward_body(data)
        elif state == _TUNNEL:
            self.up.transport.write(data)  # type: ignore[union-attr]
        elif state != _CLOSED:  # a pipelined request, or body bytes while the upstream is not there yet: hold them
            self.buf += data
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        if self.state == _TUNNEL and self.up is not None and self.up.transport.can_write_eof():
            self.up.transport.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        previous, self.state = self.state, _CLOSED
        self.router._clients.discard(self)
        up, self.up = self.up, None
        if up is not None:
            up.client = None
            if previous == _TUNNEL:
                up.transport.close()
            else:  # mid-exchange: the connection is in an unknown state, never reuse it
                up.transport.abort()
        self._end_request()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.up is not None:
            self.up.follow(self)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.up is not None:
            self.up.follow(self)

    # -- request side ------------------------------------------------------------------------------------------------
    def _process(self) -> None:
        while self.state == _HEAD and self.buf:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self._reject()
                return
            try:
                self._start_request(end)
            except BadMessage:
                self._reject()
                return

    def _start_request(self, end: int) -> None:
        buf = self.buf
        # One regex checks the whole head (request line, token names, no bare CR or LF, no folded lines), another
        # picks out the few fields the router acts on: no per-line work in Python.
        if _REQUEST_HEAD.fullmatch(buf, 0, end) is None:
            raise BadMessage("malformed request head")
        request_line = buf[: buf.find(b"\r\n")]
        method, target, version = request_line.split(b" ")
        self.http10 = version == b"HTTP/1.0"
        host = None
        length = None
        chunked = False
        connection: list[bytes] = []
        upgrade = None
        rewrite = False
        for field in self.fields.finditer(buf, 0, end):
            name = field.group(1).lower()
            value = field.group(2).strip(b" \t")
            if name == b"host":
                if host is not None:
                    raise BadMessage("two Host headers")
                host = value
            elif name == b"content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    raise BadMessage("bad Content-Length")
                length = int(value)
            elif name == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    raise BadMessage("unsupported Transfer-Encoding")
                chunked = True
            else:
                rewrite = True
                if name == b"connection":
                    connection += _tokens(value)
                elif name == b"upgrade":
                    upgrade = value
        if chunked and length is not None:
            raise BadMessage("both Content-Length and Transfer-Encoding")  # the classic request-smuggling shape
        if target[:1] != b"/" and target.startswith((b"http://", b"https://")):  # absolute form, as sent to proxies
            authority, _, path = target.split(b"//", 1)[1].partition(b"/")
            host, target, rewrite = authority, b"/" + path, True
            request_line = b" ".join((method, target, version))
        if host is None:
            if not self.http10:
                raise BadMessage("no Host header")
            host = b""
        self.host = host
        self.keep_alive = not self.http10 and b"close" not in connection
        self.head_request = method == b"HEAD"
        self.replayable = method in _IDEMPOTENT
        self.upgrade = upgrade is not None and b"upgrade" in connection
        self.req_done = not (chunked or length)

        router = self.router
        deployment = router._deployment_for(host)
        if deployment is None:
            self.buf = buf[end + 4 :]
            self._reply(pages.not_found, continue_parsing=False)
            return

        if rewrite:
            dropped = self.drop.union(connection)
            kept = [request_line]
            kept += [line for line in buf[:end].split(b"\r\n")[1:] if line.partition(b":")[0].lower() not in dropped]
            head = b"\r\n".join(kept)
        else:
            head = buf[:end]
        tail = b"\r\nConnection: upgrade\r\nUpgrade: " + upgrade + b"\r\n\r\n" if self.upgrade else b"\r\n\r\n"  # type: ignore[operator]

        start = end + 4
        if chunked:
            self.chunks = chunks = _Chunked()
            stop = chunks.feed(buf, start)
            self.req_done = stop >= 0
            stop = stop if stop >= 0 else len(buf)
        elif length:
            self.chunks = None
            stop = min(start + length, len(buf))
            self.remaining = length - (stop - start)
            self.req_done = self.remaining == 0
        else:
            stop = start
        if self.forwarded:
            self.out = b"".join((head, self.forwarded, host, tail, buf[start:stop]))
        else:  # behind a trusted proxy that set X-Forwarded-* already
            self.out = b"".join((head, tail, buf[start:stop]))
        self.buf = buf[stop:]

        self.deployment = deployment
        router._begin(deployment)
        upstream = router._upstreams.get(deployment)
        if upstream is not None:
            self._dispatch(upstream)
        elif router._waker is None:
            self._reply(pages.app_down, continue_parsing=False)
        else:
            self.state = _PENDING
            self.transport.pause_reading()
            router._wake(deployment).add_done_callback(self._woken)

    def _dispatch(self, upstream: Upstream) -> None:
        self.target = upstream
        conn = self.router._take(upstream)
        if conn is not None:
            self._send(conn)
        else:
            self.state = _PENDING
            self.transport.pause_reading()
            self.router._connect(upstream).add_done_callback(self._connected)

    def _send(self, conn: _Upstream) -> None:
        self.up = conn
        conn.attach(self)
        conn.transport.write(self.out)
        if self.req_done:
            self.state = _WAIT
            if self.buf:  # a pipelined request waits its turn
                self.transport.pause_reading()
            else:  # keep reading, to notice a client that goes away
                self.transport.resume_reading()
        else:
            self.replayable = False  # too late to replay a streamed body
            self.out = b""
            self.state = _BODY
            self.transport.resume_reading()
            if self.buf:
                data, self.buf = self.buf, b""
                self._forward_body(data)

    def _forward_body(self, data: bytes) -> None:
        up = self.up.transport  # type: ignore[union-attr]
        if self.chunks is not None:
            try:
                stop = self.chunks.feed(data, 0)
            except BadMessage:
                self._reject()
                return
            if stop < 0:
                up.write(data)
                return
        else:
            if len(data) < self.remaining:
                self.remaining -= len(data)
                up.write(data)
                return
            stop = self.remaining
            self.remaining = 0
        up.write(data[:stop] if stop < len(data) else data)
        self.buf = data[stop:]
        self.req_done = True
        self.state = _WAIT
        if self.buf:
            self.transport.pause_reading()

    # -- completion --------------------------------------------------------------------------------------------------
    def _response_done(self, conn: _Upstream) -> None:
        """The upstream sent the whole response."""
        self.up = None
        if self.state == _BODY:  # the app answered without reading the whole body: this connection cannot go on
            self.keep_alive = False
            conn.transport.close()
        elif conn.reusable and not self.http10:
            self.router._release(conn)
        else:
            conn.transport.close()
        self._end_request()
        self._next(continue_parsing=True)

    def _next(self, *, continue_parsing: bool) -> None:
        if not (self.keep_alive and self.req_done):
            self.state = _CLOSED
            self.transport.close()
            return
        self.state = _HEAD
        self.idle_since = monotonic()
        self.transport.resume_reading()
        if continue_parsing and self.buf:
            self._process()

    def _end_request(self) -> None:
        if self.deployment is not None:
            self.router._end(self.deployment)
            self.deployment = None

    def _reply(self, page, *, continue_parsing: bool = True) -> None:  # type: ignore[no-untyped-def]
        """Answer the request with one of the router's own pages."""
        self._end_request()
        keep_alive = self.keep_alive and self.req_done
        self.transport.write(page(_host_name(self.host) or "this address", keep_alive=keep_alive))
        self._next(continue_parsing=continue_parsing)

    def _reject(self) -> None:
        self._end_request()
        up, self.up = self.up, None
        if up is not None:
            up.client = None
            up.transport.abort()
        if self.state in (_HEAD, _PENDING):  # nothing of a response was sent yet
            self.transport.write(pages.bad_request())
        self.state = _CLOSED
        self.transport.close()

    def _connected(self, task: asyncio.Future) -> None:  # type: ignore[type-arg]
        if task.cancelled():
            return
        error = task.exception()
        if self.state == _CLOSED:
            if error is None:
                task.result()[1].transport.close()
            return
        # A new connection already closing was closed by the app before this ran (it died just then): nothing would
        # ever answer on it, and writing to it fails.
        if error is not None or task.result()[1].transport.is_closing():
            self._reply(pages.app_down)
        else:
            self._send(task.result()[1])

    def _woken(self, task: asyncio.Future) -> None:  # type: ignore[type-arg]
        if self.state == _CLOSED:
            return
        if task.cancelled():
            self._reply(pages.app_down)
            return
        error = task.exception()
        if isinstance(error, TimeoutError):
            self._reply(pages.wake_timed_out)
        elif error is not None or task.result() is None:
            self._reply(pages.app_down)
        else:
            self._dispatch(task.result())

    def _upstream_lost(self, conn: _Upstream) -> None:
        """The upstream connection closed before the response was complete."""
        self.up = None
        if conn.state == _RESPONSE_HEAD and not conn.got_bytes:
            if conn.reused and self.state == _WAIT and self.replayable:
                # A pooled connection the app had just closed: nothing reached the app, send it again on a fresh one.
                self._dispatch_fresh()
                return
            self._reply(pages.app_down)
            return
        if conn.state == _RESPONSE_HEAD:  # half a response head: say so rather than pass on garbage
            self.keep_alive = False
            self._reply(pages.app_down)
            return
        # Mid-body or a tunnel: closing tells the client the response is cut short (its framing is incomplete).
        self._end_request()
        self.state = _CLOSED
        self.transport.close()

    def _dispatch_fresh(self) -> None:
        self.state = _PENDING
        self.transport.pause_reading()
        self.router._connect(self.target).add_done_callback(self._connected)  # type: ignore[arg-type]

    def _tunnel(self) -> None:
        self.state = _TUNNEL
        self.transport.resume_reading()
        if self.buf:
            data, self.buf = self.buf, b""
            self.up.transport.write(data)  # type: ignore[union-attr]


class _Pool(list["_Upstream"]):
    """Idle keep-alive connections to one upstream, the most recently used last; `users` deployments answer there."""

    __slots__ = ("users",)

    def __init__(self) -> None:
        super().__init__()
        self.users = 0


class _Upstream(asyncio.Protocol):
    """One keep-alive connection to an app; serves one client request at a time, then goes back to the pool."""

    __slots__ = (
        "router",
        "pool",
        "transport",
        "client",
        "state",
        "buf",
        "body",
        "remaining",
        "chunks",
        "reusable",
        "reused",
        "got_bytes",
        "idle_since",
        "paused",
    )

    def __init__(self, router: EmbeddedRouter, pool: _Pool) -> None:
        self.router = router
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: _Client | None = None
        self.state = _IDLE
        self.buf = b""
        self.body = _NO_BODY
        self.remaining = 0
        self.chunks: _Chunked | None = None
        self.reusable = True
        self.reused = False
        self.got_bytes = False
        self.idle_since = 0.0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def attach(self, client: _Client) -> None:
        self.client = client
        self.state = _RESPONSE_HEAD
        self.got_bytes = False
        self.follow(client)

    def follow(self, client: _Client) -> None:
        """Read from the app only as fast as the client takes the bytes."""
        if client.write_paused != self.paused:
            self.paused = client.write_paused
            if self.paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # an idle connection has nothing to say: drop it
            self.reusable = False
            self.transport.close()
            return
        self.got_bytes = True
        state = self.state
        if state == _RESPONSE_BODY:
            self._body(client, data)
        elif state == _UPSTREAM_TUNNEL:
            client.transport.write(data)
        else:
            if self.buf:
                data, self.buf = self.buf + data, b""
            try:
                self._head(client, data)
            except BadMessage:
                self.reusable = False
                self.client = None
                client._upstream_lost(self)
                self.transport.abort()

    def _head(self, client: _Client, data: bytes) -> None:
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > _MAX_HEAD:
                    raise BadMessage("response head too long")
                self.buf = data
                return
            status_line = data[: data.find(b"\r\n")]
            if len(status_line) < 12 or not status_line.startswith(b"HTTP/1.") or not status_line[9:12].isdigit():
                raise BadMessage("bad status line")
            status = int(status_line[9:12])
            length = None
            chunked = False
            close = status_line[7:8] == b"0"
            rewrite = False
            # One regex pass finds the few fields that matter, instead of splitting every line.
            for field in _RESPONSE_FIELDS.finditer(data, 0, end):
                name = field.group(1).lower()
                value = field.group(2)
                if name == b"content-length":
                    value = value.strip(b" \t")
                    if not value.isdigit():
                        raise BadMessage("bad Content-Length")
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = value.strip(b" \t").lower().endswith(b"chunked")
                else:
                    rewrite = True
                    if name == b"connection":
                        tokens = _tokens(value)
                        close = b"close" in tokens or (close and b"keep-alive" not in tokens)
            head_end = end + 4
            if status < 200:
                if status == 101:
                    if not client.upgrade:
                        raise BadMessage("101 without an upgrade request")
                    self._start_tunnel(client, data[:end].split(b"\r\n"), data[head_end:])
                    return
                if not client.http10:  # 100 Continue and friends; the final response follows
                    client.transport.write(data[:head_end])
                data = data[head_end:]
                if not data:
                    return
                continue
            break

        if client.head_request or status == 204 or status == 304:
            self.body = _NO_BODY
        elif chunked:
            self.body = _CHUNKED
        elif length is not None:
            self.body = _LENGTH
        else:
            self.body = _UNTIL_CLOSE
            close = True
            client.keep_alive = False
        self.reusable = not close
        if rewrite or not client.keep_alive:
            kept = [status_line]
            lines = data[:end].split(b"\r\n")[1:]
            kept += [line for line in lines if line.partition(b":")[0].strip(b" \t").lower() not in _RESPONSE_DROP]
            if not client.keep_alive:
                kept.append(b"Connection: close")
            kept.append(b"\r\n")
            head = b"\r\n".join(kept)
        else:
            head = None

        complete = True
        if self.body == _NO_BODY:
            stop = head_end
        elif self.body == _LENGTH:
            stop = min(head_end + length, len(data))  # type: ignore[operator]
            self.remaining = length - (stop - head_end)  # type: ignore[operator]
            complete = self.remaining == 0
        elif self.body == _CHUNKED:
            self.chunks = _Chunked()
            stop = self.chunks.feed(data, head_end)
            complete = stop >= 0
            if not complete:
                stop = len(data)
        else:
            stop = len(data)
            complete = False
        if head is None:
            client.transport.write(data if stop == len(data) else data[:stop])
        else:
            client.transport.write(head + data[head_end:stop])
        if stop < len(data):  # bytes past the response: the app is out of step, do not reuse this connection
            self.reusable = False
        if complete:
            self._done(client)
        else:
            self.state = _RESPONSE_BODY

    def _body(self, client: _Client, data: bytes) -> None:
        body = self.body
        if body == _LENGTH:
            if len(data) < self.remaining:
                self.remaining -= len(data)
                client.transport.write(data)
                return
            stop = self.remaining
        elif body == _CHUNKED:
            try:
                stop = self.chunks.feed(data, 0)  # type: ignore[union-attr]
            except BadMessage:
                self.reusable = False
                self.client = None
                client._upstream_lost(self)
                self.transport.abort()
                return
            if stop < 0:
                client.transport.write(data)
                return
        else:
            client.transport.write(data)
            return
        if stop < len(data):
            self.reusable = False
            data = data[:stop]
        client.transport.write(data)
        self._done(client)

    def _done(self, client: _Client) -> None:
        self.client = None
        self.state = _IDLE
        self.chunks = None
        client._response_done(self)

    def _start_tunnel(self, client: _Client, lines: list[bytes], rest: bytes) -> None:
        kept = [line for line in lines if line.partition(b":")[0].strip(b" \t").lower() not in _RESPONSE_DROP]
        kept += [b"Connection: upgrade", b"\r\n"]
        client.transport.write(b"\r\n".join(kept) + rest)
        self.state = _UPSTREAM_TUNNEL
        self.reusable = False
        client._tunnel()

    def eof_received(self) -> bool:
        client = self.client
        if self.state == _UPSTREAM_TUNNEL and client is not None and client.transport.can_write_eof():
            client.transport.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        client, self.client = self.client, None
        if client is None:
            self.router._forget(self)
        elif self.state == _RESPONSE_BODY and self.body == _UNTIL_CLOSE:
            self.state = _IDLE
            client._response_done(self)
        else:
            client._upstream_lost(self)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        client = self.client
        if client is not None and client.state in (_BODY, _TUNNEL):
            client.transport.resume_reading()


class EmbeddedRouter:
    """The default router: serves app traffic on (host, port), forwarding each request to its deployment's upstream."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        waker: Waker | None = None,
        wake_timeout: float = 60.0,
        scheme: str = "http",
        connect_timeout: float = 10.0,
        keepalive_timeout: float = 75.0,
        head_timeout: float = 30.0,
        upstream_idle_timeout: float = 1.0,
        max_idle_per_upstream: int = 256,
        trust_forwarded: bool = False,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.scheme = scheme.encode()
        self.wake_timeout = wake_timeout
        self.connect_timeout = connect_timeout
        self.keepalive_timeout = keepalive_timeout
        self.head_timeout = head_timeout
        # Apps close idle keep-alive connections after a few seconds (uvicorn and Node: 5 s, gunicorn: 2 s); give them
        # up sooner, so a request rarely meets a connection the app is closing (and only idempotent ones are resent).
        self.upstream_idle_timeout = upstream_idle_timeout
        self.max_idle_per_upstream = max_idle_per_upstream
        # Behind another proxy of Runix's own (Caddy: `trust_forwarded`) or of the operator's (`trusted_proxies`,
        # addresses or networks), keep the X-Forwarded-* it set instead of writing ours; X-Real-IP and Forwarded
        # are dropped either way (proxies pass a client's own on unchanged).
        self.trust_forwarded = trust_forwarded
        self._trusted_networks = [ipaddress.ip_network(p.strip(), strict=False) for p in trusted_proxies if p.strip()]
        forwarded = {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
        self._request_fields = _fields_regex(_REQUEST_SPECIAL)
        self._request_drop = _REQUEST_DROP
        self._trusted_fields = _fields_regex(_REQUEST_SPECIAL - forwarded)
        self._trusted_drop = _REQUEST_DROP - forwarded
        self._waker = waker
        self._routes: dict[str, str] = {}
        self._host_cache: dict[bytes, str | None] = {}
        self._upstreams: dict[str, Upstream] = {}
        self._pools: dict[Upstream, _Pool] = {}  # one for every upstream some deployment answers at
        self._inflight: dict[str, int] = {}
        self._drain_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._last_request: dict[str, float] = {}
        self._wakes: dict[str, asyncio.Task[Upstream | None]] = {}
        self._connects: set[asyncio.Task] = set()  # type: ignore[type-arg]
        self._clients: set[_Client] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- the Router interface ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Client(self), self.host, self.port, reuse_address=True, backlog=1024
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = loop.create_task(self._sweep())

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in [self._sweeper, *self._wakes.values(), *self._connects]:
            if task is not None:
                task.cancel()
        for client in list(self._clients):
            client.transport.abort()
        for pool in self._pools.values():
            for conn in pool:
                conn.transport.close()
        self._pools.clear()
        await self._server.wait_closed()
        self._server = None

    def set_routes(self, routes: Mapping[str, str]) -> None:
        table = {host.lower(): deployment for host, deployment in routes.items()}
        self._routes, self._host_cache = table, {}

    def trusts(self, address: str) -> bool:
        """Whether a peer is a proxy whose X-Forwarded-* headers the router keeps."""
        if self.trust_forwarded:
            return True
        if not self._trusted_networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted_networks)

    def set_upstream(self, deployment_id: str, upstream: Upstream | None) -> None:
        previous = self._upstreams.pop(deployment_id, None)
        if upstream is not None:
            self._upstreams[deployment_id] = upstream
            pool = self._pools.get(upstream)
            if pool is None:
                pool = self._pools[upstream] = _Pool()
            pool.users += 1
        if previous is not None:
            pool = self._pools[previous]
            pool.users -= 1
            if not pool.users:  # nobody answers there any more: its idle connections are of no use
                del self._pools[previous]
                for conn in pool:
                    conn.transport.close()
                pool.clear()

    def inflight(self, deployment_id: str) -> int:
        return self._inflight.get(deployment_id, 0)

    async def drained(self, deployment_id: str, timeout: float) -> bool:
        if not self._inflight.get(deployment_id):
            return True
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._drain_waiters.setdefault(deployment_id, [])
        waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in waiters:
                waiters.remove(waiter)

    def last_request_at(self, deployment_id: str) -> float | None:
        return self._last_request.get(deployment_id)

    # -- used by the protocols ---------------------------------------------------------------------------------------
    def _deployment_for(self, raw_host: bytes) -> str | None:
        try:
            return self._host_cache[raw_host]
        except KeyError:
            pass
        deployment = self._routes.get(_host_name(raw_host))
        if len(self._host_cache) >= _MAX_HOST_CACHE:
            self._host_cache.clear()
        self._host_cache[raw_host] = deployment
        return deployment

    def _begin(self, deployment: str) -> None:
        self._inflight[deployment] = self._inflight.get(deployment, 0) + 1
        self._last_request[deployment] = monotonic()

    def _end(self, deployment: str) -> None:
        left = self._inflight[deployment] - 1
        if left:
            self._inflight[deployment] = left
            return
        del self._inflight[deployment]
        for waiter in self._drain_waiters.pop(deployment, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _take(self, upstream: Upstream) -> _Upstream | None:
        pool = self._pools.get(upstream)
        while pool:
            conn = pool.pop()  # the most recently used: least likely to have been closed by the app
            if not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    def _release(self, conn: _Upstream) -> None:
        pool = conn.pool
        if not pool.users:
            conn.transport.close()  # its deployment went elsewhere while this request ran
            return
        conn.idle_since = monotonic()
        pool.append(conn)
        if len(pool) > self.max_idle_per_upstream:
            pool.pop(0).transport.close()

    def _forget(self, conn: _Upstream) -> None:
        if conn in conn.pool:
            conn.pool.remove(conn)

    def _connect(self, upstream: Upstream) -> asyncio.Task:  # type: ignore[type-arg]
        loop = asyncio.get_running_loop()
        pool = self._pools.get(upstream)
        if pool is None:  # a pool nobody uses: the connection closes after one request
            pool = _Pool()
        connecting = loop.create_connection(lambda: _Upstream(self, pool), upstream.host, upstream.port)
        task = loop.create_task(asyncio.wait_for(connecting, self.connect_timeout))
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)
        return task

    def _wake(self, deployment: str) -> asyncio.Task[Upstream | None]:
        """One wake per deployment at a time; every request that arrives meanwhile waits for the same one."""
        task = self._wakes.get(deployment)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._run_waker(deployment))
            self._wakes[deployment] = task
            task.add_done_callback(lambda _: self._wakes.pop(deployment, None))
        return task

    async def _run_waker(self, deployment: str) -> Upstream | None:
        assert self._waker is not None
        try:
            upstream = await asyncio.wait_for(self._waker(deployment), self.wake_timeout)
        except TimeoutError:
            log.warning("waking deployment %s took longer than %.0f s", deployment, self.wake_timeout)
            raise
        except Exception:
            log.exception("waking deployment %s failed", deployment)
            raise
        if upstream is not None:
            self.set_upstream(deployment, upstream)
        return upstream

    async def _sweep(self) -> None:
        """Close upstream connections idle for too long and client connections that stopped talking."""
        while True:
            await asyncio.sleep(_SWEEP_EVERY)
            now = monotonic()
            for pool in self._pools.values():
                while pool and now - pool[0].idle_since > self.upstream_idle_timeout:
                    pool.pop(0).transport.close()
            for client in list(self._clients):
                if client.state == _HEAD:
                    limit = self.head_timeout if client.buf else self.keepalive_timeout
                    if now - client.idle_since > limit:
                        client.state = _CLOSED
                        client.transport.close()


def _parse_route(text: str) -> tuple[str, Upstream]:
    host, _, address = text.partition("=")
    ip, _, port = address.rpartition(":")
    if not host or not ip or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST=IP:PORT, got {text!r}")
    return host.lower(), Upstream(ip, int(port))


def run_standalone(make: Callable[[str, int], Router], argv: list[str] | None = None) -> None:
    """Serve fixed routes (each host is its own deployment) until SIGTERM or Ctrl-C: for benchmarks and debugging."""
    parser = argparse.ArgumentParser(description="Run a Runix router on its own (benchmarks, debugging).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--route", type=_parse_route, action="append", default=[], metavar="HOST=IP:PORT")
    args = parser.parse_args(argv)

    async def serve() -> None:
        router = make(args.host, args.port)
        router.set_routes({host: host for host, _ in args.route})
        for host, upstream in args.route:
            router.set_upstream(host, upstream)
        await router.start()
        print(f"runix router listening on {args.host}:{args.port}", flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        await router.stop()  # the Caddy backend has a process of its own to end

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(serve())


def main(argv: list[str] | None = None) -> None:
    run_standalone(EmbeddedRouter, argv)


if __name__ == "__main__":
    main()
