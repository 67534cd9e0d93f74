"""RunixClient: a typed method for each REST API endpoint, over a transport (runix.client.transport)."""

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Literal, NotRequired, TypedDict
from urllib.parse import quote, urlencode

from runix import __version__
from runix.client.transport import (
    Body,
    ConnectFailed,
    ConnectionBroken,
    Response,
    TimedOut,
    Transport,
    TransportError,
)

DEFAULT_API_URL = "http://127.0.0.1:8000"
SETTLED = frozenset({"READY", "ERROR", "CANCELED"})
EVENTS_PAGE = 1000
UPLOAD_CHUNK = 64 * 1024
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

EnvTarget = Literal["production", "preview", "development"]
DeployTarget = Literal["production", "preview"]


class User(TypedDict):
    id: str
    email: str
    name: str | None
    plan: str
    created_at: str


class Session(TypedDict):
    token: str
    expires_at: str | None
    user: User


class Token(TypedDict):
    id: str
    name: str
    kind: str
    created_at: str
    expires_at: str | None


class CreatedToken(Token):
    token: str


class Project(TypedDict):
    id: str
    name: str
    framework: str | None
    install_command: str | None
    build_command: str | None
    start_command: str | None
    root_directory: str | None
    production_deployment_id: str | None
    urls: list[str]
    created_at: str
    updated_at: str


class Deployment(TypedDict, total=False):
    id: str
    project_id: str
    project: str
    url: str
    status: str
    target: str
    error: str | None
    created_at: str
    build_started_at: str | None
    build_finished_at: str | None
    ready_at: str | None
    finished_at: str | None
    source_bytes: int | None
    build_kind: str | None
    is_production: bool


class DeploymentEvent(TypedDict, total=False):
    id: int
    created_at: str
    type: str
    stream: str
    text: str


class EnvVar(TypedDict):
    id: str
    key: str
    value: NotRequired[str]  # absent for a sensitive variable (write-only)
    targets: list[str]
    type: str
    created_at: str
    updated_at: str


class DomainVerification(TypedDict):
    type: str
    name: str
    value: str


class Domain(TypedDict):
    id: str
    name: str
    project_id: str
    verified: bool
    verification: DomainVerification
    created_at: str
    verified_at: str | None
    expires_at: str | None


class Billing(TypedDict):
    plan: str
    limits: dict[str, int | None]
    usage: dict[str, int]
    plans: list[dict[str, Any]]


class DeviceAuthorization(TypedDict):
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class Checkout(TypedDict):
    id: str
    url: str
    plan: str


