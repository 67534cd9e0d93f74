"""Control groups: one per app and per build, so limits hold for all of its processes together and "every process
of this app" is exact (to kill, to count, to tell an out-of-memory kill from a crash).

cgroup v2 is used where its unified hierarchy has the memory, pids and cpu controllers; otherwise the v1
hierarchies (memory, pids, cpu), as on machines that mount v1 with an empty v2 beside it. Runix keeps its groups
under `runix/` in each hierarchy. A process joins its group before it runs anything (`join`, in the child between
fork and exec), so everything it starts is counted from the first instruction.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
V2_ROOTS = (ROOT / "unified", ROOT)  # hybrid (v2 beside v1), then pure v2
V1_CONTROLLERS = ("memory", "pids", "cpu")
V2_CONTROLLERS = ("memory", "pids", "cpu")
PARENT = "runix"
V1_DEFAULT_SHARES = 1024  # cpu.shares that matches cpu.weight 100


class CgroupsUnavailable(Exception):
    """Neither cgroup v2 with the needed controllers nor the v1 hierarchies are mounted writable."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # memory and swap together
    max_processes: int
    cpu_weight: int  # 1-10000, 100 = an ordinary share


def _v2_root() -> Path | None:
    for root in V2_ROOTS:
        controllers = root / "cgroup.controllers"
        with contextlib.suppress(OSError):
            if set(V2_CONTROLLERS) <= set(controllers.read_text().split()):
                return root
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class Group:
    """One cgroup (in each v1 hierarchy, or once in v2), made by `Cgroups.create`."""

    def __init__(self, paths: list[Path], v2: bool):
        self.paths = paths
        self.v2 = v2
        self._oom_baseline = self.oom_kills()

    @property
    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.paths]

    def join(self) -> None:
        """Moves the calling process into the group. Meant for a child between fork and exec (a preexec_fn): it
        only writes to files it was handed, nothing that could take a lock."""
        for procs in self.procs_files:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.paths:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return sorted(found)

    def kill_all(self, timeout: float = 5.0) -> bool:
        """SIGKILLs every process of the group, again until none is left (a process may fork while being killed; the
        pids limit bounds how many there can be). True when the group is empty."""
        if self.v2 and (self.paths[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.paths[0] / "cgroup.kill", "1")
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def oom_kills(self) -> int:
        """How many processes of the group the kernel killed for memory so far."""
        stats = self.paths[0] / ("memory.events" if self.v2 else "memory.oom_control")
        with contextlib.suppress(OSError, ValueError):
            for line in stats.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def was_oom_killed(self) -> bool:
        """True once the kernel has killed a process of the group for memory since the group was made (or since
        the last `forget_oom`)."""
        return self.oom_kills() > self._oom_baseline

    def forget_oom(self) -> None:
        self._oom_baseline = self.oom_kills()

    def memory_peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((self.paths[0] / name).read_text())
        return 0

    def remove(self) -> None:
        """Kills what is left and deletes the group."""
        self.kill_all()
        for path in self.paths:
            for _ in range(50):  # rmdir fails while the last killed process is still being torn down
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


class Cgroups:
    """The machine's cgroup setup, checked once; makes and finds Runix's groups."""

    def __init__(self) -> None:
        self.v2_root = _v2_root()
        if self.v2_root is None:
            missing = [c for c in V1_CONTROLLERS if not (ROOT / c / "cgroup.procs").exists()]
            if missing:
                raise CgroupsUnavailable(
                    "Runix needs cgroups to bound each app and build: cgroup v2 with the memory, pids and cpu "
                    f"controllers, or the cgroup v1 hierarchies {', '.join(V1_CONTROLLERS)} under {ROOT} "
                    f"(missing: {', '.join(missing)})")
        try:
            for parent in self._parents():
                parent.mkdir(exist_ok=True)
            if self.v2_root is not None:  # children of runix/ get the controllers
                _write(self.v2_root / "cgroup.subtree_control", "+memory +pids +cpu")
                _write(self.v2_root / PARENT / "cgroup.subtree_control", "+memory +pids +cpu")
        except OSError as exc:
            raise CgroupsUnavailable(f"Runix cannot make its cgroups ({exc}): run the server as root, with the "
                                     "cgroup hierarchies mounted read-write") from exc

    @property
    def version(self) -> int:
        return 2 if self.v2_root is not None else 1

    def _parents(self) -> list[Path]:
        if self.v2_root is not None:
            return [self.v2_root / PARENT]
        return [ROOT / c / PARENT for c in V1_CONTROLLERS]

    def create(self, name: str, limits: Limits) -> Group:
        """A new, empty group `name` with `limits` (what a stale group of that name held is killed first)."""
        paths = [parent / name for parent in self._parents()]
        stale = Group(paths, self.v2_root is not None)
        if any(p.exists() for p in paths):
            stale.remove()
        for path in paths:
            path.mkdir()
        if self.v2_root is not None:
            folder = paths[0]
            _write(folder / "memory.max", str(limits.memory_bytes))
            with contextlib.suppress(FileNotFoundError):  # no swap accounting: there is no swap to bound
                _write(folder / "memory.swap.max", "0")
            _write(folder / "pids.max", str(limits.max_processes))
            _write(folder / "cpu.weight", str(limits.cpu_weight))
        else:
            memory, pids, cpu = paths
            _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
            with contextlib.suppress(FileNotFoundError):  # memsw exists where swap is accounted
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            _write(pids / "pids.max", str(limits.max_processes))
            _write(cpu / "cpu.shares", str(max(2, limits.cpu_weight * V1_DEFAULT_SHARES // 100)))
        return Group(paths, self.v2_root is not None)
