"""Starts and stops the pipeline's long-running parts (build worker, runtime supervisor, router) with the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from runix.context import Runix


@asynccontextmanager
async def running(ctx: Runix) -> AsyncIterator[None]:
    """The deployer starts the router on settings.router_port, the build queue and the runtime, and recovers what
    the last run left: READY deployments serve again, queued ones build, ones caught mid-build end in ERROR."""
    from runix.pipeline.deployer import Deployer

    deployer = Deployer(ctx)
    try:
        await deployer.start()
    except BaseException:
        await deployer.stop()  # what did start (event writer, build queue, router) must not outlive the failure
        raise
    ctx.deployer = deployer
    try:
        yield
    finally:
        ctx.deployer = None
        await deployer.stop()
