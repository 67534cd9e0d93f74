"""Release: turn a validated source archive into an immutable, runnable folder.

The build happens in place, in the folder the release will keep (`layout.release_dir(id)`), because a virtualenv
bakes its absolute path into its scripts. It runs in a cell of its own (uid, cgroup, network namespace: see
`cells`), as that uid, so the folder belongs to the build while it runs; afterwards every process of the cell is
killed, and the folder is given back to root and made read-only. Until the server's record of the release
(`layout.release_record(id)`, outside any folder a sandbox can write) is written last, the folder is only a staging
area: a failed, timed-out or canceled build removes it, and no other release is ever touched.

Folder of a release:  app/ (the upload; the app runs in app/<root directory>), .venv/ (Python dependencies),
app/.../node_modules/ (Node dependencies), .runix/bin/ (python, runix-static).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from runix.layout import Layout
from runix.pipeline import processes, sandbox
from runix.pipeline.build import (
    BuildFailed,
    BuildInterrupted,
    BuildPlan,
    ProjectBuildSettings,
    Release,
    ReleaseDamaged,
    detect,
    static,
)
from runix.pipeline.cells import Cell, CellLimits, CellPool, IsolationUnavailable
from runix.pipeline.disk import MB, DiskQuota, evict_least_recently_used, touch, tree_bytes
from runix.pipeline.sandbox import network_env, read_lines
from runix.pipeline.source import SourceLimits, SourceRejected, extract
from runix.settings import Settings

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# A build's cell when the caller names no plan (tests, tools): the Hobby plan's build limits.
BUILD_LIMITS = CellLimits(memory_mb=2048, max_processes=256, tmp_mb=512)
# A cache scope is an account id, or "<account id>/<project id>" for a project's own caches within its account's.
CACHE_SCOPE = re.compile(r"[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64})?")
DISK_POLL_SECONDS = 2.0
# Signals Runix never sends a build (it ends builds with SIGKILL): one of these came from outside.
_OUTSIDE_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
# How long a killed build's output may take to drain before Runix stops waiting for it.
DRAIN_SECONDS = 2.0

LogFn = Callable[[str, str], None]


def uv_binary() -> Path:
    """The uv that ships with Runix (beside its Python), else the one on PATH."""
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        raise BuildFailed("uv is not installed on the Runix server, so Python apps cannot be built")
    return Path(found)


def system_python() -> str | None:
    """The system Python 3 (visible inside the sandbox under /usr): apps' virtualenvs are made from it."""
    return shutil.which("python3", path=SYSTEM_PATH)


def app_python() -> str:
    found = system_python()
    if not found:
        raise BuildFailed("Python 3 is not installed on the Runix server (/usr/bin/python3), so Python apps cannot run")
    return found


@dataclass
class _Step:
    title: str
    command: str
    # Runs first in the same sandboxed shell (one process start less); it has its own line in the log.
    setup: _Step | None = None

    def script(self) -> str:
        return f"{self.setup.command} && {self.command}" if self.setup else self.command


