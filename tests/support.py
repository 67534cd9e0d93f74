"""Test support: a real `runix server` in a subprocess, signed-in accounts, and the services tests need."""

from __future__ import annotations

import contextlib
import io
import mailbox
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from runix.pipeline.cells import try_lock

ROOT = Path(__file__).resolve().parent.parent
RUNIX = str(Path(sys.executable).parent / "runix")
IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("RUNIX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_EMAIL = "operator@example.com"  # the session server's admin (RUNIX_ADMIN_EMAILS)
REDIS_URL = os.environ.get("RUNIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T = TypeVar("T")


# Ports for test servers come from a block of this pytest process's own (an xdist worker's, or another worktree's
# run), held with a lock for the process's life, below Linux's ephemeral range (32768 on) that clients' source ports
# come from: a port handed out here and bound a moment later by a server cannot be taken meanwhile by another worker's
# server nor by some outgoing connection, as a port the kernel picked for bind(0) can.
PORT_RANGE = range(20_000, 32_000)
PORT_BLOCK_SIZE = 400
PORT_LOCK_DIR = Path(tempfile.gettempdir()) / "runix-test-ports"


@dataclass
class _PortBlock:
    ports: range
    lock_fd: int
    next_index: int = 0


_port_block: _PortBlock | None = None


def _own_port_block() -> _PortBlock:
    global _port_block
    if _port_block is None:
        PORT_LOCK_DIR.mkdir(exist_ok=True)
        for start in range(PORT_RANGE.start, PORT_RANGE.stop, PORT_BLOCK_SIZE):
            fd = try_lock(PORT_LOCK_DIR / f"{start}.lock")
            if fd is not None:
                _port_block = _PortBlock(range(start, start + PORT_BLOCK_SIZE), fd)
                break
        else:
            raise AssertionError(f"every block of test ports in {PORT_RANGE} is held by another pytest process")
    return _port_block


def free_port() -> int:
    """A port of this process's block that nothing listens on now (TCP and UDP: the DNS server takes both)."""
    block = _own_port_block()
    for _ in range(len(block.ports)):
        port = block.ports[block.next_index]
        block.next_index = (block.next_index + 1) % len(block.ports)
        with contextlib.suppress(OSError), socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", port))
            udp.bind(("127.0.0.1", port))
            return port
    raise AssertionError(f"no free port left in {block.ports}")


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Polls `condition` until it returns something true, and returns that; fails naming `what` was awaited if it
    has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (outcome := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}")
        time.sleep(interval)
    return outcome


def missing_service(what: str, why: str) -> None:
    """Under CI=true a missing service fails the test; elsewhere it is skipped."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true: {why}")
    pytest.skip(f"{what} not available: {why}")


def require_postgres() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # noqa: BLE001
        missing_service("PostgreSQL", str(exc))
    return POSTGRES_URL


def require_redis() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        missing_service("Redis", str(exc))
    return REDIS_URL


def fresh_postgres_database() -> str:
    """A new, empty PostgreSQL database for one server (dropped by the caller's cleanup if wanted)."""
    import psycopg

    base = require_postgres()
    name = f"runix_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def read_code(maildir: Path, email: str, timeout: float = 10.0) -> str:
    """The newest sign-in code mailed to `email` (from the server's Maildir)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (maildir / "new").exists():
            box = mailbox.Maildir(maildir, create=False)
            msgs = [m for m in box if m["To"] == email]
            if msgs:
                msgs.sort(key=lambda m: m.get_date())
                body = msgs[-1].get_payload(decode=True).decode()
                match = re.search(r"\b(\d{6})\b", body)
                if match:
                    return match.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no sign-in mail for {email} in {maildir}")


@dataclass
class Account:
    email: str
    token: str
    client: httpx.Client

    def close(self) -> None:
        self.client.close()


@dataclass
class RunixServer:
    """One `runix server` process with its own data dir and ports."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    router_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    accounts: list[Account] = field(default_factory=list)
    admin: Account | None = None  # signed in by set_plan

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def maildir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.port}.log"

    def process_env(self) -> dict[str, str]:
        # The sandbox's uid range and subnet stay the defaults in every worker's servers: each cell slot (its uid,
        # namespace and addresses) is held machine-wide by a lock (runix.pipeline.cells), so servers side by side never
        # share one, while servers with different subnets would find a slot's namespace made with the other's addresses.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNIX_")}
        env.update({"RUNIX_DATA_DIR": str(self.data_dir), "RUNIX_PORT": str(self.port),
                    "RUNIX_ROUTER_PORT": str(self.router_port), "RUNIX_LOG_LEVEL": "info",
                    "RUNIX_ADMIN_EMAILS": ADMIN_EMAIL})
        env.update(self.env)
        return env

    def start(self, timeout: float = 30.0) -> RunixServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen([RUNIX, "server"], env=self.process_env(), stdout=log, stderr=log,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runix server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"runix server did not answer within {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 20.0) -> None:
        for account in self.accounts:
            account.close()
        self.accounts.clear()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> RunixServer:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def set_plan(self, account: Account, plan: str) -> None:
        """Moves `account` to `plan` as the operator does: an admin's PUT, no payment."""
        if self.admin is None or self.admin not in self.accounts:
            self.admin = self.sign_in(ADMIN_EMAIL)
        r = self.admin.client.put(f"/billing/accounts/{account.email}/plan", json={"plan": plan})
        assert r.status_code == 200, r.text

    def sign_in(self, email: str | None = None) -> Account:
        """Signs in by email code (creating the account), returning a client that sends its session token."""
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        r = httpx.post(f"{self.url}/auth/email", json={"email": email}, timeout=10)
        assert r.status_code == 200, r.text
        code = read_code(self.maildir, email)
        r = httpx.post(f"{self.url}/auth/email/verify", json={"email": email, "code": code}, timeout=10)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        account = Account(email=email, token=token, client=client)
        self.accounts.append(account)
        return account


@contextlib.contextmanager
def running_server(tmp: Path, **env: str) -> Iterator[RunixServer]:
    server = RunixServer(data_dir=tmp / "data", env=env).start()
    try:
        yield server
    finally:
        server.stop()


def which_or_missing(cmd: str, why: str) -> str:
    path = shutil.which(cmd) or (f"/usr/sbin/{cmd}" if Path(f"/usr/sbin/{cmd}").exists() else None)
    if not path:
        missing_service(cmd, why)
    return path  # type: ignore[return-value]


@dataclass
class CliShell:
    """The real `runix` executable in a shell of its own: its own HOME and XDG_CONFIG_HOME, pointed at one API."""

    home: Path
    api_url: str | None = None
    env_extra: dict[str, str] = field(default_factory=dict)

    @property
    def credentials_path(self) -> Path:
        return self.home / ".config" / "runix" / "credentials.json"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNIX_") and k != "NO_COLOR"}
        env.update({"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config")})
        if self.api_url:
            env["RUNIX_API_URL"] = self.api_url
        env.update(self.env_extra)
        return env

    def run(self, *args: str, input: str | None = None, cwd: Path | None = None, expect: int | None = 0,
            timeout: float = 120, executable: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Runs `runix ARGS`; asserts the exit status is `expect` (None: any), showing both streams if not."""
        self.home.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([*(executable or [RUNIX]), *args], input=input if input is not None else "",
                                capture_output=True, text=True, cwd=cwd or self.home, env=self.env(),
                                timeout=timeout)
        if expect is not None:
            assert result.returncode == expect, (
                f"runix {' '.join(args)} exited {result.returncode}, expected {expect}\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
        return result

    def json(self, *args: str, cwd: Path | None = None) -> object:
        import json

        return json.loads(self.run(*args, "--json", cwd=cwd).stdout)

    def popen(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        self.home.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([RUNIX, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=cwd or self.home, env=self.env())

    def login_with_token(self, server: RunixServer, account: Account, name: str = "tests") -> str:
        """Stores a new CLI token of `account` with `runix login --token`; returns the token."""
        r = account.client.post("/auth/cli-token", json={"name": name})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        self.run("login", "--token", token, "--api-url", server.url)
        return token


def tar_folder(folder: Path) -> bytes:
    """The folder as the .tar.gz an upload carries (without node_modules or __pycache__)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if "node_modules" not in path.parts and "__pycache__" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buf.getvalue()
