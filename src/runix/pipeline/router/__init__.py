"""The router: who serves app traffic. It maps the Host of each request to a deployment and forwards the request to
wherever that deployment answers now.

`EmbeddedRouter` (the default) is an asyncio reverse proxy inside `runix server`; `CaddyRouter` (caddy.py) puts Caddy
at the edge for automatic TLS, with an embedded router behind it for what Caddy cannot decide alone. The deployer
drives any router through the `Router` protocol: it swaps the whole route table at once on promote, points a
deployment at its upstream (or at None while it sleeps; the next request then calls the waker and is held until the
app answers), and waits for `drained()` before stopping an old deployment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runix.pipeline.router.embedded import EmbeddedRouter


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a deployment answers HTTP right now."""

    host: str
    port: int


# Called with a deployment id when a request arrives for a deployment that has no upstream; returns where the woken
# app answers, or None if it cannot run.
Waker = Callable[[str], Awaitable[Upstream | None]]


class Router(Protocol):
    async def start(self) -> None:
        """Bind the (host, port) given to the constructor and start serving."""

    async def stop(self) -> None: ...

    def set_routes(self, routes: Mapping[str, str]) -> None:
        """Host name (lower case, no port) -> deployment id. The whole table is swapped atomically."""

    def set_upstream(self, deployment_id: str, upstream: Upstream | None) -> None:
        """Where the deployment answers now; None = asleep or stopped (the next request calls the waker)."""

    def inflight(self, deployment_id: str) -> int: ...

    async def drained(self, deployment_id: str, timeout: float) -> bool:
        """Wait until no request to the deployment is in flight; False if that took longer than `timeout`."""

    def last_request_at(self, deployment_id: str) -> float | None:
        """time.monotonic() of the deployment's latest request, for putting idle apps to sleep."""


def make_router(
    kind: str,
    host: str,
    port: int,
    *,
    waker: Waker | None = None,
    wake_timeout: float = 60.0,
    state_dir: Path | None = None,
    https_port: int | None = None,
    trusted_proxies: Sequence[str] = (),
) -> Router:
    """The router the `router` setting names: "embedded" (default) or "caddy" (its files go to `state_dir`; with
    `https_port` it also serves HTTPS with certificates it obtains itself)."""
    if kind == "embedded":
        from runix.pipeline.router.embedded import EmbeddedRouter

        return EmbeddedRouter(host, port, waker=waker, wake_timeout=wake_timeout, trusted_proxies=trusted_proxies)
    if kind == "caddy":
        from runix.pipeline.router.caddy import CaddyRouter

        return CaddyRouter(
            host, port, waker=waker, wake_timeout=wake_timeout, state_dir=state_dir, https_port=https_port
        )
    raise ValueError(f"unknown router {kind!r}: expected embedded or caddy")


def __getattr__(name: str) -> object:
    # Imported on first use, so `python -m runix.pipeline.router.embedded` does not load that module twice.
    if name == "EmbeddedRouter":
        from runix.pipeline.router.embedded import EmbeddedRouter

        return EmbeddedRouter
    raise AttributeError(name)


__all__ = ["EmbeddedRouter", "Router", "Upstream", "Waker", "make_router"]