@dataclass
class _Build:
    """One build's folders, environment and deadline, shared by its steps."""

    release_dir: Path
    app_dir: Path
    env: dict[str, str]
    writable: list[Path]
    readonly: list[Path]
    sandbox: bool
    deadline: float
    timeout: float
    log: LogFn
    cell: Cell | None = None
    stopped_for: str | None = None  # set when Runix itself ended the build (over its disk quota)

    async def run(self, step: _Step) -> None:
        for part in (step.setup, step):
            if part:
                self.log("stdout", f"==> {part.title}: {part.command}")
        if self.cell is not None:
            self.cell.group.forget_oom()
        try:
            proc = await sandbox.spawn(["/bin/sh", "-c", step.script()], cell=self.cell, root=self.release_dir,
                                       writable=self.writable, readonly=self.readonly, env=self.env,
                                       cwd=self.app_dir, enabled=self.sandbox)
        except OSError as exc:
            raise BuildFailed(f"Runix could not start the build: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        pumps = asyncio.gather(read_lines(proc.stdout, lambda line: self.log("stdout", line)),
                               read_lines(proc.stderr, lambda line: self.log("stderr", line)))
        loop = asyncio.get_running_loop()
        try:
            code = await asyncio.wait_for(proc.wait(), timeout=max(0.0, self.deadline - loop.time()))
        except TimeoutError:
            await _kill(proc, pumps)
            raise BuildFailed(f"Build exceeded {self.timeout:g} seconds") from None
        except asyncio.CancelledError:
            await _kill(proc, pumps)
            raise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pumps, DRAIN_SECONDS)
        if code != 0 or self.stopped_for:
            if self.stopped_for:
                raise BuildFailed(f"{step.title} was stopped: {self.stopped_for}. Delete deployments you no longer "
                                  "need (`runix deployments rm`), or move up a plan")
            if -code in _OUTSIDE_SIGNALS:
                raise BuildInterrupted(f"{step.title} was ended by {signal.Signals(-code).name}, which Runix did not "
                                       "send: deploy again")
            if self.cell is not None and self.cell.group.was_oom_killed():
                raise BuildFailed(f"{step.title} failed: {self.cell.limits.describe_memory()} for builds on "
                                  "your plan (the kernel stopped a process of the build)")
            raise BuildFailed(f"{step.title} failed: `{step.command}` exited with code {code} (see the build log)")


async def _kill(proc: asyncio.subprocess.Process, pumps: asyncio.Future) -> None:
    """Kills the step's whole process group (in the sandbox: its whole pid namespace) and stops reading from it."""
    with contextlib.suppress(Exception):
        await asyncio.shield(processes.end_group(proc, 0))
    with contextlib.suppress(Exception):
        await asyncio.shield(proc.wait())
    pumps.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await pumps


def _app_dir(app_root: Path, root_directory: str | None) -> Path:
    if not root_directory or root_directory.strip() in ("", ".", "/"):
        return app_root
    relative = PurePosixPath(root_directory.strip().strip("/"))
    if ".." in relative.parts:
        raise BuildFailed(f"Root directory '{root_directory}' must be a folder inside the upload")
    app_dir = app_root / relative
    if not app_dir.is_dir() or not app_dir.resolve().is_relative_to(app_root.resolve()):
        raise BuildFailed(f"Root directory '{root_directory}' is not a folder in the upload")
    return app_dir


def _steps(plan: BuildPlan, release_dir: Path, project_settings: ProjectBuildSettings) -> list[_Step]:
    steps: list[_Step] = []
    setup = None
    if plan.dependencies == "python":
        # A custom install command that uses pip itself needs pip in the virtualenv; uv's own needs nothing.
        custom = project_settings.install_command
        seed = " --seed" if custom and not custom.lstrip().startswith("uv ") else ""
        venv = shlex.quote(str(release_dir / ".venv"))
        setup = _Step("Creating the Python environment",
                      f"uv venv --quiet{seed} --python {shlex.quote(app_python())} {venv}")
    if plan.install_command:
        steps.append(_Step("Installing dependencies", plan.install_command, setup))
    elif setup:
        steps.append(setup)
    if plan.build_command:
        steps.append(_Step("Building", plan.build_command))
    return steps


@dataclass
class _Toolchain:
    """What a kind of dependencies adds to a build: PATH entries, variables, and folders to mount."""

    env_path: list[str] = field(default_factory=list)  # kept in the release for the runtime
    release_env: dict[str, str] = field(default_factory=dict)  # kept in the release for the runtime
    build_env: dict[str, str] = field(default_factory=dict)  # for the build only
    tool_path: list[str] = field(default_factory=list)  # for the build only
    writable: list[Path] = field(default_factory=list)
    readonly: list[Path] = field(default_factory=list)


