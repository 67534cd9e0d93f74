"""The local runtime on its own: real apps in the real bubblewrap sandbox, started and stopped by a LocalRuntime.

- Python bytecode: each deployment has a cache outside its read-only release, filled in the background after its
  first start, which a restart reuses, which the app can read but not write, which no other app can see, and which
  goes when the deployment is deleted.
- A taken port: when another process gets the port handed to an app first, the app starts again on a new port, and
  that is no crash.
"""

from __future__ import annotations

import asyncio
import http.server
import importlib.util
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runix.layout import FILLED_SUFFIX, Layout
from runix.pipeline.release import make_read_only
from runix.pipeline.runtime import AppFailed, AppSpec, AppState, local
from runix.pipeline.runtime.local import LocalRuntime
from tests.support import Account, RunixServer
from tests.test_deployments_e2e import tarball

# Serves where Python looked for the compiled code of a module of the app and of one of the standard library.
SERVER = """
import functools, http.server, json, os, sys
import greeting

os.makedirs("/tmp/www", exist_ok=True)  # the sandbox's private /tmp
with open("/tmp/www/info.json", "w") as f:
    json.dump({"greeting": greeting.TEXT, "cached": greeting.__cached__, "json_cached": json.__cached__,
               "prefix": sys.pycache_prefix, "writes": not sys.dont_write_bytecode}, f)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/tmp/www")
http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), handler).serve_forever()
"""


def make_release(layout: Layout, deployment_id: str) -> AppSpec:
    """A read-only release of a small Python app, where the server builds releases."""
    app = layout.release_dir(deployment_id) / "app"
    app.mkdir(parents=True)
    (app / "server.py").write_text(SERVER)
    (app / "greeting.py").write_text("TEXT = 'hello'\n")
    make_read_only(layout.release_dir(deployment_id))
    return AppSpec(deployment_id, layout.release_dir(deployment_id), app, "exec python3 server.py",
                   {"PATH": "/usr/bin:/bin"})


def wait_filled(cache: Path, seconds: float = 30) -> None:
    """Until the runtime marks `cache` compiled (bytecode/<deployment id>.filled, beside it)."""
    filled = cache.with_name(cache.name + FILLED_SUFFIX)
    deadline = time.monotonic() + seconds
    while not filled.exists():
        assert time.monotonic() < deadline, f"{cache} not filled in {seconds}s: {sorted(cache.rglob('*'))}"
        time.sleep(0.05)


def site_release(layout: Layout, deployment_id: str, start_command: str) -> AppSpec:
    """A read-only release of a static page (no Python of its own), started with `start_command`."""
    layout.ensure()
    app = layout.release_dir(deployment_id) / "app"
    app.mkdir(parents=True)
    (app / "index.html").write_text("<p>static</p>\n")
    make_read_only(layout.release_dir(deployment_id))
    return AppSpec(deployment_id, layout.release_dir(deployment_id), app, start_command, {"PATH": "/usr/bin:/bin"})


def files_of(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.lstat().st_mtime_ns for p in folder.rglob("*")}


async def fetch(address: tuple[str, int]) -> dict:
    r = await asyncio.to_thread(httpx.get, f"http://{address[0]}:{address[1]}/info.json", timeout=10)
    return r.json()


