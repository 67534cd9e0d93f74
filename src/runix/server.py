"""`runix server`: the whole platform in one process (API + dashboard, build worker, runtime, router)."""

from __future__ import annotations

import uvicorn

from runix.api.app import create_app
from runix.settings import Settings


def serve(settings: Settings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, timeout_graceful_shutdown=10, proxy_headers=True)
    uvicorn.Server(config).run()
