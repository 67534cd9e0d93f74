"""runix.client over its httpx transport against the real server, and the transport's connection handling against
a small HTTP peer that misbehaves on purpose (a server closing an idle connection, a log stream that breaks), which
the real server cannot be made to do on demand."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runix.client import RunixAPIError, RunixClient, RunixConnectionError
from runix.client.httpx_transport import HttpxTransport
from runix.client.transport import Response
from tests.support import ROOT, Account, RunixServer, free_port, tar_folder


@pytest.fixture
def sdk(server: RunixServer, account: Account) -> Iterator[RunixClient]:
    server.set_plan(account, "enterprise")
    with RunixClient(server.url, account.token) as client:
        assert isinstance(client.transport, HttpxTransport)  # the default
        yield client


def test_calls_and_errors(sdk: RunixClient, account: Account) -> None:
    assert sdk.user()["email"] == account.email
    created = sdk.create_project("over-a-transport", build_command="true")
    assert sdk.get_project("over-a-transport")["id"] == created["id"]
    assert sdk.update_project(created["id"], build_command=None, start_command="serve")["start_command"] == "serve"
    with pytest.raises(RunixAPIError) as missing:
        sdk.get_project("no-such-project")
    assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")
    with pytest.raises(RunixAPIError) as invalid:
        sdk.create_project("Not A Name!")
    assert invalid.value.status == 400 and invalid.value.code
    assert sdk.delete_project(created["id"])["id"] == created["id"]


def test_lists_follow_the_next_link_page_by_page(sdk: RunixClient) -> None:
    names = {f"paged-{i}" for i in range(5)}
    for name in names:
        sdk.create_project(name)
    sdk.page_size = 2
    assert names <= {p["name"] for p in sdk.list_projects()}
    assert len(sdk.list_projects(limit=3)) == 3


@pytest.mark.parametrize("shape", ["file", "chunks"])
def test_upload_and_follow_the_build_to_ready(sdk: RunixClient, shape: str) -> None:
    """A file goes up with a Content-Length, chunks with chunked transfer encoding; the log is followed to its end."""
    project = sdk.create_project(f"upload-{shape}")
    archive = tar_folder(ROOT / "examples" / "static")
    progress: list[tuple[int, int | None]] = []
    source = io.BytesIO(archive) if shape == "file" else (archive[i:i + 1000] for i in range(0, len(archive), 1000))
    deployment = sdk.create_deployment(project["name"], source, "production",
                                       on_progress=lambda sent, total: progress.append((sent, total)))
    assert progress[-1] == (len(archive), len(archive) if shape == "file" else None)
    log = sdk.follow_events(deployment["id"])
    lines = [event.get("text", "") for event in log]
    assert log.status == "READY", lines
    assert sdk.get_deployment(deployment["id"])["source_bytes"] == len(archive)
    assert [e["text"] for e in sdk.deployment_events(deployment["id"])][:len(lines)] == lines


def test_an_unreachable_server_is_a_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with RunixClient(url, "rnx_c_x") as client, pytest.raises(RunixConnectionError) as exc:
        client.user()
    assert exc.value.api_url == url and "connection refused" in exc.value.reason


class Peer(ThreadingHTTPServer):
    """A loopback HTTP/1.1 server whose handler the test writes; it counts the connections it accepted."""

    daemon_threads = True

    def __init__(self, handle: Callable[[BaseHTTPRequestHandler], None]):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                handle(self)

            def do_POST(self) -> None:
                handle(self)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.headers_seen: list[dict[str, str]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        self.connections += 1
        super().process_request(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def answer_json(handler: BaseHTTPRequestHandler, body: bytes, *, then_close: bool = False) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    # Closing without having said so (no `Connection: close`): the client thinks the connection can be reused.
    handler.close_connection = then_close


def test_a_keep_alive_connection_the_server_closed_is_replaced() -> None:
    peer = Peer(lambda h: answer_json(h, b'{"id": "usr_1"}', then_close=True))
    try:
        with RunixClient(peer.url, "t") as client:
            assert [client.request("GET", "/user") for _ in range(3)] == [{"id": "usr_1"}] * 3
        assert peer.connections == 3
    finally:
        peer.shutdown()


def answer_once_per_connection(handler: BaseHTTPRequestHandler, seen: list[str]) -> None:
    """Answers the first request on a connection; reads any later one (noted in `seen`, as each is) and hangs up
    without answering it, as a server whose keep-alive time runs out just then."""
    seen.append(f"{handler.command} {handler.path}")
    handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
    if getattr(handler, "answered", False):
        handler.close_connection = True
        return
    handler.answered = True  # type: ignore[attr-defined]
    answer_json(handler, b'{"ok": true}')


def test_a_get_is_sent_again_when_a_reused_connection_drops_it() -> None:
    """The server reads the second request on a connection and hangs up without answering (as when its keep-alive
    time runs out just then): a GET with no body, or a bytes one, is sent once more on a new connection."""
    peer = Peer(lambda handler: answer_once_per_connection(handler, []))
    try:
        with RunixClient(peer.url, "t") as client:
            assert [client.request("GET", "/user") for _ in range(3)] == [{"ok": True}] * 3
        assert peer.connections == 3
    finally:
        peer.shutdown()


def test_a_post_is_never_sent_twice() -> None:
    """The server may have carried out a POST before the connection broke: it is not sent again on a new one."""
    seen: list[str] = []
    peer = Peer(lambda handler: answer_once_per_connection(handler, seen))
    try:
        with RunixClient(peer.url, "t") as client:
            assert client.request("POST", "/projects", json={"name": "a"}) == {"ok": True}
            with pytest.raises(RunixConnectionError):
                client.request("POST", "/projects", json={"name": "b"})
        assert seen == ["POST /projects", "POST /projects"]
    finally:
        peer.shutdown()


def test_an_answer_sent_before_the_upload_ends_is_the_one_reported() -> None:
    """A proxy's size limit, say: it answers 413 at once and closes without reading the body; the client reports
    that answer, not the broken pipe."""
    def refuse(handler: BaseHTTPRequestHandler) -> None:
        body = b'{"error": "too big for the proxy", "code": "TOO_BIG"}'
        handler.send_response(413)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True

    peer = Peer(refuse)
    try:
        for source in (io.BytesIO(b"x" * (16 << 20)), (b"x" * 65536 for _ in range(256))):
            with RunixClient(peer.url, "t") as client, pytest.raises(RunixAPIError) as refused:
                client.create_deployment("p", source)
            assert (refused.value.status, refused.value.code) == (413, "TOO_BIG"), refused.value
    finally:
        peer.shutdown()


def test_a_malformed_api_url_is_a_connection_error() -> None:
    for url in ("http://[zz]:1", "http://127.0.0.1:99999"):
        with RunixClient(url, "t") as client, pytest.raises(RunixConnectionError):
            client.user()


def test_a_connection_idle_too_long_is_not_reused() -> None:
    """A connection idle longer than the keep-alive expiry is not reused (servers close theirs after a few seconds,
    and a POST on one closing just then would be lost, not being resent): a new one carries the request."""
    peer = Peer(lambda h: answer_json(h, b"[]"))
    try:
        with RunixClient(peer.url, "t", transport=HttpxTransport(keepalive_expiry=0.2)) as client:
            client.request("GET", "/projects")
            client.request("GET", "/projects")  # soon after: the same connection
            time.sleep(0.3)
            client.request("GET", "/projects")
        assert peer.connections == 2
    finally:
        peer.shutdown()


def test_an_open_connection_is_reused() -> None:
    peer = Peer(lambda h: answer_json(h, b"[]"))
    try:
        with RunixClient(peer.url, "t") as client:
            for _ in range(5):
                assert client.request("GET", "/projects") == []
        assert peer.connections == 1
    finally:
        peer.shutdown()


def test_a_broken_log_stream_resumes_after_the_last_event() -> None:
    """The first stream breaks after two events (mid-body, no end); the client reconnects with Last-Event-ID and
    shows each event once, though the server sends the second again."""
    def stream(handler: BaseHTTPRequestHandler) -> None:
        peer.headers_seen.append(dict(handler.headers))
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(text: str) -> None:
            data = text.encode()
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        if "Last-Event-ID" not in handler.headers:
            send('id: 1\ndata: {"text": "one"}\n\n')
            send('id: 2\ndata: {"text": "two"}\n\n')
            handler.close_connection = True  # gone without the last chunk: the body is cut short
            return
        send(': keep-alive\n\nid: 2\ndata: {"text": "two"}\n\n')
        send('id: 3\ndata: {"text": "three"}\n\nevent: end\ndata: {"status": "READY"}\n\n')
        handler.wfile.write(b"0\r\n\r\n")

    peer = Peer(stream)
    try:
        with RunixClient(peer.url, "t") as client:
            log = client.follow_events("dpl_1")
            assert [event["text"] for event in log] == ["one", "two", "three"]
            assert log.status == "READY"
        assert [h.get("Last-Event-ID") for h in peer.headers_seen] == [None, "2"]
        assert peer.headers_seen[0]["Authorization"] == "Bearer t"
    finally:
        peer.shutdown()


def test_link_header_targets() -> None:
    def link(value: str, rel: str) -> str | None:
        return Response(200, "OK", [("Link", value)], read_all=lambda: b"", lines=iter, release=lambda: None).link(rel)

    value = '<http://api/projects?limit=2&cursor=prj_a,b>; rel="next", <http://api/projects>; rel="first prev"'
    assert link(value, "next") == "http://api/projects?limit=2&cursor=prj_a,b"
    assert link(value, "prev") == "http://api/projects"
    assert link(value, "last") is None
    assert link("", "next") is None


def test_requests_go_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY (and the others httpx follows) is honoured: the peer, as the proxy, gets the absolute URL."""
    seen: list[str] = []

    def proxy(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.path)
        answer_json(handler, b'{"id": "usr_1"}')

    peer = Peer(proxy)
    for name in ("https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", peer.url)
    try:
        with RunixClient("http://api.runix.test", "t") as client:
            assert client.user() == {"id": "usr_1"}
        assert seen == ["http://api.runix.test/user"]
    finally:
        peer.shutdown()