def test_python_bytecode_is_cached_outside_the_release_and_a_restart_reuses_it(tmp_path: Path) -> None:
    layout = Layout(tmp_path.resolve() / "data")
    layout.ensure()
    orphan = layout.bytecode_cache("dpl_deleted_while_the_server_was_down")
    orphan.mkdir()
    spec = make_release(layout, "dpl_a")
    release_before = files_of(spec.release_dir)
    cache = layout.bytecode_cache("dpl_a")

    async def scenario() -> None:
        runtime = LocalRuntime(on_log=lambda *_: None, on_port=lambda *_: None)
        try:
            first = await fetch(await runtime.start(spec))
            assert first["greeting"] == "hello" and first["prefix"] == str(cache)
            assert not first["writes"]  # the app only reads; the cache is filled once it answers
            await asyncio.to_thread(wait_filled, cache)
            pyc = Path(first["cached"])
            assert pyc.is_relative_to(cache) and pyc.is_file(), first
            compiled = pyc.stat()
            system_pyc = Path(importlib.util.cache_from_source("/usr/lib/python3.11/json/__init__.py"))
            if system_pyc.is_file():  # the standard library's own bytecode is read, not compiled into the cache
                assert Path(first["json_cached"]).resolve() == system_pyc, first
            await runtime.stop("dpl_a")

            again = await fetch(await runtime.start(spec))
            assert again["cached"] == first["cached"] and not again["writes"]
            # Found valid and read: Python would have written a new file (a new inode) had it compiled again.
            assert (pyc.stat().st_ino, pyc.stat().st_mtime_ns) == (compiled.st_ino, compiled.st_mtime_ns)
            assert files_of(spec.release_dir) == release_before  # no __pycache__ in the release, nothing changed
            assert not orphan.exists()  # a cache whose release is gone is swept when the first app starts

            await runtime.remove("dpl_a")
            assert not cache.exists()
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())


def test_an_app_reads_its_own_cache_only_and_cannot_see_another_apps(tmp_path: Path) -> None:
    layout = Layout(tmp_path.resolve() / "data")
    layout.ensure()
    first, second = make_release(layout, "dpl_first"), make_release(layout, "dpl_second")
    other_cache = layout.bytecode_cache("dpl_first")
    probes = {  # what the second app tries before it serves, each answering on its own line
        "own-cache": 'touch "$PYTHONPYCACHEPREFIX/probe"',
        "other-cache-read": f"ls {other_cache}",
        "other-cache-write": f"touch {other_cache}/probe",
        "release": f"touch {second.app_dir}/probe",
        "system-bytecode": f"touch {layout.system_bytecode}/probe",
        "data-dir": f"touch {layout.root}/probe",  # lands in the sandbox's private /tmp (tmp_path is there)
    }
    script = "; ".join(f"{{ {command}; }} >/dev/null 2>&1 && echo {name}=yes || echo {name}=no"
                       for name, command in probes.items())
    second = AppSpec(second.deployment_id, second.release_dir, second.app_dir,
                     f"{script}; exec python3 server.py", second.env)
    lines: list[str] = []

    async def scenario() -> None:
        runtime = LocalRuntime(on_log=lambda _d, _s, line: lines.append(line), on_port=lambda *_: None)
        try:
            await runtime.start(first)
            await runtime.start(second)
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())
    answers = dict(line.split("=", 1) for line in lines if "=" in line)
    answers.pop("data-dir")
    assert answers == {"own-cache": "no", "other-cache-read": "no", "other-cache-write": "no", "release": "no",
                       "system-bytecode": "no"}, lines
    assert not (layout.bytecode_cache("dpl_second") / "probe").exists()
    assert not (other_cache / "probe").exists() and not (layout.root / "probe").exists()


def test_deleting_a_deployment_deletes_its_bytecode_cache(server: RunixServer, account: Account) -> None:
    files = {"Procfile": "web: python3 server.py\n", "server.py": SERVER, "greeting.py": "TEXT = 'hi'\n"}
    project = f"pyc-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    assert account.client.post("/projects", json={"name": project}).status_code == 201
    r = account.client.post("/deployments", data={"project": project, "target": "preview"},
                            files={"source": ("app.tar.gz", tarball(files), "application/gzip")})
    assert r.status_code == 201, r.text
    deployment_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while (status := account.client.get(f"/deployments/{deployment_id}").json()["status"]) not in {"READY", "ERROR"}:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status == "READY", account.client.get(f"/deployments/{deployment_id}/events").text
    cache = server.data_dir.resolve() / "bytecode" / deployment_id
    wait_filled(cache)
    assert list(cache.rglob("greeting.*.pyc")), list(cache.rglob("*"))
    assert account.client.delete(f"/deployments/{deployment_id}").status_code == 200
    deadline = time.monotonic() + 30
    while cache.exists():
        assert time.monotonic() < deadline, "the cache outlived its deployment"
        time.sleep(0.05)



