"""The web dashboard under /dashboard: server-rendered pages over the same services as the API."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse


def mount(app: FastAPI) -> None:
    @app.get("/dashboard", include_in_schema=False, response_class=HTMLResponse)
    async def dashboard_home() -> str:
        return "<!doctype html><title>Runix</title><h1>Runix</h1><p>The dashboard is coming.</p>"