def cache_dir(layout: Layout, tool: str, scope: str | None) -> Path:
    """The download cache of a tool (uv, npm), shared by the builds of one scope (e.g. one account) or by all."""
    if scope is not None and not CACHE_SCOPE.fullmatch(scope):
        raise ValueError(f"invalid cache scope {scope!r}")
    folder = layout.cache / tool / scope if scope else layout.cache / tool
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _python_toolchain(cache: Path, release_dir: Path) -> _Toolchain:
    venv = release_dir / ".venv"
    uv = uv_binary()
    return _Toolchain(
        env_path=[str(venv / "bin")],
        release_env={"VIRTUAL_ENV": str(venv)},
        build_env={
            "UV_CACHE_DIR": str(cache),
            "UV_PROJECT_ENVIRONMENT": str(venv),  # where `uv sync` installs a locked project
            # The cache and the release are different mounts in the sandbox: copy instead of trying hardlinks.
            "UV_LINK_MODE": "copy",
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
        },
        tool_path=[str(uv.parent)],
        writable=[cache],
        readonly=[uv],
    )


def _node_toolchain(cache: Path, app_dir: Path) -> _Toolchain:
    return _Toolchain(
        env_path=[str(app_dir / "node_modules" / ".bin")],
        build_env={
            "npm_config_cache": str(cache),
            # A warm cache answers without asking the registry again.
            "npm_config_prefer_offline": "true",
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
            "npm_config_progress": "false",
        },
        writable=[cache],
    )


def _toolchain(layout: Layout, plan: BuildPlan, release_dir: Path, app_dir: Path, scope: str | None) -> _Toolchain:
    if plan.dependencies == "python":
        return _python_toolchain(cache_dir(layout, "uv", scope), release_dir)
    if plan.dependencies == "node":
        return _node_toolchain(cache_dir(layout, "npm", scope), app_dir)
    return _Toolchain()


def _add_runix_tools(release_dir: Path, kind: str) -> Path:
    """The release's own bin folder: `python` for apps without a virtualenv, `runix-static` for static sites."""
    bin_dir = release_dir / ".runix" / "bin"
    bin_dir.mkdir(parents=True)
    python = system_python()
    if python:
        (bin_dir / "python").symlink_to(python)
    if kind == "static":
        shutil.copyfile(static.SERVER_SOURCE, bin_dir / static.SERVE)
        (bin_dir / static.SERVE).chmod(0o755)
    return bin_dir


def _build_env(toolchain: _Toolchain, user_env: dict[str, str]) -> dict[str, str]:
    """The user's variables, then what the build needs (which the user cannot override)."""
    path = ":".join([*toolchain.env_path, *toolchain.tool_path, SYSTEM_PATH])
    base = {"PATH": path, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
    return {**network_env(), **user_env, **base, **toolchain.release_env, **toolchain.build_env}


def own_tree(folder: Path, uid: int) -> None:
    """Gives `folder` and everything in it to `uid` (links themselves, never what they point to)."""
    os.lchown(folder, uid, uid)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), uid, uid)


def make_read_only(folder: Path) -> int:
    """Root's, readable by every app uid and writable by none; set-id bits stripped. Called once no process of the
    build is left, so nothing can swap a folder for a link while this walks (and links are never followed). Returns
    what the folder takes on disk, measured on the same walk."""
    total = os.lstat(folder).st_blocks * 512
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            total += info.st_blocks * 512
            os.lchown(path, 0, 0)
            if not stat.S_ISLNK(info.st_mode):
                readable = 0o555 if stat.S_ISDIR(info.st_mode) or info.st_mode & 0o111 else 0o444
                os.chmod(path, (stat.S_IMODE(info.st_mode) | readable) & 0o555)
    os.lchown(folder, 0, 0)
    os.chmod(folder, 0o555)
    return total


