"""`runix server`: the whole platform in one process (API + dashboard, build worker, runtime, router)."""

from __future__ import annotations

import socket
import sys

import uvicorn

from runix.app import create_app
from runix.pipeline.cells import IsolationUnavailable
from runix.settings import Settings


def port_taken(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on, or None when it can."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def serve(settings: Settings) -> None:
    # Say which port is busy in one line, before anything starts, rather than as a traceback from the lifespan.
    for what, flag, port in (("API", "--port", settings.port), ("router", "--router-port", settings.router_port)):
        reason = port_taken(settings.host, port)
        if reason:
            sys.exit(f"runix server: cannot listen for the {what} on {settings.host}:{port} ({reason}). "
                     f"Choose another port with {flag}.")
    try:
        app = create_app(settings)
    except IsolationUnavailable as exc:
        sys.exit(f"runix server: cannot isolate tenants' builds and apps: {exc}.\n"
                 "Runix runs uploaded code only in a sandbox. To run without one on a development machine, for "
                 "trusted code only, set RUNIX_SANDBOX=false.")
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, timeout_graceful_shutdown=10, proxy_headers=True)
    uvicorn.Server(config).run()
