"""/projects"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from runix.api.deps import Ctx, CurrentAccount, Db
from runix.api.errors import AUTHED, responses
from runix.api.routes.pages import Cursor, Limit, link_next
from runix.schemas import ProjectCreate, ProjectPublic, ProjectUpdate
from runix.services import projects

router = APIRouter(prefix="/projects", tags=["projects"], responses=AUTHED)


@router.post("", status_code=201, response_model=ProjectPublic, responses=responses(403, 409))
def create_project(body: ProjectCreate, account: CurrentAccount, ctx: Ctx, db: Db) -> ProjectPublic:
    """Creates a project. The name is a DNS label: it becomes the host `<name>.<apps domain>`."""
    return projects.public(ctx, db, projects.create(ctx, db, account, body))


@router.get("", response_model=list[ProjectPublic])
async def list_projects(request: Request, response: Response, account: CurrentAccount, ctx: Ctx,
                        limit: Limit = 20, cursor: Cursor = None) -> list[ProjectPublic]:
    """Your projects, newest first."""
    page = projects.list_public(ctx, account, limit, cursor)
    link_next(request, response, page.next_cursor)
    return page.items


@router.get("/{project}", response_model=ProjectPublic)
async def get_project(project: str, account: CurrentAccount, request: Request) -> ProjectPublic:
    """One project, by id or name, with its production deployment and URLs."""
    # The API's most frequent call: async with one raw read, and the context from the request rather than one
    # more dependency to solve.
    return projects.read_public(request.app.state.runix, account, project)


@router.patch("/{project}", response_model=ProjectPublic, responses=responses(409))
def update_project(project: str, body: ProjectUpdate, account: CurrentAccount, ctx: Ctx, db: Db) -> ProjectPublic:
    """Changes the name or build settings; they apply to the next deployment."""
    return projects.public(ctx, db, projects.update(ctx, db, account, project, body))


@router.delete("/{project}", response_model=ProjectPublic)
def delete_project(project: str, account: CurrentAccount, ctx: Ctx, db: Db) -> ProjectPublic:
    """Deletes the project: stops its deployments and frees its domains."""
    deleted = projects.delete(ctx, db, account, project)
    return ProjectPublic(id=deleted.id, name=deleted.name, urls=[], production_deployment_id=None,
                         created_at=deleted.created_at, updated_at=deleted.updated_at,
                         **{f: getattr(deleted, f) for f in projects.SETTINGS_FIELDS})
