"""Build and release: detection, real builds of every example with real uv/npm in the real sandbox, and failures."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import websockets.sync.client

from runix.ids import new_id
from runix.layout import Layout
from runix.pipeline import sandbox
from runix.pipeline.build import BuildFailed, ProjectBuildSettings, Release, detect
from runix.pipeline.cells import CellLimits, CellPool, make_pool
from runix.pipeline.release import SYSTEM_PATH, build_release, cache_dir, load_release, remove_release, uv_binary
from runix.pipeline.sandbox import sandboxed
from runix.pipeline.source import SourceLimits, pack_directory, store_upload
from runix.settings import Settings
from tests.support import free_port, wait_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NO_SETTINGS = ProjectBuildSettings()


@dataclass
class Pipeline:
    layout: Layout
    settings: Settings
    cells: CellPool


@dataclass
class Outcome:
    lines: list[tuple[str, str]] = field(default_factory=list)
    release: Release | None = None
    error: BuildFailed | None = None
    seconds: float = 0.0

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """One data dir for the module, so the uv and npm caches warm up once."""
    root = tmp_path_factory.mktemp("runix-build").resolve()
    layout = Layout(root)
    layout.ensure()
    return Pipeline(layout, Settings(data_dir=root, build_timeout=120), make_pool())


def upload(pipeline: Pipeline, folder: Path) -> Path:
    buf = io.BytesIO()
    pack_directory(folder, buf)
    buf.seek(0)
    return store_upload(pipeline.layout, buf, SourceLimits.from_settings(pipeline.settings)).path


def write_app(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def build(pipeline: Pipeline, folder: Path, project: ProjectBuildSettings = NO_SETTINGS, *,
          env: dict[str, str] | None = None, settings: Settings | None = None,
          deployment_id: str | None = None, cache_scope: str | None = None) -> Outcome:
    outcome = Outcome()
    archive = upload(pipeline, folder)
    started = time.perf_counter()
    try:
        outcome.release = asyncio.run(build_release(
            pipeline.layout, settings or pipeline.settings, deployment_id or new_id("dpl"), archive, project,
            env or {}, lambda stream, line: outcome.lines.append((stream, line)), cache_scope=cache_scope,
            cells=pipeline.cells))
    except BuildFailed as exc:
        outcome.error = exc
    outcome.seconds = time.perf_counter() - started
    return outcome


@contextlib.contextmanager
def serving(release: Release, env: dict[str, str]) -> Iterator[str]:
    """Starts a release the way the runtime does (sandboxed, read-only, PORT set) and yields its URL once it answers."""
    port = free_port()
    app_env = {"PATH": ":".join([*release.env_path, SYSTEM_PATH]), "HOME": "/tmp", "LANG": "C.UTF-8",
               **release.env, **env, "PORT": str(port)}
    argv = sandboxed(["/bin/sh", "-c", f"exec {release.start_command}"], root=release.path, env=app_env,
                     cwd=release.app_dir)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=1)  # any HTTP answer: the app is up
            return True
        return False

    try:
        wait_until(answers, 20, "the app to answer HTTP")
        yield url
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if token in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
    return found


# Detection


@pytest.mark.parametrize(
    ("example", "kind", "install", "start"),
    [
        ("static", "static", None, "runix-static"),
        ("flask", "python", "uv pip install -r requirements.txt", "python app.py"),
        ("fastapi", "python", "uv pip install -r requirements.txt",
         'uvicorn main:app --host "${HOST:-127.0.0.1}" --port "$PORT"'),
        ("express", "node", "npm ci", "node server.js"),
        ("procfile", "procfile", None, "python3 server.py"),
    ],
)
def test_detects_each_example(example: str, kind: str, install: str | None, start: str) -> None:
    plan = detect(EXAMPLES / example, NO_SETTINGS)
    assert (plan.kind, plan.install_command, plan.start_command) == (kind, install, start)


def test_detection_order_and_overrides(tmp_path: Path) -> None:
    app = write_app(tmp_path, {
        "Procfile": "release: ./migrate\nweb: gunicorn app:app --bind :$PORT\n",
        "requirements.txt": "flask\ngunicorn\n",
        "package.json": '{"scripts": {"start": "node x.js", "build": "tsc"}}',
        "index.html": "<h1>hi</h1>",
        "app.py": "app = Flask(__name__)\n",
    })
    plan = detect(app, NO_SETTINGS)
    # The Procfile says how to start; its dependencies are still Python's.
    assert (plan.kind, plan.dependencies) == ("procfile", "python")
    assert plan.start_command == "gunicorn app:app --bind :$PORT"
    assert plan.install_command == "uv pip install -r requirements.txt"

    (app / "Procfile").unlink()
    assert detect(app, NO_SETTINGS).start_command == 'gunicorn --bind "${HOST:-127.0.0.1}:$PORT" app:app'
    (app / "requirements.txt").unlink()
    plan = detect(app, NO_SETTINGS)
    assert (plan.kind, plan.install_command, plan.build_command, plan.start_command) == (
        "node", "npm install", "npm run build", "node x.js")
    (app / "package.json").unlink()
    assert detect(app, NO_SETTINGS).kind == "static"

    # runix.json overrides detection, and the project's settings override runix.json, field by field.
    (app / "runix.json").write_text(json.dumps({"buildCommand": "make site", "startCommand": "./serve"}))
    plan = detect(app, ProjectBuildSettings(start_command="./serve --fast"))
    assert (plan.kind, plan.build_command, plan.start_command) == ("static", "make site", "./serve --fast")
    plan = detect(app, ProjectBuildSettings(framework="flask", install_command="uv pip install flask"))
    assert (plan.kind, plan.install_command, plan.start_command) == ("python", "uv pip install flask", "./serve")


@pytest.mark.parametrize(
    ("files", "project", "message"),
    [
        ({"README.md": "hi"}, NO_SETTINGS, "Nothing to deploy"),
        ({"index.html": "hi"}, ProjectBuildSettings(framework="cobol"), "Unknown framework 'cobol'"),
        ({"requirements.txt": "flask"}, NO_SETTINGS, "cannot tell how to start this python app"),
        ({"package.json": "{}"}, NO_SETTINGS, "cannot tell how to start this node app"),
        ({"package.json": "{nope"}, NO_SETTINGS, "package.json is not valid JSON"),
        ({"index.html": "hi", "runix.json": "[1]"}, NO_SETTINGS, "runix.json must hold a JSON object"),
    ],
)
def test_detection_failures_say_what_to_do(tmp_path: Path, files, project, message: str) -> None:
    with pytest.raises(BuildFailed) as caught:
        detect(write_app(tmp_path, files), project)
    assert message in caught.value.message


# Real builds


@pytest.mark.parametrize("example", ["static", "procfile", "flask", "fastapi", "express"])
def test_each_example_builds_and_answers(pipeline: Pipeline, example: str) -> None:
    outcome = build(pipeline, EXAMPLES / example, env={"GREETING": "build-time"})
    assert outcome.error is None, outcome.text()
    release = outcome.release
    assert release is not None
    assert release == load_release(pipeline.layout, release.deployment_id)
    assert release.path == pipeline.layout.release_dir(release.deployment_id)
    reason = detect(release.app_dir, NO_SETTINGS).reason
    assert outcome.lines[0] == ("stdout", f"==> Detected a {release.kind} app ({reason})")
    # Immutable: nothing in the release folder is writable.
    writable = [p for p in [release.path, *release.path.rglob("*")] if not p.is_symlink() and p.stat().st_mode & 0o222]
    assert writable == []
    with serving(release, {"GREETING": f"hello {example}"}) as url:
        response = httpx.get(url + "/")
        assert response.status_code == 200
        if example != "static":
            assert response.json() == {"app": example, "greeting": f"hello {example}"}
        else:
            assert "Hello from Runix" in response.text
        if example == "fastapi":
            with websockets.sync.client.connect(url.replace("http", "ws") + "/ws") as socket_:
                socket_.send("ping")
                assert socket_.recv(timeout=5) == "ping"


def test_static_server_hides_private_files(pipeline: Pipeline, tmp_path: Path) -> None:
    app = write_app(tmp_path, {"index.html": "home", "about.html": "about", "docs/index.html": "docs",
                               "assets/app.css": "body{}", "404.html": "custom missing", ".env": "SECRET=1",
                               ".git/config": "[core]", "runix.json": "{}"})
    release = build(pipeline, app).release
    assert release is not None and release.start_command == "runix-static"
    with serving(release, {}) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").text == "home"
        assert client.get("/about").text == "about"
        assert client.get("/docs/").text == "docs"
        assert client.get("/assets/app.css").headers["content-type"] == "text/css"
        for private in ("/.env", "/.git/config", "/runix.json", "/assets/", "/nope", "/%2e%65nv"):
            response = client.get(private)
            assert (response.status_code, response.text) == (404, "custom missing"), private
        # Keep-alive: the same connection serves the next request.
        assert client.get("/").headers.get("connection", "keep-alive").lower() != "close"


def test_second_python_build_reuses_the_cache(pipeline: Pipeline) -> None:
    build(pipeline, EXAMPLES / "flask")  # warm (already warm when the example test ran first)
    outcome = build(pipeline, EXAMPLES / "flask")
    assert outcome.error is None, outcome.text()
    assert "Downloading" not in outcome.text()
    assert outcome.seconds < 10


def test_cache_scopes_keep_accounts_apart(pipeline: Pipeline, tmp_path: Path) -> None:
    app = write_app(tmp_path, {"requirements.txt": "itsdangerous\n", "Procfile": "web: python -m http.server $PORT"})
    for scope in ("acct_a", "acct_b"):
        outcome = build(pipeline, app, cache_scope=scope)
        assert outcome.error is None, outcome.text()
        assert any((pipeline.layout.cache / "uv" / scope).rglob("itsdangerous*"))
    with pytest.raises(ValueError):
        cache_dir(pipeline.layout, "uv", "../elsewhere")


def test_root_directory_builds_the_subfolder(pipeline: Pipeline, tmp_path: Path) -> None:
    app = write_app(tmp_path, {"site/index.html": "<p>inner</p>", "other/Procfile": "web: false"})
    outcome = build(pipeline, app, ProjectBuildSettings(root_directory="site"))
    assert outcome.error is None and outcome.release is not None
    assert outcome.release.app_dir == outcome.release.path / "app" / "site"
    assert outcome.release.kind == "static"
    bad = build(pipeline, app, ProjectBuildSettings(root_directory="../etc"))
    assert bad.error is not None and "must be a folder inside the upload" in bad.error.message


def test_failed_install_gives_its_log_and_leaves_other_releases_alone(pipeline: Pipeline, tmp_path: Path) -> None:
    good = build(pipeline, EXAMPLES / "static")
    assert good.release is not None
    app = write_app(tmp_path, {"requirements.txt": "runix-surely-no-such-package-4821\n", "app.py": "__main__"})
    deployment_id = new_id("dpl")
    outcome = build(pipeline, app, deployment_id=deployment_id)
    assert outcome.error is not None
    assert outcome.error.message.startswith("Installing dependencies failed: `uv pip install -r requirements.txt`")
    assert any(stream == "stderr" and "runix-surely-no-such-package-4821" in line for stream, line in outcome.lines)
    assert not pipeline.layout.release_dir(deployment_id).exists()
    assert load_release(pipeline.layout, good.release.deployment_id) == good.release
    assert (good.release.app_dir / "index.html").is_file()


def test_failed_build_command_streams_both_outputs(pipeline: Pipeline, tmp_path: Path) -> None:
    command = "echo compiling; echo boom >&2; exit 3"
    app = write_app(tmp_path, {"index.html": "hi", "runix.json": json.dumps({"buildCommand": command})})
    outcome = build(pipeline, app)
    assert outcome.error is not None
    assert outcome.error.message == (
        "Building failed: `echo compiling; echo boom >&2; exit 3` exited with code 3 (see the build log)")
    assert ("stdout", "compiling") in outcome.lines and ("stderr", "boom") in outcome.lines


def test_lines_arrive_while_the_build_runs(pipeline: Pipeline, tmp_path: Path) -> None:
    app = write_app(tmp_path, {"index.html": "hi", "runix.json": '{"buildCommand": "echo one; sleep 1; echo two"}'})
    arrivals: dict[str, float] = {}
    archive = upload(pipeline, app)
    asyncio.run(build_release(pipeline.layout, pipeline.settings, new_id("dpl"), archive, NO_SETTINGS, {},
                              lambda stream, line: arrivals.setdefault(line, time.monotonic())))
    assert arrivals["two"] - arrivals["one"] > 0.7


def test_build_timeout_kills_the_build(pipeline: Pipeline, tmp_path: Path) -> None:
    app = write_app(tmp_path, {"index.html": "hi", "runix.json": '{"buildCommand": "sleep 30.4821 & sleep 30.4821"}'})
    deployment_id = new_id("dpl")
    outcome = build(pipeline, app, settings=pipeline.settings.model_copy(update={"build_timeout": 1.0}),
                    deployment_id=deployment_id)
    assert outcome.error is not None and outcome.error.message == "Build exceeded 1 seconds"
    assert outcome.seconds < 5
    assert not pipeline.layout.release_dir(deployment_id).exists()
    # The build's processes were sent SIGKILL; they are gone once the kernel has torn them down.
    wait_until(lambda: not processes_with("30.4821"), 10, "the killed build's processes to be gone")


def test_cancel_kills_the_build_and_cleans_up(pipeline: Pipeline, tmp_path: Path) -> None:
    app = write_app(tmp_path, {"index.html": "hi", "runix.json": '{"buildCommand": "echo started; sleep 40.4821"}'})
    archive = upload(pipeline, app)
    deployment_id = new_id("dpl")

    async def scenario() -> None:
        started = asyncio.Event()

        def log(stream: str, line: str) -> None:
            if line == "started":
                started.set()

        task = asyncio.create_task(build_release(pipeline.layout, pipeline.settings, deployment_id, archive,
                                                 NO_SETTINGS, {}, log))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert not pipeline.layout.release_dir(deployment_id).exists()
    # The build's processes were sent SIGKILL; they are gone once the kernel has torn them down.
    wait_until(lambda: not processes_with("40.4821"), 10, "the killed build's processes to be gone")


def test_sandbox_hides_the_data_dir_other_releases_and_server_secrets(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = pipeline.layout
    secret = layout.root / "secret.key"
    secret.write_text("TOP-SECRET-4821")
    other = build(pipeline, EXAMPLES / "static").release
    assert other is not None
    monkeypatch.setenv("RUNIX_SECRET_KEY", "SERVER-SECRET-4821")
    probe = (f"cat {secret} || echo no-secret; ls {layout.releases}; cat {other.app_dir}/index.html || echo no-other;"
             f" ls {layout.root}; env; echo marker > {layout.root}/planted; grep CapEff /proc/self/status")
    app = write_app(tmp_path, {"index.html": "hi", "runix.json": json.dumps({"buildCommand": probe})})
    deployment_id = new_id("dpl")
    outcome = build(pipeline, app, env={"USER_VAR": "visible"}, deployment_id=deployment_id)
    assert outcome.error is None, outcome.text()
    stdout = [line for stream, line in outcome.lines if stream == "stdout"]
    text = outcome.text()
    assert "TOP-SECRET-4821" not in text and "SERVER-SECRET-4821" not in text
    assert {"no-secret", "no-other"} <= set(stdout)
    assert deployment_id in stdout and other.deployment_id not in stdout  # only its own release is there
    assert "USER_VAR=visible" in stdout
    assert "CapEff:\t0000000000000000" in stdout  # root in the sandbox, but without any capability
    assert not (layout.root / "planted").exists()


def test_build_without_sandbox_still_gets_a_clean_environment(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNIX_SECRET_KEY", "SERVER-SECRET-4821")
    app = write_app(tmp_path, {"index.html": "hi", "runix.json": json.dumps({"buildCommand": "env; pwd"})})
    outcome = build(pipeline, app, settings=pipeline.settings.model_copy(update={"sandbox": False}))
    assert outcome.error is None and outcome.release is not None, outcome.text()
    assert "SERVER-SECRET-4821" not in outcome.text()
    assert ("stdout", str(outcome.release.app_dir)) in outcome.lines


def test_sandbox_disabled_returns_the_command_itself(tmp_path: Path) -> None:
    argv = ["python3", "-c", "print(1)"]
    assert sandboxed(argv, root=tmp_path, env={}, cwd=tmp_path, enabled=False) == argv


@pytest.mark.parametrize(
    ("program", "fits"),
    [
        (["python3", "-c", "bytearray(64 << 20)"], True),
        (["python3", "-c", "bytearray(400 << 20)"], False),
        (["node", "-e", "Buffer.alloc(64 << 20, 1)"], True),  # Node starts: its big address-space reservations pass
        (["node", "-e", "const a = []; for (let i = 0; i < 40; i++) a.push(Buffer.alloc(10 << 20, 1))"], False),
        (["python3", "-c", "fs = [open('/dev/null') for _ in range(100)]"], False),
    ],
)
def test_cell_limits_hold_for_the_whole_sandbox(program: list[str], fits: bool, tmp_path: Path) -> None:
    """Memory (a cgroup, for all processes together) and open files (an rlimit) bound what a sandbox may use."""
    pool = make_pool()
    cell = pool.acquire(CellLimits(memory_mb=256, max_processes=64, max_open_files=64), network=False)

    async def run() -> tuple[int, bytes]:
        proc = await sandbox.spawn(program, cell=cell, root=tmp_path, env={"PATH": SYSTEM_PATH}, cwd=tmp_path,
                                   network=False)
        _, err = await proc.communicate()
        return proc.returncode or 0, err

    try:
        code, err = asyncio.run(run())
        assert (code == 0) is fits, err
        if not fits and "open(" not in program[-1]:
            assert cell.group.was_oom_killed()  # the kernel's kill, told apart from a crash
    finally:
        cell.release()


def test_sandbox_without_network_cannot_reach_the_host(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        connect = f"import socket; socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), 2)"
        for network, refused in ((True, False), (False, True)):
            argv = sandboxed(["python3", "-c", connect], root=tmp_path, env={"PATH": SYSTEM_PATH}, cwd=tmp_path,
                             network=network)
            result = subprocess.run(argv, capture_output=True, text=True)
            assert ("ConnectionRefusedError" in result.stderr) is refused, result.stderr


def test_procfile_app_without_dependencies_has_python(pipeline: Pipeline, tmp_path: Path) -> None:
    server = (EXAMPLES / "procfile" / "server.py").read_text()
    app = write_app(tmp_path, {"Procfile": "web: python server.py", "server.py": server})
    release = build(pipeline, app).release
    assert release is not None
    with serving(release, {"GREETING": "plain python"}) as url:
        assert httpx.get(url).json()["greeting"] == "plain python"


def test_locked_python_project_installs_what_uv_lock_says(pipeline: Pipeline, tmp_path: Path) -> None:
    project = '[project]\nname = "locked"\nversion = "1.0"\nrequires-python = ">=3.11"\ndependencies = []\n'
    app = write_app(tmp_path, {
        "pyproject.toml": project,
        "main.py": (EXAMPLES / "procfile" / "server.py").read_text().replace('"procfile"', '"locked"'),
    })
    subprocess.run([str(uv_binary()), "lock", "--offline", "--quiet"], cwd=app, check=True)
    outcome = build(pipeline, app)
    assert outcome.error is None, outcome.text()
    assert "==> Installing dependencies: uv sync --frozen --no-dev --no-install-project" in outcome.text()
    assert outcome.release is not None and outcome.release.start_command == "python main.py"
    with serving(outcome.release, {"GREETING": "locked"}) as url:
        assert httpx.get(url).json() == {"app": "locked", "greeting": "locked"}


def test_remove_release_deletes_a_read_only_release(pipeline: Pipeline) -> None:
    release = build(pipeline, EXAMPLES / "procfile").release
    assert release is not None
    remove_release(pipeline.layout, release.deployment_id)
    assert not release.path.exists()
    remove_release(pipeline.layout, release.deployment_id)  # already gone: nothing to do
