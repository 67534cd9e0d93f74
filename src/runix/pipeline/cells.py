"""Cells: what one app or one build runs in, on top of the bubblewrap sandbox. A cell has

- a uid of its own, from a reserved range (`RUNIX_SANDBOX_UID_BASE` on): files it creates are not root's, its
  process limit is real, and it cannot read the data dir (0700) or signal anything of the server;
- a cgroup of its own: memory (swap included), processes and CPU weight for all its processes together;
- a network namespace of its own (for apps and builds that need the network): see `netns`.

Slots are numbered; slot N means uid base+N, namespace runix-N and cgroup runix/cell-N. A slot is held with an
exclusive lock on /run/runix/cells/N.lock for as long as the cell lives, so every Runix process on the machine
(several servers, several workers) takes a different slot, and a process that dies gives its slots back with its
locks. Whatever a dead holder left in a slot (processes, an old cgroup) is killed when the slot is taken again.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runix.pipeline import processes
from runix.pipeline.cgroups import Cgroups, CgroupsUnavailable, Group, Limits
from runix.pipeline.netns import Network, Networks, NetworkUnavailable

LOCK_DIR = Path("/run/runix/cells")
DEFAULT_UID_BASE = 200_000  # RUNIX_SANDBOX_UID_BASE
DEFAULT_SUBNET = "10.89.0.0/16"  # RUNIX_SANDBOX_SUBNET: a /30 per slot, host side .1, sandbox .2
FILLER_UID_OFFSET = 0  # base+0: the bytecode compiler; tenant cells start at base+1


def try_lock(path: Path) -> int | None:
    """An open descriptor of `path` (made if missing) that holds its exclusive lock until it is closed, or None while
    another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class IsolationUnavailable(Exception):
    """The machine cannot isolate tenants (a tool is missing, or namespaces or cgroups cannot be used)."""


@dataclass(frozen=True)
class CellLimits:
    memory_mb: int
    max_processes: int
    cpu_weight: int = 100
    tmp_mb: int = 64
    max_open_files: int = 4096

    def cgroup(self) -> Limits:
        return Limits(memory_bytes=self.memory_mb * 1024 * 1024, max_processes=self.max_processes,
                      cpu_weight=self.cpu_weight)

    def describe_memory(self) -> str:
        return f"out of memory: {self.memory_mb} MB limit"


@dataclass
class Cell:
    slot: int
    uid: int
    limits: CellLimits
    group: Group
    network: Network | None
    _lock_fd: int
    _netns_fd: int | None = field(default=None, repr=False)
    _pool: CellPool | None = field(default=None, repr=False)

    @property
    def address(self) -> str | None:
        """Where the cell's app listens, seen from the host (None without a network of its own)."""
        return self.network.sandbox_address if self.network else None

    def netns_fd(self) -> int | None:
        if self.network is not None and self._netns_fd is None:
            self._netns_fd = self.network.open()
        return self._netns_fd

    def enter(self) -> None:
        """In the child between fork and exec (before it drops root): into the cgroup and the network namespace."""
        self.group.join()
        fd = self._netns_fd
        if fd is not None:
            processes.enter_network_namespace(fd)

    def kill_all(self) -> bool:
        return self.group.kill_all()

    def release(self) -> None:
        """Kills whatever still runs in the cell and gives its slot back."""
        if self._pool is not None:
            self._pool.release(self)
            self._pool = None


class CellPool:
    """Hands out cells; one per process (the server's runtime and build steps share it)."""

    def __init__(self, *, uid_base: int, subnet: str, slots: int | None = None):
        self.uid_base = uid_base
        self.cgroups = Cgroups()
        self.networks = Networks(subnet)
        self.slots = min(slots or self.networks.capacity, self.networks.capacity) - 1
        self._mutex = threading.Lock()
        self._next = 1
        LOCK_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def filler_uid(self) -> int:
        """The uid that compiles apps' bytecode caches: not any app's, so an app reads its cache but cannot write it."""
        return self.uid_base + FILLER_UID_OFFSET

    def install(self) -> None:
        self.networks.install()

    def acquire(self, limits: CellLimits, *, network: bool) -> Cell:
        """A free slot, locked, cleaned of what a dead holder left, with a fresh cgroup (and its namespace)."""
        with self._mutex:
            start = self._next
            for i in range(self.slots):
                slot = 1 + (start - 1 + i) % self.slots
                fd = try_lock(LOCK_DIR / f"{slot}.lock")
                if fd is not None:
                    self._next = slot % self.slots + 1
                    break
            else:
                raise IsolationUnavailable(f"all {self.slots} sandbox slots are in use")
        try:
            group = self.cgroups.create(f"cell-{slot}", limits.cgroup())
            net = self.networks.prepare(slot) if network else None
        except (OSError, NetworkUnavailable) as exc:
            os.close(fd)
            raise IsolationUnavailable(f"could not prepare a sandbox: {exc}") from exc
        cell = Cell(slot=slot, uid=self.uid_base + slot, limits=limits, group=group, network=net, _lock_fd=fd,
                    _pool=self)
        cell.netns_fd()
        return cell

    def release(self, cell: Cell) -> None:
        cell.group.remove()
        if cell._netns_fd is not None:
            os.close(cell._netns_fd)
            cell._netns_fd = None
        os.close(cell._lock_fd)


def check_tools() -> list[str]:
    """What the sandbox needs that is not installed, as Debian package names."""
    needed = {"bwrap": "bubblewrap", "setpriv": "util-linux", "ip": "iproute2", "nft": "nftables"}
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    return [package for tool, package in needed.items() if shutil.which(tool, path=path) is None]


def make_pool(*, uid_base: int = DEFAULT_UID_BASE, subnet: str = DEFAULT_SUBNET) -> CellPool:
    """The pool, after checking that this machine can isolate tenants; raises IsolationUnavailable naming the fix."""
    missing = check_tools()
    if missing:
        raise IsolationUnavailable(f"the sandbox needs {', '.join(missing)}: apt-get install {' '.join(missing)}")
    if os.geteuid() != 0:
        raise IsolationUnavailable("the sandbox needs root (to give each app its own uid, cgroup and network)")
    try:
        pool = CellPool(uid_base=uid_base, subnet=subnet)
        pool.install()
    except CgroupsUnavailable as exc:
        raise IsolationUnavailable(str(exc)) from exc
    except NetworkUnavailable as exc:
        raise IsolationUnavailable(f"network namespaces cannot be set up: {exc}") from exc
    return pool

