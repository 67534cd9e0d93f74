"""The build queue: deployments wait here until a build slot is free, then build as asyncio tasks.

Builds run their tools as subprocesses, so the event loop that also serves the API is never blocked. At most
`max_parallel` builds run at once on this server, and at most the plan's `concurrent_builds` per account; past that a
deployment stays QUEUED, first come first served.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("runix.worker")


@dataclass(frozen=True)
class BuildJob:
    deployment_id: str
    account_id: str
    concurrent_builds: int  # the account's plan limit when the job was queued


class BuildQueue:
    def __init__(self, run: Callable[[str], Awaitable[None]], max_parallel: int):
        self._run = run
        self.max_parallel = max(1, max_parallel)
        self._waiting: list[BuildJob] = []
        self._running: dict[str, tuple[BuildJob, asyncio.Task]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stopping = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def submit(self, job: BuildJob) -> None:
        """Queues a build (from any thread)."""
        self._call(self._submit, job)

    def cancel(self, deployment_id: str) -> None:
        """Drops a waiting build or cancels a running one (from any thread)."""
        self._call(self._cancel, deployment_id)

    def is_queued(self, deployment_id: str) -> bool:
        return deployment_id in self._running or any(j.deployment_id == deployment_id for j in self._waiting)

    async def stop(self) -> list[str]:
        """Cancels every build; returns the ids of those that were running or waiting."""
        self._stopping = True
        ids = [j.deployment_id for j in self._waiting] + list(self._running)
        self._waiting.clear()
        tasks = [task for _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return ids

    def _call(self, fn: Callable, *args: object) -> None:
        if self._loop is None:
            raise RuntimeError("the build queue is not started")
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _submit(self, job: BuildJob) -> None:
        if self._stopping or self.is_queued(job.deployment_id):
            return
        self._waiting.append(job)
        self._dispatch()

    def _cancel(self, deployment_id: str) -> None:
        self._waiting = [j for j in self._waiting if j.deployment_id != deployment_id]
        running = self._running.get(deployment_id)
        if running:
            running[1].cancel()

    def _dispatch(self) -> None:
        for job in list(self._waiting):
            if len(self._running) >= self.max_parallel:
                return
            mine = sum(1 for j, _ in self._running.values() if j.account_id == job.account_id)
            if mine >= job.concurrent_builds:
                continue
            self._waiting.remove(job)
            task = asyncio.create_task(self._guarded(job), name=f"runix-build-{job.deployment_id}")
            self._running[job.deployment_id] = (job, task)

    async def _guarded(self, job: BuildJob) -> None:
        try:
            await self._run(job.deployment_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("build job failed unexpectedly", deployment_id=job.deployment_id)
        finally:
            self._running.pop(job.deployment_id, None)
            if not self._stopping:
                with contextlib.suppress(RuntimeError):
                    self._dispatch()
