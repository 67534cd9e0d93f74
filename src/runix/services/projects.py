"""Projects: create, list, read, change settings, delete."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runix import names
from runix.context import Runix
from runix.db.models import Account, Domain, Project
from runix.errors import Conflict, Forbidden, NotFound
from runix.ids import new_id
from runix.plans import get_plan
from runix.schemas import ProjectCreate, ProjectPublic, ProjectUpdate
from runix.services.pagination import Page, checked_limit, page

SETTINGS_FIELDS = ("framework", "install_command", "build_command", "start_command", "root_directory")


# The statements every project read runs, built once (building one costs more than running it on SQLite).
_BY_ID = select(Project).where(Project.account_id == bindparam("account_id"), Project.id == bindparam("ref"))
_BY_NAME = select(Project).where(Project.account_id == bindparam("account_id"), Project.name == bindparam("ref"))
_VERIFIED_DOMAINS = (select(Domain.name).where(Domain.project_id == bindparam("project_id"), Domain.verified.is_(True))
                     .order_by(Domain.name))


def _with_verified_domains(column) -> Select:  # noqa: ANN001
    """One row per verified domain (or one with domain NULL): the project and its URLs in a single query."""
    return (select(*Project.__table__.c, Domain.name.label("domain"))
            .outerjoin(Domain, (Domain.project_id == Project.id) & Domain.verified.is_(True))
            .where(Project.account_id == bindparam("account_id"), column == bindparam("ref"))
            .order_by(Domain.name))


_PUBLIC_BY_ID = _with_verified_domains(Project.id)
_PUBLIC_BY_NAME = _with_verified_domains(Project.name)


def _page_with_verified_domains(after_cursor: bool) -> Select:
    """A page of an account's projects, newest first (a range scan of ix_projects_account_id_id), each joined to
    its verified domains: one query for the whole page however many projects the account has."""
    page = select(Project).where(Project.account_id == bindparam("account_id"))
    if after_cursor:
        page = page.where(Project.id < bindparam("cursor"))
    page = page.order_by(Project.id.desc()).limit(bindparam("limit")).subquery()
    return (select(*page.c, Domain.name.label("domain"))
            .outerjoin(Domain, (Domain.project_id == page.c.id) & Domain.verified.is_(True))
            .order_by(page.c.id.desc(), Domain.name))


_FIRST_PAGE = _page_with_verified_domains(after_cursor=False)
_NEXT_PAGE = _page_with_verified_domains(after_cursor=True)


def get(s: Session, account: Account, ref: str) -> Project:
    """A project of this account, by id (`prj_…`) or name. Another account's project is simply not found."""
    stmt = _BY_ID if ref.startswith("prj_") else _BY_NAME
    project = s.scalars(stmt, {"account_id": account.id, "ref": ref}).first() if _findable(ref) else None
    if project is None:
        raise NotFound(f"Project '{ref}' not found")
    return project


def _findable(ref: str) -> bool:
    """No project is named with a NUL (and PostgreSQL refuses one in a query): such a reference finds nothing."""
    return "\x00" not in ref


def count(s: Session, account: Account) -> int:
    return s.scalar(select(func.count()).select_from(Project).where(Project.account_id == account.id)) or 0


def _free_slug(s: Session, name: str) -> str:
    """The global host label: the name itself if nobody uses it, else the name with a short suffix."""
    candidate = name
    while s.scalar(select(Project.id).where(Project.slug == candidate)) is not None:
        candidate = f"{name[:40]}-{secrets.token_hex(3)}"
    return candidate


def lock(s: Session, project: Project) -> None:
    """Holds the project's row until commit, so a check over its rows (a plan limit, an overlap) and the write that
    follows are one step for concurrent writers. A no-op UPDATE rather than SELECT ... FOR UPDATE because it locks
    on both databases: PostgreSQL locks the row (the next statement, under READ COMMITTED, sees what the previous
    holder committed) and SQLite takes its single write lock (the transaction begins with this write, so no stale
    snapshot)."""
    s.execute(sql_update(Project).where(Project.id == project.id).values(updated_at=Project.updated_at))


