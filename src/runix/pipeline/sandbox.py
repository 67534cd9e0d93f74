"""The bubblewrap sandbox that builds and apps run in, shared by the build step and the runtime.

A sandboxed process sees the system read-only (/usr and the few /etc files programs need), a private /tmp, /proc and
/dev, and only the folders it is handed. It never sees the data dir, other apps' releases or the server's secrets:
its environment is cleared and rebuilt from `env`, and the data dir is simply not mounted.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable, Iterable
from pathlib import Path

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


def _binds(option: str, paths: Iterable[Path]) -> list[str]:
    args: list[str] = []
    for path in paths:
        resolved = str(Path(path).resolve())
        args += [option, resolved, resolved]
    return args


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
) -> list[str]:
    """The command line that runs `argv` in a bubblewrap sandbox (or `argv` itself when `enabled` is False).

    `root` is the job's folder (a release), bound read-only at its own path, so absolute paths baked into it (a
    virtualenv's scripts) work; a folder listed in `writable` is bound writable (it may be `root` itself, for a
    build), one in `readonly` read-only, each at its own path. With `network=False` the sandbox has no network.
    """
    if not enabled:
        return list(argv)
    # No capabilities: bwrap started by root would otherwise hand them all on (mount, mknod, ptrace...).
    args = [BWRAP, "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "runix"]
    if not network:
        args.append("--unshare-net")
    args += _system_binds()
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    args += _binds("--ro-bind", [root, *readonly])
    args += _binds("--bind", writable)
    # The sandbox's own root (where bwrap made the folders leading to the binds) is read-only too.
    args += ["--remount-ro", "/", "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", str(Path(cwd).resolve()), "--", *argv]
    return args


def resource_limits(memory_bytes: int, max_processes: int, max_open_files: int) -> Callable[[], None]:
    """A `preexec_fn` that caps memory, processes and open files of the child (and all it starts).

    Memory is RLIMIT_DATA (the heap and private writable mappings), not RLIMIT_AS: V8, Go and the JVM reserve far
    more address space than they use, and Node.js does not even start under a 512 MB RLIMIT_AS.
    RLIMIT_NPROC counts every process of the user, so it is only a real cap when apps run as their own user.
    """

    def apply() -> None:
        for limit, value in (
            (resource.RLIMIT_DATA, memory_bytes),
            (resource.RLIMIT_NPROC, max_processes),
            (resource.RLIMIT_NOFILE, max_open_files),
        ):
            _soft, hard = resource.getrlimit(limit)
            capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(limit, (capped, capped))

    return apply


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
