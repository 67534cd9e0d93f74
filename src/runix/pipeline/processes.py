"""What the processes Runix starts have in common: they die with the server, enter their sandbox's network, stop
as a process group, and are started again after a crash on one schedule."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import weakref

# Restarts after a crash wait 0.5 s, 1 s, 2 s, ... at most 30 s; the wait starts over once a run lasted a minute.
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 0.5, 30.0, 60.0

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000


def die_with_server() -> None:
    """In the child before exec (a preexec_fn): the kernel kills it if the server dies without stopping it (a
    crash, a SIGKILL), so nothing outlives the server holding a port. Under bubblewrap, --die-with-parent does the
    same inside."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def track(process: asyncio.subprocess.Process) -> asyncio.subprocess.Process:
    """Remembers a just-started process by a pidfd, which names that process and no other even once its pid is
    given to a new one: `end_group` then never signals a stranger's group."""
    with contextlib.suppress(OSError):
        fd = os.pidfd_open(process.pid)
        _pidfds[process] = fd
        weakref.finalize(process, os.close, fd)
    return process


_pidfds: weakref.WeakKeyDictionary[asyncio.subprocess.Process, int] = weakref.WeakKeyDictionary()


def _leader_alive(process: asyncio.subprocess.Process) -> bool:
    """True while the leader has not been reaped (a zombie still holds its pid, so its group id is still ours)."""
    if process.returncode is not None:
        return False
    fd = _pidfds.get(process)
    if fd is None:
        return True
    try:
        signal.pidfd_send_signal(fd, 0)
    except ProcessLookupError:
        return False
    return True


def enter_network_namespace(fd: int) -> None:
    """In the child before exec: into the network namespace `fd` names (os.setns comes with Python 3.12)."""
    if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns into the sandbox's network namespace failed")


async def end_group(process: asyncio.subprocess.Process, grace: float) -> None:
    """Ends the process group `process` leads (it was started with start_new_session): SIGTERM, then SIGKILL for
    whatever of the group is left after `grace` seconds or once the leader is gone. Pids are reused (32768 of them
    on many machines): once the leader is reaped and a process of that id exists, the id names someone else's group
    now, and nothing is sent. While any member of the old group lives, the id cannot be given out again."""
    if _leader_alive(process):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await process.wait()
    elif os.path.exists(f"/proc/{process.pid}"):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
