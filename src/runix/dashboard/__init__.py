"""The web dashboard under /dashboard: server-rendered pages (Jinja2, htmx for live parts) over the same services as
the API. Every form it offers is registered with the API endpoint doing the same (`web.ACTIONS`)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from runix.dashboard import account, projects  # noqa: F401 - importing registers their routes
from runix.dashboard.web import ACTIONS, HERE, router

__all__ = ["ACTIONS", "mount"]


def mount(app: FastAPI) -> None:
    app.mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    app.include_router(router)

    @app.get("/dashboard/", include_in_schema=False)
    async def trailing_slash() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=303)
