"""/deployments: upload a source to deploy it, follow its build, promote (and roll back), cancel, delete."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, get_args

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from runix.api.deps import Ctx, CurrentAccount, Db
from runix.api.errors import AUTHED, responses
from runix.api.routes.pages import Cursor, Limit, link_next
from runix.errors import Conflict
from runix.pipeline.events import Event, EventStore
from runix.schemas import DeploymentEventPublic, DeploymentPublic, DeploymentStatus, DeployTarget, any_case_choice
from runix.services import deployments

router = APIRouter(prefix="/deployments", tags=["deployments"], responses=AUTHED)


@router.post("", status_code=201, response_model=DeploymentPublic)
def create_deployment(
    account: CurrentAccount, ctx: Ctx, db: Db,
    project: Annotated[str, Form(min_length=1, max_length=100, description="Project name or id")],
    source: Annotated[UploadFile, File(description="The app folder as a .tar.gz")],
    target: Annotated[DeployTarget, Form(description="production (default) or preview")] = "production",
) -> DeploymentPublic:
    """Uploads a source archive and queues its build. The archive is checked first (a 400 names the broken rule).
    Counts against the plan's deploy limit once the upload is accepted (Hobby: 5 per hour; 429 with Retry-After)."""
    deployment = deployments.create(ctx, db, account, project, target, source.file)
    return deployments.public(ctx, db, deployment)


@router.get("", response_model=list[DeploymentPublic])
def list_deployments(
    request: Request, response: Response, account: CurrentAccount, ctx: Ctx, db: Db,
    project: Annotated[str | None, Query(max_length=100, description="Project name or id")] = None,
    status: Annotated[str | None, Query(pattern=any_case_choice(get_args(DeploymentStatus)),
                                        description="QUEUED, BUILDING, ... (any case)")] = None,
    target: Annotated[str | None, Query(pattern=any_case_choice(get_args(DeployTarget)),
                                        description="production or preview")] = None,
    limit: Limit = 20, cursor: Cursor = None,
) -> list[DeploymentPublic]:
    """Your deployments, newest first."""
    page = deployments.list_page(db, account, project, status, target, limit, cursor)
    link_next(request, response, page.next_cursor)
    return deployments.public_list(ctx, db, page.items)


@router.get("/{deployment_id}", response_model=DeploymentPublic)
def get_deployment(deployment_id: str, account: CurrentAccount, ctx: Ctx, db: Db) -> DeploymentPublic:
    """One deployment: its status, why it failed (`error`), its timings and URL."""
    return deployments.public(ctx, db, deployments.get(db, account, deployment_id))


@router.get("/{deployment_id}/events", response_model=list[DeploymentEventPublic],
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "A JSON list, or with follow=true a stream of server-sent events"}})
async def deployment_events(
    deployment_id: str, account: CurrentAccount, ctx: Ctx, db: Db,
    follow: Annotated[bool, Query(description="Stream as server-sent events until the deployment settles")] = False,
    since: Annotated[int | None, Query(ge=0, description="Only events after this event id")] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="Most events in the JSON list")] = 1000,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> list[DeploymentEventPublic] | Response:
    """Build, runtime and system lines, oldest first. With `follow=true`: `text/event-stream`, one `event: log`
    per line (id = event id; reconnect with Last-Event-ID or `since`), then one `event: end` carrying
    `{"status": ...}` once the deployment is READY, ERROR or CANCELED."""
    deployment = await run_in_threadpool(deployments.get, db, account, deployment_id)
    if last_event_id and last_event_id.isdecimal():  # isdigit() also passes "²", which int() refuses
        since = max(since or 0, int(last_event_id))
    store = deployments.event_store(ctx)
    if not follow:
        events = await run_in_threadpool(store.list, deployment.id, since, limit)
        return [DeploymentEventPublic(**e.public()) for e in events]  # type: ignore[return-value]
    return StreamingResponse(_sse(store, deployment.id, since), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(store: EventStore, deployment_id: str, since: int | None) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    async for item in store.follow(deployment_id, since):
        if item is None:
            yield ": keep-alive\n\n"
        elif isinstance(item, Event):
            yield f"id: {item.id}\nevent: log\ndata: {json.dumps(item.public())}\n\n"
        else:
            yield f"event: end\ndata: {json.dumps({'status': item})}\n\n"


@router.post("/{deployment_id}/cancel", response_model=DeploymentPublic, responses=responses(409))
def cancel_deployment(deployment_id: str, account: CurrentAccount, ctx: Ctx, db: Db) -> DeploymentPublic:
    """Stops a queued or building deployment (409 otherwise); it ends CANCELED."""
    return deployments.public(ctx, db, deployments.cancel(ctx, db, account, deployment_id))


@router.post("/{deployment_id}/promote", response_model=DeploymentPublic, responses=responses(409))
async def promote_deployment(deployment_id: str, account: CurrentAccount, ctx: Ctx, db: Db) -> DeploymentPublic:
    """Makes a READY deployment the production one, without rebuilding: this is also how you roll back. The
    production URLs switch at once, after the deployment answers its health check (woken first if asleep)."""
    deployment = await run_in_threadpool(deployments.get, db, account, deployment_id)
    if ctx.deployer is None:
        raise Conflict("The deploy pipeline is not running on this server")
    await ctx.deployer.promote(deployment.id)
    db.expire_all()
    return await run_in_threadpool(lambda: deployments.public(ctx, db, deployments.get(db, account, deployment_id)))


@router.delete("/{deployment_id}", response_model=DeploymentPublic, responses=responses(409))
def delete_deployment(deployment_id: str, account: CurrentAccount, ctx: Ctx, db: Db) -> DeploymentPublic:
    """Stops the deployment and deletes it with its release and logs. The current production one: 409."""
    view = deployments.public(ctx, db, deployments.get(db, account, deployment_id))
    deployments.delete(ctx, db, account, deployment_id)
    return view
