"""The bubblewrap sandbox that builds and apps run in, shared by the build step and the runtime.

A sandboxed process sees the system read-only (/usr and the few /etc files programs need), a private /tmp, /proc and
/dev, and only the folders it is handed. It never sees the data dir, other apps' releases or the server's secrets:
bwrap itself starts with a minimal environment, the command's is built from `env` alone, and the data dir is simply
not mounted. It runs in a cell (see `cells`): its own uid, cgroup and network namespace.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable, Iterable
from pathlib import Path

from runix.pipeline import processes, seccomp
from runix.pipeline.cells import Cell

BWRAP = "bwrap"

# System folders a program may need; each is a symlink (merged /usr) or a folder bound read-only.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# The /etc files name resolution, TLS, users, time zones, the dynamic loader and npm/pip read. Nothing else of /etc.
ETC_PATHS = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/nsswitch.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/mime.types",
    "/etc/npmrc",
)

# Host variables a build needs to reach the package registries (custom CA bundles, proxies). None is a secret.
NETWORK_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def network_env() -> dict[str, str]:
    """The host's TLS and proxy settings, to pass to sandboxed processes that download packages."""
    return {name: os.environ[name] for name in NETWORK_ENV if name in os.environ}


def _system_binds() -> list[str]:
    args: list[str] = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ETC_PATHS:
        args += ["--ro-bind-try", path, path]
    return args


def _parent_dirs(destinations: Iterable[str]) -> list[str]:
    """`--dir` for every folder leading to the destinations, readable by all: bwrap run by root makes the ones it
    needs 0700, which a sandbox running as its own uid could not pass."""
    parents = {str(parent) for dest in destinations for parent in Path(dest).parents if str(parent) != "/"}
    args: list[str] = []
    for parent in sorted(parents, key=lambda p: (p.count("/"), p)):
        args += ["--perms", "0755", "--dir", parent]
    return args


def _binds(option: str, paths: Iterable[Path]) -> list[str]:
    args: list[str] = []
    for path in paths:
        resolved = str(Path(path).resolve())
        args += [option, resolved, resolved]
    return args


# The whole environment bwrap itself gets. bwrap stays the sandbox's PID 1, and /proc/1/environ is its environment:
# nothing of the server's may be in it.
BWRAP_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
SETPRIV = "/usr/bin/setpriv"
IDENTITY_DIR = Path("/run/runix/identity")  # server-only: the passwd and group files each sandbox uid sees


def identity_files(uid: int) -> tuple[Path, Path]:
    """/etc/passwd and /etc/group as a sandbox with `uid` sees them: the system's users, plus `runix` for its own
    uid (tools such as npm and getpass look the current user up)."""
    folder = IDENTITY_DIR / str(uid)
    passwd, group = folder / "passwd", folder / "group"
    if not passwd.exists() or not group.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for target, source, line in ((passwd, "/etc/passwd", f"runix:x:{uid}:{uid}:Runix app:/tmp:/bin/sh"),
                                     (group, "/etc/group", f"runix:x:{uid}:")):
            try:
                system = Path(source).read_text()
            except OSError:
                system = ""
            staged = target.with_suffix(".new")
            staged.write_text(system.rstrip("\n") + "\n" + line + "\n")
            staged.chmod(0o644)
            os.replace(staged, target)
    return passwd, group


