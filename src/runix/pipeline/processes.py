"""What the runtime's apps and the Caddy router's process have in common: they die with the server, stop as a
process group, and are started again after a crash on one schedule."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal

# Restarts after a crash wait 0.5 s, 1 s, 2 s, ... at most 30 s; the wait starts over once a run lasted a minute.
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 0.5, 30.0, 60.0

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_server() -> None:
    """In the child before exec (a preexec_fn): the kernel kills it if the server dies without stopping it (a
    crash, a SIGKILL), so nothing outlives the server holding a port. Under bubblewrap, --die-with-parent does the
    same inside."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def end_group(process: asyncio.subprocess.Process, grace: float) -> None:
    """Ends the process group `process` leads (it was started with start_new_session): SIGTERM, then SIGKILL for
    whatever of the group is left after `grace` seconds or once the leader is gone."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
