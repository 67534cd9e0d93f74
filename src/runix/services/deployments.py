"""Deployments: create one from an uploaded source, list, read, cancel, delete. Promote lives in the deployer (it
waits for the app to be healthy); every status change goes through `runix.statuses.transition`.

The plan's deploy limit counts a deployment once its upload is accepted: a rejected archive costs no slot. When the
account is already at its limit the upload is refused before it is stored.
"""

from __future__ import annotations

from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from runix.context import Runix
from runix.db.models import Account, Deployment, Project, utcnow
from runix.errors import Conflict, NotFound, ValidationFailed
from runix.ids import new_id
from runix.names import host_label
from runix.pipeline import source
from runix.pipeline.events import EventStore, LocalHub
from runix.plans import get_plan
from runix.schemas import DeploymentPublic
from runix.services import billing, projects
from runix.services import env as env_service
from runix.services.pagination import Page, page
from runix.statuses import CANCELABLE, STATUSES, transition

TARGETS = ("production", "preview")


def get(s: Session, account: Account, deployment_id: str) -> Deployment:
    """A deployment of this account; another account's is not found."""
    deployment = s.get(Deployment, deployment_id) if deployment_id.startswith("dpl_") else None
    if deployment is None or deployment.account_id != account.id:
        raise NotFound(f"Deployment '{deployment_id}' not found")
    return deployment


def _choice(field: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    normalized = value.upper() if field == "status" else value.lower()
    if normalized not in allowed:
        raise ValidationFailed(f"{field} must be one of {', '.join(allowed)}", details=[{"field": field}])
    return normalized


def create(ctx: Runix, s: Session, account: Account, project_ref: str, target: str | None,
           upload: BinaryIO) -> Deployment:
    """Validates and stores the upload, snapshots the target's env vars, and queues the build."""
    project = projects.get(s, account, project_ref)
    target = _choice("target", target, TARGETS) or "production"
    plan = get_plan(account.plan)
    if ctx.limiter.peek("deploys", account.id, plan.deploys_per_hour, "hour").remaining <= 0:
        billing.hit_deploy_limit(ctx, account)  # refused before storing anything: raises 429 with Retry-After
    billing.check_disk_room(ctx, s, account)
    stored = source.store_upload(ctx.layout, upload, source.SourceLimits.from_settings(ctx.settings))
    billing.check_disk_room(ctx, s, account, stored.size_bytes)  # an unused archive goes with the next sweep of sources
    billing.hit_deploy_limit(ctx, account)
    env = env_service.values_for_target(ctx, s, project.id, target)
    deployment = Deployment(id=new_id("dpl"), project_id=project.id, account_id=account.id, target=target,
                            status="QUEUED", source_sha256=stored.sha256, source_bytes=stored.size_bytes,
                            env_encrypted=ctx.vault.seal_env(env), meta={})
    s.add(deployment)
    s.commit()
    if ctx.deployer is not None:
        ctx.deployer.enqueue(deployment.id, account.id, plan.concurrent_builds)
    return deployment


def event_store(ctx: Runix) -> EventStore:
    """Where deployment events are read: the deployer's store, or without a pipeline on this server a store reading
    only the database."""
    return ctx.deployer.events if ctx.deployer is not None else EventStore(ctx.db, LocalHub())


def list_page(s: Session, account: Account, project_ref: str | None, status: str | None, target: str | None,
              limit: int | None, cursor: str | None) -> Page[Deployment]:
    stmt = select(Deployment).where(Deployment.account_id == account.id)
    if project_ref:
        stmt = stmt.where(Deployment.project_id == projects.get(s, account, project_ref).id)
    if status := _choice("status", status, STATUSES):
        stmt = stmt.where(Deployment.status == status)
    if target := _choice("target", target, TARGETS):
        stmt = stmt.where(Deployment.target == target)
    return page(s, stmt, Deployment.id, limit, cursor)


def cancel(ctx: Runix, s: Session, account: Account, deployment_id: str) -> Deployment:
    deployment = get(s, account, deployment_id)
    if not transition(s, deployment.id, CANCELABLE, "CANCELED", finished_at=utcnow(),
                      error="Canceled before it was ready"):
        s.refresh(deployment)
        raise Conflict(f"Only a queued or building deployment can be canceled; this one is {deployment.status}")
    if ctx.deployer is not None:
        ctx.deployer.cancel(deployment.id)
    s.refresh(deployment)
    return deployment


def delete(ctx: Runix, s: Session, account: Account, deployment_id: str) -> Deployment:
    """Stops the deployment and removes it with its release and events. Production cannot be deleted."""
    deployment = get(s, account, deployment_id)
    project = s.get(Project, deployment.project_id)
    if project is not None and project.production_deployment_id == deployment.id:
        raise Conflict("This is the project's production deployment: promote another one before deleting it")
    transition(s, deployment.id, CANCELABLE, "CANCELED", finished_at=utcnow(), error="Deleted")
    if ctx.deployer is not None:
        ctx.deployer.forget(deployment.id)
    s.refresh(deployment)
    s.expunge(deployment)
    s.execute(Deployment.__table__.delete().where(Deployment.id == deployment.id))
    s.commit()
    ctx.routes_changed()
    return deployment


def public(ctx: Runix, s: Session, deployment: Deployment, project: Project | None = None) -> DeploymentPublic:
    project = project or s.get(Project, deployment.project_id)
    assert project is not None
    return DeploymentPublic(
        id=deployment.id, project_id=deployment.project_id, project=project.name,
        url=ctx.app_url(host_label(project.slug, deployment.id)), status=deployment.status,  # type: ignore[arg-type]
        target=deployment.target, error=deployment.error, created_at=deployment.created_at,  # type: ignore[arg-type]
        build_started_at=deployment.build_started_at, build_finished_at=deployment.build_finished_at,
        ready_at=deployment.ready_at, finished_at=deployment.finished_at, source_bytes=deployment.source_bytes,
        build_kind=deployment.build_kind, is_production=project.production_deployment_id == deployment.id,
    )


def public_list(ctx: Runix, s: Session, items: list[Deployment]) -> list[DeploymentPublic]:
    ids = {d.project_id for d in items}
    by_id = {p.id: p for p in s.scalars(select(Project).where(Project.id.in_(ids)))} if ids else {}
    return [public(ctx, s, d, by_id.get(d.project_id)) for d in items]


def latest_of(ctx: Runix, s: Session, account: Account, project_ids: list[str]) -> dict[str, DeploymentPublic]:
    """Each project's newest deployment (ids sort by creation time), by project id, in two reads however many."""
    if not project_ids:
        return {}
    newest = (select(func.max(Deployment.id))
              .where(Deployment.account_id == account.id, Deployment.project_id.in_(project_ids))
              .group_by(Deployment.project_id))
    rows = list(s.scalars(select(Deployment).where(Deployment.id.in_(newest))))
    return {d.project_id: d for d in public_list(ctx, s, rows)}