def sandboxed(
    argv: list[str],
    *,
    root: Path,
    writable: Iterable[Path] = (),
    readonly: Iterable[Path] = (),
    env: dict[str, str],
    cwd: Path,
    network: bool = True,
    enabled: bool = True,
    uid: int | None = None,
    tmp_mb: int | None = None,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The command line that runs `argv` in a bubblewrap sandbox (or `argv` itself when `enabled` is False).

    `root` is the job's folder (a release), bound read-only at its own path, so absolute paths baked into it (a
    virtualenv's scripts) work; a folder listed in `writable` is bound writable (it may be `root` itself, for a
    build), one in `readonly` read-only, each at its own path. With `network=False` the sandbox has no network;
    otherwise it has the network namespace it was started in (its cell's). With `uid`, the command runs as that
    uid (and gid) with no capabilities and no way to gain any (no_new_privs); /tmp is a tmpfs of `tmp_mb`. With
    `seccomp_fd` (see `seccomp.pipe_fd`), the command and all it starts run under that filter.
    """
    if not enabled:
        return list(argv)
    # No capabilities but the three setpriv needs to become `uid` (and it drops them, and the bounding set, itself):
    # bwrap started by root would otherwise hand them all on (mount, mknod, ptrace...).
    caps = ["--cap-drop", "ALL"]
    if uid is not None:
        caps += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    args = [BWRAP, "--die-with-parent", "--new-session", *caps,
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "runix"]
    if not network:
        args.append("--unshare-net")
    args += _parent_dirs(ETC_PATHS) + _system_binds()
    if uid is not None:
        passwd, group = identity_files(uid)
        args += ["--ro-bind", str(passwd), "/etc/passwd", "--ro-bind", str(group), "/etc/group"]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777"]
    if tmp_mb:
        args += ["--size", str(tmp_mb * 1024 * 1024)]
    args += ["--tmpfs", "/tmp"]
    binds = _binds("--ro-bind", [root, *readonly]) + _binds("--bind", writable)
    args += _parent_dirs(binds[2::3]) + binds
    # The sandbox's own root (where bwrap made the folders leading to the binds) is read-only too.
    args += ["--remount-ro", "/", "--clearenv"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", str(Path(cwd).resolve()), "--"]
    if uid is not None:
        args += [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                 "--bounding-set=-all", "--no-new-privs", "--"]
    return args + list(argv)


async def spawn(
    argv: list[str],
    *,
    cell: Cell | None,
    root: Path,
    env: dict[str, str],
    cwd: Path,
    writable: Iterable[Path] = (),
    readonly: Iterable[Path] = (),
    network: bool = True,
    enabled: bool = True,
    uid: int | None = None,
    output: bool = True,
    nice: bool = False,
    max_open_files: int = 4096,
) -> asyncio.subprocess.Process:
    """Starts `argv` sandboxed in `cell` (its cgroup, its network namespace, its uid unless `uid` names another), in
    a process group of its own that dies with the server; stdout and stderr piped with `output`, at the lowest CPU
    priority with `nice`. bwrap itself gets only BWRAP_ENV; the command gets exactly `env`."""
    limits = cell.limits if cell is not None else None
    filter_fd = seccomp.pipe_fd() if enabled else None
    command = sandboxed(argv, root=root, writable=writable, readonly=readonly, env=env, cwd=cwd, network=network,
                        enabled=enabled, uid=(uid if uid is not None else cell.uid) if cell is not None else None,
                        tmp_mb=limits.tmp_mb if limits else None, seccomp_fd=filter_fd)
    nproc = limits.max_processes if limits else None
    open_files = limits.max_open_files if limits else max_open_files

    def prepare_child() -> None:
        if cell is not None:
            cell.enter()
        for limit, value in ((resource.RLIMIT_NOFILE, open_files), (resource.RLIMIT_NPROC, nproc)):
            if value is None:
                continue
            _soft, hard = resource.getrlimit(limit)
            capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(limit, (capped, capped))
        processes.die_with_server()
        if nice:
            os.nice(19)

    piped = asyncio.subprocess.PIPE if output else asyncio.subprocess.DEVNULL
    try:
        return processes.track(await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=piped, stderr=piped, start_new_session=True,
            preexec_fn=prepare_child, env=BWRAP_ENV if enabled else env, cwd=cwd,
            pass_fds=() if filter_fd is None else (filter_fd,)))
    finally:
        if filter_fd is not None:
            os.close(filter_fd)


async def read_lines(stream: asyncio.StreamReader, emit: Callable[[str], None], max_line: int = 8192) -> None:
    """Calls `emit` with each line of a process's output as soon as it arrives (over-long lines come in pieces)."""
    pending = b""
    while chunk := await stream.read(65536):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            emit(raw.decode("utf-8", "replace").rstrip("\r"))
        while len(pending) > max_line:
            emit(pending[:max_line].decode("utf-8", "replace"))
            pending = pending[max_line:]
    if pending:
        emit(pending.decode("utf-8", "replace").rstrip("\r"))
