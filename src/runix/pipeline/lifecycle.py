"""Starts and stops the pipeline's long-running parts (build worker, runtime supervisor, router) with the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from runix.context import Runix


@asynccontextmanager
async def running(ctx: Runix) -> AsyncIterator[None]:
    yield