@contextlib.asynccontextmanager
async def _disk_watched(build: _Build, folders: list[Path], disk: DiskQuota | None) -> AsyncIterator[None]:
    """Measures what the build has written every few seconds; past its quota, every process of the build is
    killed, and the step that was running fails saying why (so a build cannot fill the host's disk)."""
    if disk is None:
        yield
        return
    limit = disk.release_bytes + disk.cache_bytes

    async def watch() -> None:
        while True:
            await asyncio.sleep(DISK_POLL_SECONDS)
            used = sum([await asyncio.to_thread(tree_bytes, f) for f in folders])
            if used > limit:
                build.stopped_for = (f"the build wrote {used // MB} MB, more than the {disk.describe()} plus "
                                     f"{disk.cache_bytes // MB} MB of build caches")
                if build.cell is not None:
                    await asyncio.to_thread(build.cell.kill_all)
                return

    watcher = asyncio.create_task(watch(), name="runix-build-disk")
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _keep_caches_within(layout: Layout, scope: str, used: list[Path], quota_bytes: int) -> None:
    """After a build: its caches are the most recently used, and the account's least recently used caches go
    until the rest fit its plan's quota. What is left is noted for GET /billing."""
    for folder in used:
        touch(folder)
    account = scope.split("/")[0]
    kept = evict_least_recently_used(layout.account_caches(account), quota_bytes)
    record = layout.cache_usage(account)
    record.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    record.write_text(str(kept))


def remove_release(layout: Layout, deployment_id: str) -> None:
    """Deletes a release folder (built or half-built) and the server's record of it; a no-op when there is none."""
    layout.release_record(deployment_id).unlink(missing_ok=True)
    folder = layout.release_dir(deployment_id)
    if not folder.exists():
        return
    # Deleting entries needs write permission on their folders, which a finished release no longer has.
    for dirpath, dirnames, _ in os.walk(folder):
        os.chmod(dirpath, 0o755)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    shutil.rmtree(folder)


def load_release(layout: Layout, deployment_id: str) -> Release:
    """The built release of a deployment, from the server's record; raises ReleaseDamaged when there is none."""
    return Release.load(layout.release_record(deployment_id), layout.release_dir(deployment_id))


async def build_release(layout: Layout, settings: Settings, deployment_id: str, archive: Path,
                        project_settings: ProjectBuildSettings, env: dict[str, str], log: LogFn, *,
                        cache_scope: str | None = None, cells: CellPool | None = None,
                        limits: CellLimits | None = None, disk: DiskQuota | None = None) -> Release:
    """Builds the release of one deployment; raises BuildFailed (and leaves nothing behind) when it cannot.

    Builds write to their download caches, so a build could plant files there for the next one: `cache_scope` (e.g.
    the account id) gives each scope caches of its own, so one account's builds never read what another's wrote.
    With `cells`, the build runs in a cell of its own with `limits`. With `disk`, a build whose release and caches
    grow past it is stopped and fails, and afterwards the scope's account keeps its caches within its quota.
    """
    with contextlib.suppress(ReleaseDamaged):
        return load_release(layout, deployment_id)
    remove_release(layout, deployment_id)  # what an interrupted build of this deployment left
    cell = None
    try:
        if cells is not None:
            try:
                cell = await asyncio.to_thread(cells.acquire, limits or BUILD_LIMITS, network=True)
            except IsolationUnavailable as exc:
                raise BuildFailed(f"Runix could not start the build: {exc}") from exc
        return await _build_release(layout, settings, deployment_id, archive, project_settings, env, log,
                                    cache_scope, cell, disk)
    except BaseException:
        if cell is not None:
            await asyncio.to_thread(cell.kill_all)
        remove_release(layout, deployment_id)
        raise
    finally:
        if cell is not None:
            await asyncio.to_thread(cell.release)


def remove_caches(layout: Layout, account_id: str, project_id: str) -> None:
    """Deletes a project's build caches (the project is gone), once no build of its account holds them."""
    fd = _open_cache_lock(layout, account_id)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for folder in layout.project_caches(account_id, project_id):
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(fd)


