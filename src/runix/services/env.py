"""Environment variables of a project: encrypted at rest, sensitive ones write-only."""

from __future__ import annotations

import re

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from runix.context import Runix
from runix.db.models import Account, EnvVar, Project
from runix.errors import Conflict, Forbidden, NotFound, ValidationFailed
from runix.ids import new_id
from runix.plans import get_plan
from runix.schemas import EnvVarCreate, EnvVarPublic, EnvVarUpdate
from runix.services import projects
from runix.services.pagination import Page, page

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_KEYS = frozenset({"PORT"})
TARGET_ORDER = ("production", "preview", "development")


def _check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValidationFailed(f"'{key}' is not a valid variable name: use letters, digits and _, not starting "
                               "with a digit", details=[{"field": "key", "value": key}])
    if key in RESERVED_KEYS or key.upper().startswith("RUNIX_"):
        raise ValidationFailed(f"'{key}' is set by Runix and cannot be overridden", details=[{"field": "key"}])
    return key


def _targets(targets: list[str]) -> list[str]:
    return [t for t in TARGET_ORDER if t in set(targets)]


def _check_no_overlap(s: Session, project: Project, key: str, targets: list[str], except_id: str | None = None):
    for other in s.scalars(select(EnvVar).where(EnvVar.project_id == project.id, EnvVar.key == key)):
        if other.id != except_id and set(other.targets) & set(targets):
            shared = ", ".join(_targets(list(set(other.targets) & set(targets))))
            raise Conflict(f"{key} is already set for {shared}")


def list_for(s: Session, account: Account, project_ref: str) -> tuple[Project, list[EnvVar]]:
    """Every variable of the project, by key (the dashboard shows them all on one page)."""
    project = projects.get(s, account, project_ref)
    return project, _vars_of(s, project)


def list_page(s: Session, account: Account, project_ref: str, limit: int | None, cursor: str | None) -> Page[EnvVar]:
    """One page of the project's variables, in the same order as `list_for` (GET /projects/{project}/env)."""
    return page(s, _of_project(projects.get(s, account, project_ref)), EnvVar.id, limit, cursor, order_by=EnvVar.key)


def _of_project(project: Project) -> Select:
    return select(EnvVar).where(EnvVar.project_id == project.id)


def _vars_of(s: Session, project: Project) -> list[EnvVar]:
    return list(s.scalars(_of_project(project).order_by(EnvVar.key, EnvVar.id)))


def create(ctx: Runix, s: Session, account: Account, project_ref: str, body: EnvVarCreate) -> EnvVar:
    project = projects.get(s, account, project_ref)
    projects.lock(s, project)  # the limit and overlap checks and the write as one step
    existing = _vars_of(s, project)
    limit = get_plan(account.plan).env_vars_per_project
    if limit is not None and len(existing) >= limit:
        raise Forbidden(f"Your {account.plan} plan allows {limit} env vars per project")
    key = _check_key(body.key)
    targets = _targets(body.targets)
    _check_no_overlap(s, project, key, targets)
    var = EnvVar(id=new_id("env"), project_id=project.id, key=key, value_encrypted=ctx.vault.encrypt(body.value),
                 type=body.type, targets=targets)
    s.add(var)
    s.commit()
    return var


def get(s: Session, account: Account, project_ref: str, env_id: str) -> tuple[Project, EnvVar]:
    project = projects.get(s, account, project_ref)
    var = s.get(EnvVar, env_id)
    if var is None or var.project_id != project.id:
        raise NotFound(f"Env var {env_id} not found")
    return project, var


def update(ctx: Runix, s: Session, account: Account, project_ref: str, env_id: str, body: EnvVarUpdate) -> EnvVar:
    project, var = get(s, account, project_ref, env_id)
    projects.lock(s, project)  # the overlap check and the write as one step
    s.refresh(var)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if changes.get("type") == "plain" and var.type == "sensitive":
        raise Conflict("A sensitive variable cannot be made plain: delete it and add it again")
    key = _check_key(changes.get("key", var.key))
    targets = _targets(changes.get("targets", var.targets))
    _check_no_overlap(s, project, key, targets, except_id=var.id)
    var.key, var.targets = key, targets
    if "type" in changes:
        var.type = changes["type"]
    if "value" in changes:
        var.value_encrypted = ctx.vault.encrypt(changes["value"])
    s.commit()
    return var


def delete(s: Session, account: Account, project_ref: str, env_id: str) -> EnvVar:
    _, var = get(s, account, project_ref, env_id)
    s.delete(var)
    s.commit()
    return var


def values_for_target(ctx: Runix, s: Session, project_id: str, target: str) -> dict[str, str]:
    """The plain-text variables a deployment to `target` gets (the pipeline snapshots these into the release)."""
    rows = s.scalars(select(EnvVar).where(EnvVar.project_id == project_id))
    return {v.key: ctx.vault.decrypt(v.value_encrypted) for v in rows if target in v.targets}


def public(ctx: Runix, var: EnvVar) -> EnvVarPublic:
    return EnvVarPublic(
        id=var.id, key=var.key, targets=var.targets, type=var.type,  # type: ignore[arg-type]
        value=None if var.type == "sensitive" else ctx.vault.decrypt(var.value_encrypted),
        created_at=var.created_at, updated_at=var.updated_at,
    )
