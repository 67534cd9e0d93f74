"""The ASGI app, put together from the REST API (runix.api, at the root paths) and the dashboard (runix.dashboard,
under /dashboard, with the browser's GitHub sign-in under /auth/github). The API itself never imports the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse
from prometheus_client import CollectorRegistry

from runix import __version__
from runix.api import errors
from runix.api.middleware import BodyLimit, Metrics, NulInPath, RateLimitHeaders, Unexpected
from runix.api.routes import auth, billing, device, domains, env, platform, projects, user
from runix.context import Runix
from runix.logging import configure_logging
from runix.settings import Settings, get_settings

API_ROUTERS = [auth.router, user.router, projects.router, env.router, domains.router, billing.router,
               billing.webhooks, platform.router, device.router]


def create_app(settings: Settings | None = None, ctx: Runix | None = None, *, run_pipeline: bool = True) -> FastAPI:
    settings = settings or (ctx.settings if ctx else get_settings())
    configure_logging(settings.log_level)
    ctx = ctx or Runix.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from runix.pipeline import lifecycle

        if run_pipeline:
            async with lifecycle.running(ctx):
                yield
        else:
            yield
        ctx.close()

    app = FastAPI(
        title="Runix API",
        version=__version__,
        description="Deploy apps, manage projects, env vars and domains. Every dashboard and CLI action is here.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runix = ctx
    app.state.metrics_registry = CollectorRegistry()
    errors.install(app)
    for router in API_ROUTERS:
        app.include_router(router)
    _include_deployments(app)
    _include_dashboard(app)

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> Any:
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/dashboard", status_code=303)
        return {"name": "Runix API", "version": __version__, "docs": "/docs", "openapi": "/openapi.json"}

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(RateLimitHeaders)
    upload_limit = settings.max_upload_bytes + 1024 * 1024  # the archive and the form's other fields
    from runix.dashboard.projects import upload_too_large

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,  # the dashboard's deploy form uploads too
                       upload_paths={"/deployments": upload_limit, "/dashboard/deployments": upload_limit},
                       answers={"/dashboard/deployments": upload_too_large(settings.max_upload_bytes)})
    app.add_middleware(NulInPath)
    app.add_middleware(Unexpected)
    app.add_middleware(Metrics, registry=app.state.metrics_registry)
    return app


def _include_deployments(app: FastAPI) -> None:
    from runix.api.routes import deployments

    app.include_router(deployments.router)


def _include_dashboard(app: FastAPI) -> None:
    from runix import dashboard
    from runix.dashboard import github

    app.include_router(github.router)
    dashboard.mount(app)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The schema, with validation failures documented as the 400s they are (never 422) and every error listed."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    errors.document_errors(schema)
    app.openapi_schema = schema
    return schema