def test_filling_the_cache_runs_no_code_of_the_release(tmp_path: Path) -> None:
    """Nothing the release ships runs while its cache is writable: not a package's .pth file (which `site` runs at
    every interpreter start), not a compileall.py in the app's folder, whatever the app's PYTHONPATH says."""
    layout = Layout(tmp_path.resolve() / "data")
    layout.ensure()
    release = layout.release_dir("dpl_pth")
    (release / "app").mkdir(parents=True)
    (release / "app" / "server.py").write_text(SERVER)
    (release / "app" / "greeting.py").write_text("TEXT = 'hello'\n")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(release / ".venv")], check=True)
    site_packages = next((release / ".venv" / "lib").glob("python3.*/site-packages"))
    (site_packages / "plant.pth").write_text(
        "import os; p = os.environ.get('PYTHONPYCACHEPREFIX'); p and open(os.path.join(p, 'planted-' + "
        "str(os.getpid())), 'w').close()\n")
    (site_packages / "vendored.py").write_text("VALUE = 1\n")
    # A module shadowing the compiler, where `python -m compileall` run from the app's folder would find it first.
    (release / "app" / "compileall.py").write_text(
        "import os, sys; open(os.path.join(sys.pycache_prefix or '/tmp', 'planted-shadow'), 'w').close()\n")
    make_read_only(release)
    venv = str(release / ".venv")
    spec = AppSpec("dpl_pth", release, release / "app", "exec python3 server.py",
                   {"PATH": f"{venv}/bin:/usr/bin:/bin", "VIRTUAL_ENV": venv, "PYTHONPATH": str(release / "app")})
    cache = layout.bytecode_cache("dpl_pth")

    async def scenario() -> None:
        runtime = LocalRuntime(on_log=lambda *_: None, on_port=lambda *_: None)
        try:
            assert (await fetch(await runtime.start(spec)))["greeting"] == "hello"
            await asyncio.to_thread(wait_filled, cache)
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())
    assert list(cache.rglob("vendored.*.pyc")) and list(cache.rglob("greeting.*.pyc"))  # both folders compiled
    assert not list(cache.rglob("planted-*"))
    assert layout.bytecode_filled("dpl_pth").is_file() and not layout.bytecode_filled("dpl_pth").is_symlink()


class ThiefHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"thief")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def thief_http() -> Iterator[int]:
    """Another process's web server, already answering on the port the runtime is about to hand out."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ThiefHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def thief_socket() -> Iterator[int]:
    """A port another process has bound (as free_port() itself does for a moment), without answering on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def hand_out_first(monkeypatch: pytest.MonkeyPatch, port: int) -> list[int]:
    """The runtime's free_port() returns `port` first (as if it had been free a moment ago); returns all handed out."""
    handed: list[int] = []
    real = local.free_port

    def free_port(host: str = "127.0.0.1") -> int:
        handed.append(port if not handed else real(host))
        return handed[-1]

    monkeypatch.setattr(local, "free_port", free_port)
    return handed


