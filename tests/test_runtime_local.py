"""The local runtime on its own: real apps in the real bubblewrap sandbox, started and stopped by a LocalRuntime.

- Python bytecode: each deployment has a writable cache outside its read-only release, which a restart reuses, no
  other app can see, and which goes when the deployment is deleted.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from pathlib import Path

import httpx

from runix.layout import Layout
from runix.pipeline.release import make_read_only
from runix.pipeline.runtime import AppSpec
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
               "prefix": sys.pycache_prefix}, f)
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


def files_of(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.lstat().st_mtime_ns for p in folder.rglob("*")}


async def fetch(port: int) -> dict:
    r = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/info.json", timeout=10)
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
            pyc = Path(first["cached"])
            assert pyc.is_relative_to(cache) and pyc.is_file(), first
            compiled = pyc.stat()
            system_pyc = Path(importlib.util.cache_from_source("/usr/lib/python3.11/json/__init__.py"))
            if system_pyc.is_file():  # the standard library's own bytecode is read, not compiled into the cache
                assert Path(first["json_cached"]).resolve() == system_pyc, first
            await runtime.stop("dpl_a")

            again = await fetch(await runtime.start(spec))
            assert again["cached"] == first["cached"]
            # Found valid and read: Python would have written a new file (a new inode) had it compiled again.
            assert (pyc.stat().st_ino, pyc.stat().st_mtime_ns) == (compiled.st_ino, compiled.st_mtime_ns)
            assert files_of(spec.release_dir) == release_before  # no __pycache__ in the release, nothing changed
            assert not orphan.exists()  # a cache whose release is gone is swept when the first app starts

            await runtime.remove("dpl_a")
            assert not cache.exists()
        finally:
            await runtime.stop_all()

    asyncio.run(scenario())


def test_an_app_writes_its_own_cache_and_cannot_see_another_apps(tmp_path: Path) -> None:
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
    assert answers == {"own-cache": "yes", "other-cache-read": "no", "other-cache-write": "no", "release": "no",
                       "system-bytecode": "no"}, lines
    assert (layout.bytecode_cache("dpl_second") / "probe").is_file()
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
    assert list(cache.rglob("greeting.*.pyc")), list(cache.rglob("*"))
    assert account.client.delete(f"/deployments/{deployment_id}").status_code == 200
    deadline = time.monotonic() + 30
    while cache.exists():
        assert time.monotonic() < deadline, "the cache outlived its deployment"
        time.sleep(0.05)