def create(ctx: Runix, s: Session, account: Account, body: ProjectCreate) -> Project:
    name = names.project_name(body.name)
    limit = get_plan(account.plan).projects
    settings = {f: _clean(getattr(body, f)) for f in SETTINGS_FIELDS}
    for _ in range(3):
        # The account's row lock (a no-op write) until commit: concurrent creates cannot all pass the plan's limit.
        s.execute(sql_update(Account).where(Account.id == account.id).values(plan=Account.plan))
        if limit is not None and count(s, account) >= limit:
            raise Forbidden(f"Your {account.plan} plan allows {limit} projects. Delete one or change plan "
                            "(GET /billing).")
        if s.scalar(select(Project.id).where(Project.account_id == account.id, Project.name == name)):
            raise Conflict(f"You already have a project named '{name}'")
        project = Project(id=new_id("prj"), account_id=account.id, name=name, slug=_free_slug(s, name), **settings)
        s.add(project)
        try:
            s.commit()
            return project
        except IntegrityError:
            # A concurrent create took this name in the account (the next check says 409) or, in another account,
            # the same host label (the next try picks another).
            s.rollback()
    raise Conflict(f"Could not create the project '{name}' while others were being created; try again")


def _clean(value: str | None) -> str | None:
    value = value.strip() if isinstance(value, str) else value
    return value or None


def list_page(s: Session, account: Account, limit: int | None, cursor: str | None) -> Page[Project]:
    return page(s, select(Project).where(Project.account_id == account.id), Project.id, limit, cursor)


def update(ctx: Runix, s: Session, account: Account, ref: str, body: ProjectUpdate) -> Project:
    project = get(s, account, ref)
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is not None:
        new_name = names.project_name(changes.pop("name"))
        if new_name != project.name:
            if s.scalar(select(Project.id).where(Project.account_id == account.id, Project.name == new_name)):
                raise Conflict(f"You already have a project named '{new_name}'")
            project.name = new_name
    changes.pop("name", None)
    for field, value in changes.items():
        setattr(project, field, _clean(value))
    try:
        s.commit()
    except IntegrityError as exc:  # a concurrent rename to the same name
        s.rollback()
        raise Conflict(f"You already have a project named '{project.name}'") from exc
    return project


def delete(ctx: Runix, s: Session, account: Account, ref: str) -> Project:
    """Deletes the project: its deployments stop, its domains are freed, its env vars are gone."""
    project = get(s, account, ref)
    if ctx.deployer is not None:
        ctx.deployer.stop_project(project.id)
    s.delete(project)
    s.commit()
    ctx.routes_changed()
    return project


def urls(ctx: Runix, s: Session, project: Project) -> list[str]:
    """Where production is served: the project's host and every verified custom domain."""
    return _urls(ctx, project.slug, s.scalars(_VERIFIED_DOMAINS, {"project_id": project.id}))


def _urls(ctx: Runix, slug: str, verified_domains: Iterable[str]) -> list[str]:
    return [ctx.app_url(slug)] + [ctx.domain_url(d) for d in verified_domains]


def public(ctx: Runix, s: Session, project: Project) -> ProjectPublic:
    return _public(ctx, project, urls(ctx, s, project))


def _public(ctx: Runix, project: Any, project_urls: list[str]) -> ProjectPublic:
    return ProjectPublic(
        id=project.id, name=project.name, urls=project_urls,
        production_deployment_id=project.production_deployment_id,
        created_at=project.created_at, updated_at=project.updated_at,
        **{f: getattr(project, f) for f in SETTINGS_FIELDS},
    )


def list_public(ctx: Runix, account: Account, limit: int | None, cursor: str | None) -> Page[ProjectPublic]:
    """`list_page` made public, in one raw read (GET /projects)."""
    limit = checked_limit(limit, cursor)
    params = {"account_id": account.id, "limit": limit + 1, "cursor": cursor}
    rows = ctx.db.raw.rows(_NEXT_PAGE if cursor else _FIRST_PAGE, params)
    projects: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for row in rows:
        projects.setdefault(row["id"], (row, []))[1].extend([row["domain"]] if row["domain"] is not None else [])
    found = list(projects.values())
    items = [_public(ctx, SimpleNamespace(**row), _urls(ctx, row["slug"], domains)) for row, domains in found[:limit]]
    return Page(items, items[-1].id if len(found) > limit else None)


def read_public(ctx: Runix, account: Account, ref: str) -> ProjectPublic:
    """`public(get(...))` in one raw read, for GET /projects/{project} (the API's most frequent call)."""
    stmt = _PUBLIC_BY_ID if ref.startswith("prj_") else _PUBLIC_BY_NAME
    rows = ctx.db.raw.rows(stmt, {"account_id": account.id, "ref": ref}) if _findable(ref) else []
    if not rows:
        raise NotFound(f"Project '{ref}' not found")
    project = SimpleNamespace(**rows[0])
    return _public(ctx, project, _urls(ctx, project.slug, (r["domain"] for r in rows if r["domain"] is not None)))
