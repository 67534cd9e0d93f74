"""The local runtime: each app is a process group on this machine, in a bubblewrap sandbox inside a cell of its own
(uid, cgroup with the plan's limits, network namespace: see `cells`).

An app listens on its `PORT` in its own network namespace, where nothing else listens; the router reaches it at the
cell's address. It counts as up once it answers any HTTP response there. If it exits while it should run (the
kernel's out-of-memory kill included, which is said as such), every process of its cell is killed and it is started
again after 0.5 s, 1 s, 2 s, ... (at most 30 s; the delay resets once it has stayed up for a minute). Without the
sandbox (RUNIX_SANDBOX=false) an app listens on a free loopback port instead, which another process could take
first: then it starts again on a new one.

The release is read-only, so Python could not keep the bytecode it compiles there and compiled the app and its
dependencies again on every start and wake. Each deployment gets a bytecode cache outside its release instead
(PYTHONPYCACHEPREFIX), deleted with the deployment. Once the app first answers, the release's Python files are
compiled into it in the background, at the lowest CPU priority, by compileall run without `site` (so no code of the
app or its packages runs with write access to it); the app itself only reads it. So an app cannot fill the disk
through its cache, nor plant bytecode for its later starts, and its first start writes nothing (writing ~100 files
while the app starts cost a first deploy ~0.1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from runix.layout import FILLED_SUFFIX, Layout
from runix.pipeline import processes, sandbox
from runix.pipeline.cells import Cell, CellLimits, CellPool, IsolationUnavailable, make_pool
from runix.pipeline.processes import BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER
from runix.pipeline.release import SYSTEM_PATH, own_tree, system_python
from runix.pipeline.runtime import Address, AddressSink, AppFailed, AppSpec, AppState, LogSink

log = structlog.get_logger("runix.runtime")

HEALTH_POLL_SECONDS = 0.005
STOP_GRACE_SECONDS = 5.0
BASE_ENV = {"PATH": SYSTEM_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}  # HOME: the private /tmp
FILL_SECONDS = 300.0  # the most a filler may compile for; what it compiled by then is kept
PORT_ATTEMPTS = 5  # starts on a new port when another process took the last one, before giving up
APP_PORT = 8000  # every app's PORT in its own network namespace
# Netlink's sock_diag, from linux/netlink.h, linux/sock_diag.h and linux/inet_diag.h
_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLMSG_ERROR, _NLMSG_DONE = 4, 20, 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP, _TCP_LISTEN = 0x1, 0x300, 10


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """True when host:port cannot be bound the way servers bind (SO_REUSEADDR: closed connections do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _listening_sockets(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on `port` (any address), asked of the kernel over sock_diag netlink.

    Not /proc/net/tcp: reading it walks every bucket of the connection table (~5 ms here); asking for listening
    sockets only walks those. Empty when the kernel does not answer.
    """
    inodes: set[int] = set()
    with contextlib.suppress(OSError), socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        for family in (socket.AF_INET, socket.AF_INET6):
            # struct inet_diag_req_v2: family, protocol, ext, pad, states; then a zeroed inet_diag_sockid (48 bytes).
            request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN) + bytes(48)
            nl.send(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP,
                                0, 0) + request)
            while (data := nl.recv(65536)) and not _read_diag(data, port, inodes):
                pass
    return inodes


def _read_diag(data: bytes, port: int, inodes: set[int]) -> bool:
    """Adds the inodes of the sockets on `port` in one netlink reply to `inodes`; True once the dump is over."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if kind in (_NLMSG_DONE, _NLMSG_ERROR) or length < 16:
            return True
        # struct inet_diag_msg after the 16-byte header: 4 bytes, inet_diag_sockid (sport first, big-endian),
        # then expires, rqueue, wqueue, uid and inode.
        (sport,) = struct.unpack_from("!H", data, offset + 20)
        (inode,) = struct.unpack_from("=I", data, offset + 16 + 4 + 48 + 16)
        if sport == port:
            inodes.add(inode)
        offset += (length + 3) & ~3
    return False


def _sockets_of_tree(pid: int) -> set[int] | None:
    """Inodes of the sockets that `pid` and its descendants hold; None when /proc cannot tell."""
    held: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo += [int(child) for child in children.read().split()]
            for fd in os.listdir(f"/proc/{current}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{current}/fd/{fd}")
                    if target.startswith("socket:["):
                        held.add(int(target[len("socket:["):-1]))
        except OSError:
            if os.path.exists(f"/proc/{current}"):
                return None  # no access, or a kernel without .../children
    return held


def taken_by_another(pid: int, port: int) -> bool:
    """True when what listens on `port` is none of process `pid` and its descendants: another process took it.
    False when the app holds it, nothing listens, or /proc cannot tell (then the answer is taken as the app's)."""
    listening = _listening_sockets(port)
    if not listening:
        return False
    held = _sockets_of_tree(pid)
    return held is not None and not listening & held


async def answers_http(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when something on host:port answers an HTTP request with a status line (any status)."""
    # asyncio.timeout rather than wait_for: on Python 3.11 wait_for can swallow a cancellation (stop() then waits on).
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: runix-health\r\nConnection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(timeout):
            first = await reader.readline()
        return first.startswith(b"HTTP/")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def link_system_bytecode(target: Path) -> None:
    """Links the compiled standard library of the system's Pythons (/usr/lib/python3.X/**/__pycache__/*.pyc) into
    `target` at the paths PYTHONPYCACHEPREFIX looks them up (<prefix>/<source folder>/<name>.pyc).

    With a cache prefix, Python no longer reads the __pycache__ folders beside the sources, so an empty cache would
    start by compiling the standard library (about 0.2 s of a Flask app's first start). Links rather than copies:
    apps read them through a read-only bind, and Python replaces (never writes through) a pyc it finds stale.
    """
    for lib in glob.glob("/usr/lib/python3.*"):
        for folder, _, names in os.walk(lib):
            if os.path.basename(folder) != "__pycache__":
                continue
            linked = target / os.path.dirname(folder).lstrip("/")
            linked.mkdir(parents=True, exist_ok=True)
            for name in names:
                with contextlib.suppress(FileExistsError):
                    (linked / name).symlink_to(os.path.join(folder, name))


class _PortTaken(Exception):
    """Another process took the port handed to the app before the app listened on it."""


def _python_folders(spec: AppSpec) -> list[Path]:
    """What the filler compiles: the app's folder and the release's virtualenv, where the release has Python (a
    virtualenv, or .py files at the app's top level; a static site or a Node app has neither, and gets no filler)."""
    venv = spec.release_dir / ".venv"
    if venv.is_dir():
        return [spec.app_dir, venv]
    return [spec.app_dir] if any(spec.app_dir.glob("*.py")) else []


@dataclass
class _App:
    spec: AppSpec
    state: AppState = AppState.STOPPED
    proc: asyncio.subprocess.Process | None = None
    port: int | None = None
    up: asyncio.Event = field(default_factory=asyncio.Event)
    failure: AppFailed | None = None
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    supervisor: asyncio.Task | None = None
    pumps: list[asyncio.Task] = field(default_factory=list)
    wanted: bool = True  # False once stop() was asked: an exit is then not a crash
    restarts: int = 0
    filler: asyncio.Task | None = None  # compiling the release into its bytecode cache, after the first start
    cell: Cell | None = None  # held from the first start until the app is stopped

    @property
    def address(self) -> Address | None:
        if self.port is None:
            return None
        host = self.cell.address if self.cell is not None and self.cell.address else None
        return (host or "127.0.0.1", self.port)


DEFAULT_LIMITS = CellLimits(memory_mb=512, max_processes=128, cpu_weight=100, tmp_mb=64)


class LocalRuntime:
    def __init__(self, *, on_log: LogSink, on_port: AddressSink, health_timeout: float = 60.0,
                 limits: CellLimits | None = None, sandbox_enabled: bool = True, cells: CellPool | None = None,
                 host: str = "127.0.0.1"):
        self.on_log = on_log
        self.on_port = on_port
        self.health_timeout = health_timeout
        self.limits = limits or DEFAULT_LIMITS  # an app's whose spec names none
        self.sandbox_enabled = sandbox_enabled
        self._cells = cells
        self.host = host
        self._apps: dict[str, _App] = {}
        # The data dir's layout, learnt from the first release started (the runtime is not told it otherwise).
        self._layout: Layout | None = None
        self._layout_ready: asyncio.Future | None = None

    @property
    def cells(self) -> CellPool:
        """The pool of cells apps run in (made on first use when the runtime was handed none)."""
        if self._cells is None:
            self._cells = make_pool()
        return self._cells

    # The Runtime interface
    async def start(self, spec: AppSpec) -> Address:
        app = self._apps.get(spec.deployment_id)
        if app is None or app.state is AppState.STOPPED:
            app = _App(spec)
            self._apps[spec.deployment_id] = app
            app.state = AppState.STARTING
            app.supervisor = asyncio.create_task(self._supervise(app), name=f"runix-app-{spec.deployment_id}")
        await app.up.wait()
        if app.address is None:
            raise app.failure or AppFailed("The app stopped before it answered", list(app.lines))
        return app.address

    async def stop(self, deployment_id: str) -> None:
        app = self._apps.get(deployment_id)
        if app is None:
            return
        app.wanted = False
        if app.filler is not None:
            app.filler.cancel()
            await asyncio.wait({app.filler})
        # Cancel until the supervisor is done: a cancellation can be lost inside library code.
        while app.supervisor and not app.supervisor.done():
            app.supervisor.cancel()
            await asyncio.wait({app.supervisor}, timeout=1.0)
        if self._apps.get(deployment_id) is app:
            del self._apps[deployment_id]

    async def remove(self, deployment_id: str) -> None:
        await self.stop(deployment_id)
        if self._layout is not None:  # else no app ran yet: the first one's start sweeps the orphaned caches
            await asyncio.to_thread(shutil.rmtree, self._layout.bytecode_cache(deployment_id), ignore_errors=True)
            self._layout.bytecode_filled(deployment_id).unlink(missing_ok=True)

    def status(self, deployment_id: str) -> AppState:
        app = self._apps.get(deployment_id)
        return app.state if app else AppState.STOPPED

    def address(self, deployment_id: str) -> Address | None:
        app = self._apps.get(deployment_id)
        return app.address if app and app.state is AppState.RUNNING else None

    def running(self) -> list[str]:
        return [d for d, app in self._apps.items() if app.state is not AppState.STOPPED]

    async def stop_all(self) -> None:
        async def timed_stop(deployment_id: str) -> None:
            started, state = time.monotonic(), self.status(deployment_id)
            await self.stop(deployment_id)
            if time.monotonic() - started > 3:
                log.warning("slow app stop", deployment_id=deployment_id, state=state,
                            seconds=round(time.monotonic() - started, 1))

        await asyncio.gather(*(timed_stop(d) for d in list(self._apps)), return_exceptions=True)

    # The bytecode cache
    async def _bytecode_cache(self, layout: Layout, deployment_id: str) -> Path | None:
        """The deployment's bytecode cache, ready to bind (None if it cannot be made: the app then runs without)."""
        if self._layout_ready is None:
            self._layout = layout
            self._layout_ready = asyncio.ensure_future(asyncio.to_thread(self._prepare_bytecode, layout))
        await asyncio.shield(self._layout_ready)
        cache = layout.bytecode_cache(deployment_id)
        try:
            layout.system_bytecode.mkdir(parents=True, exist_ok=True)  # bound read-only: it must exist
            cache.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(cache / "usr"):  # as the sandbox sees it: the resolved path is what it binds
                (cache / "usr").symlink_to(layout.system_bytecode.resolve() / "usr")
        except OSError as exc:
            log.warning("no bytecode cache", deployment_id=deployment_id, error=str(exc))
            return None
        return cache.resolve()  # where the sandbox binds it

    @staticmethod
    def _prepare_bytecode(layout: Layout) -> None:
        """Once per server: the standard library's links, and no cache of a deployment deleted while none ran."""
        try:
            link_system_bytecode(layout.system_bytecode)
            layout.bytecode.mkdir(parents=True, exist_ok=True)
            for cache in layout.bytecode.iterdir():
                if not layout.release_dir(cache.name.removesuffix(FILLED_SUFFIX)).exists():
                    if cache.is_dir() and not cache.is_symlink():
                        shutil.rmtree(cache, ignore_errors=True)
                    else:
                        cache.unlink(missing_ok=True)
        except OSError as exc:  # apps then start without (some of) it
            log.warning("could not prepare the bytecode caches", error=str(exc))

    # Keeping one app alive
    async def _supervise(self, app: _App) -> None:
        """Starts the app, then restarts it whenever it exits, until stop() cancels this task."""
        delay = BACKOFF_FIRST
        try:
            while app.wanted:
                started = time.monotonic()
                try:
                    await self._launch(app)
                except AppFailed as exc:
                    await self._terminate(app)
                    if app.restarts == 0:  # the first start failed: the deployer decides what happens next
                        app.failure = exc
                        app.state = AppState.STOPPED
                        app.up.set()
                        return
                    self._system(app, f"{exc.message}; trying again in {delay:g}s")
                else:
                    app.state = AppState.RUNNING
                    app.failure = None
                    self.on_port(app.spec.deployment_id, app.address)
                    app.up.set()
                    assert app.proc is not None
                    code = await app.proc.wait()
                    app.up.clear()  # whoever asks for the app now waits for the restart
                    await self._finish_pumps(app)
                    await self._terminate(app)
                    app.port = None
                    self.on_port(app.spec.deployment_id, None)
                    if time.monotonic() - started > STABLE_AFTER:
                        delay = BACKOFF_FIRST
                    self._system(app, f"The app {self._exit_reason(app, code)}; restarting it in {delay:g}s")
                app.state = AppState.RESTARTING
                app.restarts += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        except asyncio.CancelledError:
            await self._stopped(app)
            raise
        await self._stopped(app)  # stop() was asked and its cancellation got lost on the way

    async def _stopped(self, app: _App) -> None:
        await self._terminate(app)
        if app.cell is not None:
            cell, app.cell = app.cell, None
            await asyncio.shield(asyncio.to_thread(cell.release))
        app.state = AppState.STOPPED
        app.port = None
        app.up.set()

    @staticmethod
    def _exit_reason(app: _App, code: int | None) -> str:
        """What ended the app, in words: the kernel's out-of-memory kill, or its exit code."""
        if app.cell is not None and app.cell.group.was_oom_killed():
            app.cell.group.forget_oom()
            return f"was stopped: {app.cell.limits.describe_memory()} (all its processes together)"
        return f"exited with code {code}"

    async def _cell(self, app: _App) -> Cell | None:
        """The app's cell, taken on its first start and kept across restarts (None without the sandbox)."""
        if not self.sandbox_enabled:
            return None
        if app.cell is None:
            try:
                app.cell = await asyncio.to_thread(self.cells.acquire, app.spec.limits or self.limits, network=True)
            except IsolationUnavailable as exc:
                raise AppFailed(f"The app could not be started: {exc}", list(app.lines)) from exc
        return app.cell

    async def _launch(self, app: _App) -> None:
        """Starts the process and waits for its first HTTP answer on PORT; raises AppFailed (process gone) if none.

        free_port() finds a port free now and the app binds it a moment later, so another process can take it in
        between. The runtime cannot hold the port for the app (the app binds a socket of its own), so it checks
        instead: when the app exits early while its port is in use, or something other than the app answers there,
        the port was taken, and the app starts again on a new one at once. That is no failure of the app: it does
        not count as a crash (no backoff, and a first start still succeeds). The attempts are bounded, in case the
        check mistakes a failing app for a taken port.
        """
        spec = app.spec
        env = dict(BASE_ENV)
        readonly = [spec.release_dir]
        cell = await self._cell(app)
        layout = Layout.of_release(spec.release_dir)
        cache = await self._bytecode_cache(layout, spec.deployment_id) if layout else None
        if layout and cache:  # its own cache and the standard library's links, read-only; no other app's
            env["PYTHONPYCACHEPREFIX"] = str(cache)
            env["PYTHONDONTWRITEBYTECODE"] = "1"  # it could not anyway: the filler writes the cache
            readonly += [cache, layout.system_bytecode]
        env.update(spec.env)
        filled = layout.bytecode_filled(spec.deployment_id) if layout else None
        folders = _python_folders(spec) if cache is not None and filled and not filled.exists() else []
        fill = bool(folders) and app.filler is None
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = APP_PORT if cell is not None else free_port(self.host)
            launch_env = {**env, "PORT": str(port), "HOST": self.host}
            try:
                await self._launch_on(app, port, launch_env, readonly)
                if fill:
                    app.filler = asyncio.create_task(
                        self._fill_bytecode(app, cache, filled, folders, readonly))  # type: ignore[arg-type]
                return
            except _PortTaken:
                await self._terminate(app)
                if attempt == PORT_ATTEMPTS:
                    raise AppFailed(f"Other processes took the app's port {PORT_ATTEMPTS} times in a row",
                                    list(app.lines)) from None
                self._system(app, f"Port {port} was taken by another process before the app listened on it; "
                                  "starting the app again on a new port")

    async def _fill_bytecode(self, app: _App, cache: Path, filled: Path, folders: list[Path],
                             readonly: list[Path]) -> None:
        """Compiles `folders` into the deployment's bytecode cache, in the app's sandbox with the cache writable, at
        the lowest CPU priority; then marks it filled (beside the cache, where no sandbox can write), so later starts
        read it. Nothing of the release runs: the system's Python, isolated (-I: no PYTHON* variables, no script
        folder on sys.path; -S: no site, so no .pth file), compiles without executing, in an environment of its own
        (none of the app's variables)."""
        spec = app.spec
        python = system_python() or "/usr/bin/python3"
        command = [python, "-I", "-S", "-X", f"pycache_prefix={cache}", "-m", "compileall", "-q", "-x",
                   "/node_modules/", *map(str, folders)]
        proc = None
        try:
            if app.cell is not None:  # the filler's uid writes it; the app's only reads
                await asyncio.to_thread(own_tree, cache, self.cells.filler_uid)
            proc = await self._spawn(app, command, env=BASE_ENV, writable=[cache],
                                     readonly=[r for r in readonly if r != cache], network=False, nice=True,
                                     uid=self.cells.filler_uid if app.cell is not None else None)
            async with asyncio.timeout(FILL_SECONDS):
                code = await proc.wait()
            # compileall exits 1 when a file does not compile (a stray Python 2 script, say): the rest is kept.
            if code in (0, 1):
                filled.touch()
        except (OSError, TimeoutError) as exc:  # the cache went away, or too much to compile: starts read what is
            log.info("bytecode cache not filled", deployment_id=spec.deployment_id, error=str(exc) or "timed out")
        finally:
            if proc is not None:
                await processes.end_group(proc, 0)
                await proc.wait()

    async def _spawn(self, app: _App, command: list[str], *, env: dict[str, str], writable: list[Path],
                     readonly: list[Path], network: bool, output: bool = False, nice: bool = False,
                     uid: int | None = None) -> asyncio.subprocess.Process:
        """Starts `command` in the release's sandbox, in the app's cell (as its uid unless `uid` names another).
        Cancelled while the process is being made, it is still made, and ended before the cancellation goes on."""
        spec = app.spec
        spawning = asyncio.ensure_future(sandbox.spawn(
            command, cell=app.cell, root=spec.release_dir, writable=writable, readonly=readonly, env=env,
            cwd=spec.app_dir, network=network, enabled=self.sandbox_enabled, uid=uid, output=output, nice=nice,
            max_open_files=self.limits.max_open_files))
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                made = await spawning
                await processes.end_group(made, 0)
                await made.wait()
            raise

    async def _launch_on(self, app: _App, port: int, env: dict[str, str], readonly: list[Path]) -> None:
        """One start on `port`; raises _PortTaken when another process has it."""
        spec = app.spec
        try:
            app.proc = await self._spawn(app, ["/bin/sh", "-c", spec.start_command], env=env, writable=[],
                                         readonly=readonly, network=True, output=True)
        except OSError as exc:
            raise AppFailed(f"The app could not be started: {exc}", list(app.lines)) from exc
        assert app.proc.stdout is not None and app.proc.stderr is not None
        app.pumps = [asyncio.create_task(self._pump(app, app.proc.stdout, "stdout")),
                     asyncio.create_task(self._pump(app, app.proc.stderr, "stderr"))]
        deadline = time.monotonic() + self.health_timeout
        host = app.cell.address if app.cell is not None and app.cell.address else self.host
        while True:
            if not app.wanted:
                raise asyncio.CancelledError
            if (code := app.proc.returncode) is not None:
                await self._finish_pumps(app)
                reason = self._exit_reason(app, code)
                await self._terminate(app)  # whatever it left: now any holder of the port is another process
                if app.cell is None and port_in_use(self.host, port):
                    raise _PortTaken
                raise AppFailed(f"The app {reason} before it answered HTTP on PORT", list(app.lines))
            if await answers_http(host, port, timeout=1.0):
                # In its own namespace nothing else can listen on the app's port; on the host's loopback, it can.
                if app.cell is None and await asyncio.to_thread(taken_by_another, app.proc.pid, port):
                    raise _PortTaken
                app.port = port
                return
            if time.monotonic() > deadline:
                await self._terminate(app)
                raise AppFailed(f"The app did not answer HTTP on PORT within {self.health_timeout:g}s",
                                list(app.lines))
            await asyncio.sleep(HEALTH_POLL_SECONDS)

    async def _pump(self, app: _App, stream: asyncio.StreamReader, name: str) -> None:
        await sandbox.read_lines(stream, lambda line: self._line(app, name, line))

    def _line(self, app: _App, stream: str, line: str) -> None:
        app.lines.append(line)
        self.on_log(app.spec.deployment_id, stream, line)

    def _system(self, app: _App, text: str) -> None:
        self.on_log(app.spec.deployment_id, "system", text)

    async def _finish_pumps(self, app: _App) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*app.pumps, return_exceptions=True)
        app.pumps = []

    async def _terminate(self, app: _App) -> None:
        proc = app.proc
        if proc is None:
            return
        await processes.end_group(proc, STOP_GRACE_SECONDS)
        if app.cell is not None:  # every process of the app, wherever in its tree and whatever group it made
            await asyncio.to_thread(app.cell.kill_all)
        for task in app.pumps:
            task.cancel()
        app.pumps = []
        # wait() also waits for the output pipes to close, which a stray process could hold open: bounded.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                await proc.wait()
        # Ended once: a later call (a stop during the backoff) must not signal its group id, which the system may
        # have given to a new process group by then.
        if app.proc is proc:
            app.proc = None