class RunixAPIError(Exception):
    """An API call that failed: the HTTP status, the API's error code and message, and Retry-After for 429s."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None,
                 details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})" if self.status else self.message


class RunixConnectionError(RunixAPIError):
    """The server did not answer: not running, wrong URL, or the network is down."""

    def __init__(self, api_url: str, reason: str):
        super().__init__(0, "UNREACHABLE", f"Could not reach the Runix API at {api_url}: {reason}")
        self.api_url = api_url
        self.reason = reason


def _error_from(response: Response) -> RunixAPIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        message, code = str(body["error"]), str(body.get("code") or "ERROR")
        # The device grant (RFC 8628) names its outcome in `error` and explains it in `error_description`.
        if body.get("error_description"):
            code, message = message, str(body["error_description"])
    else:
        message, code = (response.text.strip()[:200] or response.reason), "ERROR"
    retry_after = response.headers.get("retry-after")
    return RunixAPIError(response.status, code, message,
                         int(retry_after) if retry_after and retry_after.isascii() and retry_after.isdigit() else None,
                         body.get("details") if isinstance(body, dict) else None)


class RunixClient:
    """A connection to one Runix API with one token (or none, for the sign-in calls)."""

    page_size = 100  # items asked for per request when listing (the API's most)

    def __init__(self, api_url: str = DEFAULT_API_URL, token: str | None = None, *, timeout: float = 30.0,
                 max_rate_limit_wait: float = 120.0, on_rate_limit: Callable[[int], None] | None = None,
                 transport: Transport | None = None):
        """`transport` defaults to httpx (runix.client.httpx_transport.HttpxTransport)."""
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.max_rate_limit_wait = max_rate_limit_wait
        self.on_rate_limit = on_rate_limit
        self.headers = {"User-Agent": f"runix/{__version__}", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if transport is None:
            from runix.client.httpx_transport import HttpxTransport

            # Plain-HTTP servers never use TLS, so skip loading the CA bundle (it costs start-up time).
            transport = HttpxTransport(timeout, verify=not self.api_url.startswith("http://"))
        self.transport = transport

    def __enter__(self) -> "RunixClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    # Plumbing
    def _send(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
              body: Body = None, headers: dict[str, str] | None = None, stream: bool = False) -> Response:
        """One request to `path` (under the API URL; or an absolute URL the API gave, such as a next page). A 429
        on a GET waits for Retry-After and tries again (up to max_rate_limit_wait seconds)."""
        url = path if "://" in path else self.api_url + path
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        if query:
            url += ("&" if "?" in url else "?") + query
        headers = {**self.headers, **(headers or {})}
        if json is not None:
            body, headers["Content-Type"] = _json_bytes(json), "application/json"
        waited = 0.0
        while True:
            try:
                response = self.transport.send(method, url, headers, body, stream=stream)
            except TransportError as exc:
                raise RunixConnectionError(self.api_url, _reason(exc)) from exc
            if response.is_success:
                return response
            response.content  # noqa: B018 - an error's body is read whole (and the connection released)
            error = _error_from(response)
            wait = error.retry_after or 1
            if (response.status == 429 and method == "GET"
                    and waited + wait <= self.max_rate_limit_wait):
                if self.on_rate_limit:
                    self.on_rate_limit(wait)
                time.sleep(wait)
                waited += wait
                continue
            raise error

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                body: Body = None, headers: dict[str, str] | None = None) -> Any:
        """Calls the API and returns the decoded JSON body (None when it is empty)."""
        response = self._send(method, path, params=params, json=json, body=body, headers=headers)
        return response.json() if response.content else None

    def _pages(self, path: str, params: dict[str, Any] | None = None, limit: int | None = None) -> list[Any]:
        """Items of a list endpoint, following `Link: rel="next"` until `limit` items (all when None)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        query["limit"] = min(limit or self.page_size, self.page_size)
        items: list[Any] = []
        url: str | None = path
        while url:
            response = self._send("GET", url, params=query if url == path else None)
            items.extend(response.json())
            if limit is not None and len(items) >= limit:
                return items[:limit]
            url = response.link("next")
        return items

    # Platform
    def health(self) -> dict[str, Any]:
        return self.request("GET", "/healthz")

    # Auth and account
    def request_email_code(self, email: str) -> None:
        """Mails a one-time sign-in code to the address."""
        self.request("POST", "/auth/email", json={"email": email})

    def verify_email_code(self, email: str, code: str) -> Session:
        """Exchanges the mailed code for a session token."""
        return self.request("POST", "/auth/email/verify", json={"email": email, "code": code})

    def create_cli_token(self, name: str | None = None) -> CreatedToken:
        """A long-lived CLI token; needs a session token. Its value is shown only in this answer."""
        return self.request("POST", "/auth/cli-token", json={"name": name} if name else None)

    def start_device_login(self, client_name: str | None = None, interval: int | None = None) -> DeviceAuthorization:
        """Starts the OAuth 2.0 device authorization grant (RFC 8628): the user approves in the dashboard."""
        return self.request("POST", "/auth/device", json=_present({"client_name": client_name, "interval": interval}))

    def approve_device_login(self, user_code: str, approve: bool = True) -> dict[str, Any]:
        """With a session token: approves (or denies) the CLI login showing `user_code`."""
        return self.request("POST", "/auth/device/approve", json={"user_code": user_code, "approve": approve})

    def poll_device_login(self, device_code: str) -> CreatedToken:
        """One poll of the device grant: the CLI token once approved, else a RunixAPIError whose code is
        authorization_pending, slow_down, access_denied or expired_token."""
        body = self.request("POST", "/auth/device/token",
                            json={"device_code": device_code, "grant_type": DEVICE_GRANT})
        return {**body, "token": body.get("access_token", body.get("token"))}

    def list_tokens(self, limit: int | None = None) -> list[Token]:
        """Your active tokens, newest first: every page, or the first `limit`."""
        return self._pages("/auth/tokens", limit=limit)

    def revoke_token(self, token_id: str) -> Token:
        return self.request("DELETE", f"/auth/tokens/{_q(token_id)}")

    def logout(self) -> None:
        """Revokes the token this client uses."""
        self.request("POST", "/auth/logout")

    def user(self) -> User:
        return self.request("GET", "/user")

    # Projects
    def list_projects(self, limit: int | None = None) -> list[Project]:
        return self._pages("/projects", limit=limit)

    def get_project(self, project: str) -> Project:
        """By id or name."""
        return self.request("GET", f"/projects/{_q(project)}")

    def create_project(self, name: str, **settings: str | None) -> Project:
        """settings: framework, install_command, build_command, start_command, root_directory."""
        return self.request("POST", "/projects", json={"name": name, **_present(settings)})

    def update_project(self, project: str, **changes: str | None) -> Project:
        return self.request("PATCH", f"/projects/{_q(project)}", json=_present(changes))

    def delete_project(self, project: str) -> Project:
        return self.request("DELETE", f"/projects/{_q(project)}")

    # Deployments
    def create_deployment(self, project: str, source: IO[bytes] | Iterable[bytes], target: DeployTarget = "preview",
                          on_progress: Callable[[int, int | None], None] | None = None) -> Deployment:
        """Uploads a .tar.gz and starts a deployment. `source` is an open binary file, or the archive's chunks as they
        are made (sent with chunked transfer encoding, so an archive can be packed while it is uploaded).
        `on_progress(sent, total)` is called as the archive goes out, in bytes (total None for chunks)."""
        form = _Multipart({"project": project, "target": target}, "source", "source.tar.gz", "application/gzip",
                          _Upload(source, on_progress))
        return self.request("POST", "/deployments", body=form.body(), headers=form.headers())

    def list_deployments(self, project: str | None = None, status: str | None = None, target: str | None = None,
                         limit: int | None = None) -> list[Deployment]:
        return self._pages("/deployments", {"project": project, "status": status, "target": target}, limit)

    def get_deployment(self, deployment_id: str) -> Deployment:
        return self.request("GET", f"/deployments/{_q(deployment_id)}")

    def deployment_events(self, deployment_id: str, since: int | None = None) -> list[DeploymentEvent]:
        """The build and runtime log so far, oldest first (only events after id `since`, when given)."""
        events: list[DeploymentEvent] = []
        while True:
            batch = self.request("GET", f"/deployments/{_q(deployment_id)}/events",
                                 params=_present({"since": since, "limit": EVENTS_PAGE}))
            events.extend(batch)
            if len(batch) < EVENTS_PAGE:
                return events
            since = batch[-1]["id"]

    def follow_events(self, deployment_id: str) -> "EventStream":
        """The log as it happens (server-sent events), until the deployment settles; iterate over it for the
        events, then read its `status`. A dropped connection is resumed after the last event seen
        (Last-Event-ID), so no line is shown twice or lost."""
        return EventStream(self, deployment_id)

    def _follow(self, deployment_id: str, stream: "EventStream") -> Iterator[DeploymentEvent]:
        last_id: str | None = None
        for attempt in range(6):
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                response = self._send("GET", f"/deployments/{_q(deployment_id)}/events", params={"follow": "true"},
                                      headers=headers, stream=True)
                try:
                    for event_id, kind, data in _server_sent_events(response.iter_lines()):
                        if kind == "end":  # the deployment settled: {"status": ...}
                            stream.status = data.get("status") if isinstance(data, dict) else None
                            return
                        if event_id is not None:
                            if last_id is not None and _not_after(event_id, last_id):
                                continue
                            last_id = event_id
                        yield data
                finally:
                    response.close()
                return  # closed without an end event: the server stopped; the caller reads the status
            except (ConnectionBroken, RunixConnectionError) as exc:
                broken = exc if isinstance(exc, ConnectionBroken) else exc.__cause__
                if not isinstance(broken, ConnectionBroken):
                    raise
                if attempt == 5:
                    raise RunixConnectionError(self.api_url, f"the log stream kept breaking ({broken})") from exc
                time.sleep(0.2 * (attempt + 1))
            except TransportError as exc:
                raise RunixConnectionError(self.api_url, _reason(exc)) from exc

    def wait_until_settled(self, deployment_id: str, poll: float = 0.5, timeout: float = 900.0) -> Deployment:
        """Polls until READY, ERROR or CANCELED."""
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.get_deployment(deployment_id)
            if deployment["status"] in SETTLED or time.monotonic() > deadline:
                return deployment
            time.sleep(poll)

    def cancel_deployment(self, deployment_id: str) -> Deployment:
        return self.request("POST", f"/deployments/{_q(deployment_id)}/cancel")

    def promote_deployment(self, deployment_id: str) -> Deployment:
        """Makes a READY deployment the production one, without a rebuild (also how rollback works)."""
        return self.request("POST", f"/deployments/{_q(deployment_id)}/promote")

    def delete_deployment(self, deployment_id: str) -> Deployment:
        return self.request("DELETE", f"/deployments/{_q(deployment_id)}")

    # Environment variables
    def list_env(self, project: str, limit: int | None = None) -> list[EnvVar]:
        """The project's variables by key: every page, or the first `limit`."""
        return self._pages(f"/projects/{_q(project)}/env", limit=limit)

    def add_env(self, project: str, key: str, value: str, targets: Iterable[EnvTarget] | None = None,
                sensitive: bool = False) -> EnvVar:
        body: dict[str, Any] = {"key": key, "value": value, "type": "sensitive" if sensitive else "plain"}
        if targets:
            body["targets"] = list(targets)
        return self.request("POST", f"/projects/{_q(project)}/env", json=body)

    def update_env(self, project: str, env_id: str, **changes: Any) -> EnvVar:
        return self.request("PATCH", f"/projects/{_q(project)}/env/{_q(env_id)}", json=_present(changes))

    def remove_env(self, project: str, env_id: str) -> EnvVar:
        return self.request("DELETE", f"/projects/{_q(project)}/env/{_q(env_id)}")

    # Domains
    def list_domains(self, project: str, limit: int | None = None) -> list[Domain]:
        """The project's domains by name: every page, or the first `limit`."""
        return self._pages(f"/projects/{_q(project)}/domains", limit=limit)

    def add_domain(self, project: str, name: str) -> Domain:
        return self.request("POST", f"/projects/{_q(project)}/domains", json={"name": name})

    def verify_domain(self, project: str, name: str) -> Domain:
        return self.request("POST", f"/projects/{_q(project)}/domains/{_q(name)}/verify")

    def remove_domain(self, project: str, name: str) -> Domain:
        return self.request("DELETE", f"/projects/{_q(project)}/domains/{_q(name)}")

    # Billing
    def billing(self) -> Billing:
        return self.request("GET", "/billing")

    def change_plan(self, plan: str) -> Billing:
        return self.request("PUT", "/billing/plan", json={"plan": plan})

    def set_account_plan(self, account: str, plan: str) -> Billing:
        """Admins: sets the plan of any account (id or email)."""
        return self.request("PUT", f"/billing/accounts/{_q(account)}/plan", json={"plan": plan})

    def checkout(self, plan: str) -> Checkout:
        return self.request("POST", "/billing/checkout", json={"plan": plan})