def _open_cache_lock(layout: Layout, scope: str) -> int:
    """The lock file of a scope's account (not yet locked): the account's projects share one quota, so their
    builds take turns with its caches."""
    layout.cache.mkdir(parents=True, exist_ok=True)
    account = scope.split("/")[0]
    return os.open(layout.cache / f".{account}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextlib.asynccontextmanager
async def _caches_held(layout: Layout, scope: str | None) -> AsyncIterator[None]:
    """Holds a scope's download caches for one build at a time (a lock file, so across processes too): each build
    owns them under its own uid while it runs, and a second one taking them over would pull them from under the
    first. Polled rather than waited for in a thread, so a canceled build never leaves a lock taken behind it."""
    if scope is None:
        yield
        return
    fd = _open_cache_lock(layout, scope)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)


async def _build_release(layout: Layout, settings: Settings, deployment_id: str, archive: Path,
                         project_settings: ProjectBuildSettings, env: dict[str, str], log: LogFn,
                         cache_scope: str | None, cell: Cell | None, disk: DiskQuota | None) -> Release:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.build_timeout
    release_dir = layout.release_dir(deployment_id)
    release_dir.mkdir(parents=True)
    app_root = release_dir / "app"
    try:
        await asyncio.to_thread(extract, archive, app_root, SourceLimits.from_settings(settings))
    except SourceRejected as exc:
        raise BuildFailed(exc.message) from exc
    except OSError as exc:
        raise BuildFailed(f"Runix could not unpack the source: {exc}") from exc
    app_dir = _app_dir(app_root, project_settings.root_directory)
    plan = detect(app_dir, project_settings)
    log("stdout", f"==> Detected a {plan.kind} app ({plan.reason})")
    toolchain = _toolchain(layout, plan, release_dir, app_dir, cache_scope)
    toolchain.env_path.append(str(_add_runix_tools(release_dir, plan.kind)))
    build = _Build(release_dir=release_dir, app_dir=app_dir, env=_build_env(toolchain, env),
                   writable=[release_dir, *toolchain.writable], readonly=toolchain.readonly, sandbox=settings.sandbox,
                   deadline=deadline, timeout=settings.build_timeout, log=log, cell=cell)
    held = cache_scope if cell is not None and toolchain.writable else None  # caches taken: no other build uses them
    async with _caches_held(layout, held):
        if cell is not None:  # the build's own, while it runs: its uid writes them, nothing of root's
            for folder in [release_dir, *toolchain.writable]:
                await asyncio.to_thread(own_tree, folder, cell.uid)
        async with _disk_watched(build, [release_dir, *toolchain.writable], disk):
            for step in _steps(plan, release_dir, project_settings):
                await build.run(step)
        if cell is not None and not await asyncio.to_thread(cell.kill_all):
            raise BuildFailed("Processes the build started could not be stopped")
        if disk is not None and held is not None:
            await asyncio.to_thread(_keep_caches_within, layout, held, toolchain.writable, disk.cache_bytes)
    # Python apps print as they go, so their log lines reach the events live.
    release_env = {"PYTHONUNBUFFERED": "1", **toolchain.release_env}
    size_bytes = await asyncio.to_thread(make_read_only, release_dir)
    if disk is not None and size_bytes > disk.release_bytes:
        raise BuildFailed(f"The release takes {size_bytes // MB} MB, more than the {disk.describe()}: delete "
                          "deployments you no longer need (`runix deployments rm`), or move up a plan")
    release = Release(deployment_id=deployment_id, path=release_dir, app_dir=app_dir, kind=plan.kind,
                      start_command=plan.start_command, env_path=toolchain.env_path, env=release_env,
                      size_bytes=size_bytes)
    release.save(layout.release_record(deployment_id))
    log("stdout", f"==> Release ready; the app starts with: {plan.start_command}")
    return release
