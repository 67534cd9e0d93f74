"""/projects/{project}/env"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from runix.api.deps import Ctx, CurrentAccount, Db
from runix.api.errors import AUTHED, responses
from runix.api.routes.pages import Cursor, Limit, link_next
from runix.schemas import EnvVarCreate, EnvVarPublic, EnvVarUpdate
from runix.services import env

router = APIRouter(prefix="/projects/{project}/env", tags=["env vars"], responses=AUTHED)


@router.get("", response_model=list[EnvVarPublic])
def list_env(project: str, request: Request, response: Response, account: CurrentAccount, ctx: Ctx, db: Db,
             limit: Limit = 20, cursor: Cursor = None) -> list[EnvVarPublic]:
    """The project's env vars by key (A to Z); a sensitive one has no `value` (it is write-only)."""
    page = env.list_page(db, account, project, limit, cursor)
    link_next(request, response, page.next_cursor)
    return [env.public(ctx, v) for v in page.items]


@router.post("", status_code=201, response_model=EnvVarPublic, responses=responses(403, 409))
def add_env(project: str, body: EnvVarCreate, account: CurrentAccount, ctx: Ctx, db: Db) -> EnvVarPublic:
    """Adds a variable for some targets; it applies to the next deployment."""
    return env.public(ctx, env.create(ctx, db, account, project, body))


@router.patch("/{env_id}", response_model=EnvVarPublic, responses=responses(409))
def update_env(project: str, env_id: str, body: EnvVarUpdate, account: CurrentAccount, ctx: Ctx,
               db: Db) -> EnvVarPublic:
    return env.public(ctx, env.update(ctx, db, account, project, env_id, body))


@router.delete("/{env_id}", response_model=EnvVarPublic)
def delete_env(project: str, env_id: str, account: CurrentAccount, ctx: Ctx, db: Db) -> EnvVarPublic:
    return env.public(ctx, env.delete(db, account, project, env_id))