class EventStream:
    """A deployment's log as it happens: iterate for the events; `status` is the final status once the stream
    ends (None when the server closed it without saying)."""

    def __init__(self, client: RunixClient, deployment_id: str):
        self.client = client
        self.deployment_id = deployment_id
        self.status: str | None = None

    def __iter__(self) -> Iterator[DeploymentEvent]:
        return self.client._follow(self.deployment_id, self)


class _Upload:
    """The archive's bytes as they are sent, counted for `on_progress(sent, total)`. A file is sent from its start and
    has a size (`total`); chunks are sent as they come, and their total is not known ahead (None)."""

    def __init__(self, source: IO[bytes] | Iterable[bytes], on_progress: Callable[[int, int | None], None] | None):
        self.on_progress = on_progress
        self.total: int | None = None
        if hasattr(source, "read"):
            file: IO[bytes] = source  # type: ignore[assignment]
            self.total = file.seek(0, 2)
            file.seek(0)
            self.pieces: Iterable[bytes] = iter(lambda: file.read(UPLOAD_CHUNK), b"")
        else:
            self.pieces = source  # type: ignore[assignment]

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for data in self.pieces:
            if data:
                sent += len(data)
                if self.on_progress:
                    self.on_progress(sent, self.total)
                yield data


class _Multipart:
    """A multipart/form-data body (RFC 7578): text fields, then one file, streamed from its `_Upload` as it is sent.
    Sized (Content-Length) when the file's size is known, else sent with chunked transfer encoding."""

    def __init__(self, fields: dict[str, str], file_field: str, filename: str, content_type: str, upload: _Upload):
        self.boundary = os.urandom(16).hex()
        parts = [f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                 for name, value in fields.items()]
        parts.append(f'--{self.boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
                     f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n')
        self.head = "".join(parts).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.upload = upload

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        if self.upload.total is not None:
            headers["Content-Length"] = str(len(self.head) + self.upload.total + len(self.tail))
        return headers

    def body(self) -> Iterator[bytes]:
        yield self.head
        yield from self.upload
        yield self.tail


def _q(segment: str) -> str:
    """One path segment, escaped (a name can never reach another endpoint)."""
    return quote(str(segment), safe="")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _reason(exc: TransportError) -> str:
    if isinstance(exc, ConnectFailed):
        return "connection refused or host unknown (is `runix server` running there?)"
    if isinstance(exc, TimedOut):
        return "it did not answer in time"
    return str(exc) or type(exc).__name__


def _not_after(candidate: str, seen: str) -> bool:
    """True when event `candidate` was delivered already (its id is not after `seen`)."""
    try:
        return int(candidate) <= int(seen)
    except ValueError:
        return False


def _server_sent_events(lines: Iterable[str]) -> Iterator[tuple[str | None, str, Any]]:
    """(id, event type, decoded data) for each event of a text/event-stream; comments (keep-alives) are skipped."""
    event_id: str | None = None
    kind = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                payload = "\n".join(data)
                try:
                    yield event_id, kind, json.loads(payload)
                except ValueError:
                    yield event_id, kind, {"text": payload}
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        elif name == "event":
            kind = value