@pytest.mark.parametrize(("thief", "command"), [
    # Its bind fails, so it exits while the port is in use.
    ("thief_socket", "exec python3 server.py"),
    # It is slow to start, and meanwhile the thief answers on its port: that answer is not the app's.
    ("thief_http", "sleep 1; exec python3 server.py"),
])
def test_an_app_whose_port_was_taken_starts_again_on_a_new_port_without_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, thief: str,
        command: str) -> None:
    taken = request.getfixturevalue(thief)
    handed = hand_out_first(monkeypatch, taken)
    layout = Layout(tmp_path.resolve() / "data")
    layout.ensure()
    spec = make_release(layout, "dpl_port")
    spec = AppSpec(spec.deployment_id, spec.release_dir, spec.app_dir, command, spec.env)
    lines: list[str] = []
    addresses: list[tuple[str, int] | None] = []

    async def scenario() -> None:
        # Only without the sandbox do apps share the host's ports: in a cell, the app's namespace is its own.
        runtime = LocalRuntime(on_log=lambda _d, _s, line: lines.append(line),
                               on_port=lambda _d, address: addresses.append(address), sandbox_enabled=False)
        try:
            address = await runtime.start(spec)
            port = address[1]
            assert port != taken and handed[:2] == [taken, port]
            assert (await fetch(address))["greeting"] == "hello"
            assert runtime.status("dpl_port") is AppState.RUNNING
            assert runtime._apps["dpl_port"].restarts == 0  # not counted as a crash
            assert addresses == [address]  # the taken port was never announced
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())
    assert f"Port {taken} was taken by another process before the app listened on it; starting the app again on a " \
           "new port" in lines, lines
    if thief == "thief_http":
        assert httpx.get(f"http://127.0.0.1:{taken}/").text == "thief"  # left alone


def test_an_app_that_fails_on_its_own_still_fails_at_once(tmp_path: Path) -> None:
    """An early exit with its port free is the app's failure: reported, not retried on another port."""
    layout = Layout(tmp_path.resolve() / "data")
    layout.ensure()
    spec = make_release(layout, "dpl_broken")
    spec = AppSpec(spec.deployment_id, spec.release_dir, spec.app_dir, "echo broken; exit 3", spec.env)
    lines: list[str] = []

    async def scenario() -> None:
        runtime = LocalRuntime(on_log=lambda _d, _s, line: lines.append(line), on_port=lambda *_: None)
        with pytest.raises(AppFailed, match="exited with code 3"):
            await runtime.start(spec)

    asyncio.run(scenario())
    assert lines == ["broken"]


def test_a_release_without_python_gets_no_filler(tmp_path: Path) -> None:
    """A static site served by a Python server still has nothing of its own to compile: no filler runs for it."""
    layout = Layout(tmp_path.resolve() / "data")
    spec = site_release(layout, "dpl_static", 'exec python3 -m http.server --bind "$HOST" "$PORT"')

    async def scenario() -> None:
        runtime = LocalRuntime(on_log=lambda *_: None, on_port=lambda *_: None)
        try:
            host, port = await runtime.start(spec)
            assert "static" in (await asyncio.to_thread(httpx.get, f"http://{host}:{port}/")).text
            assert runtime._apps["dpl_static"].filler is None
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())
    assert not layout.bytecode_filled("dpl_static").exists()



def test_a_stop_during_the_restart_backoff_signals_no_ended_process_group(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An app that crashed is ended once; a stop while it waits to restart sends its old group id nothing (the
    system may have given that id to another process group meanwhile)."""
    spec = site_release(Layout(tmp_path.resolve() / "data"), "dpl_crash",
                        'timeout 0.5 python3 -m http.server --bind "$HOST" "$PORT"; exit 1')
    signalled: list[int] = []
    real_killpg = os.killpg
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: (signalled.append(pgid), real_killpg(pgid, sig))[1])

    async def scenario() -> None:
        runtime = LocalRuntime(on_log=lambda *_: None, on_port=lambda *_: None)
        try:
            await runtime.start(spec)
            crashed = runtime._apps["dpl_crash"].proc
            assert crashed is not None
            deadline = time.monotonic() + 10
            while runtime.status("dpl_crash") is not AppState.RESTARTING:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert crashed.pid in signalled  # its leftovers were ended when it crashed
            signalled.clear()
            await runtime.stop("dpl_crash")
            assert crashed.pid not in signalled
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())
