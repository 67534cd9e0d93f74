"""Custom domains: attach, prove ownership with a DNS TXT record, detach."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runix import names
from runix.context import Runix
from runix.db.models import Account, Domain, Project, utcnow
from runix.dnscheck import txt_values
from runix.errors import BadRequest, Conflict, Forbidden, NotFound
from runix.ids import new_id
from runix.plans import get_plan
from runix.schemas import DomainPublic, DomainVerification
from runix.services import projects

CHALLENGE_LABEL = "_runix-challenge"


def verification_record(domain: Domain) -> DomainVerification:
    """The TXT record the owner creates to prove the domain is theirs."""
    return DomainVerification(type="TXT", name=f"{CHALLENGE_LABEL}.{domain.name}",
                              value=f"runix-verify={domain.verification_token}")


def add(ctx: Runix, s: Session, account: Account, project_ref: str, raw_name: str) -> Domain:
    project = projects.get(s, account, project_ref)
    name = names.domain_name(raw_name)
    if name == ctx.settings.apps_domain or name.endswith("." + ctx.settings.apps_domain):
        raise Conflict(f"{name} is under the platform's apps domain ({ctx.settings.apps_domain}): Runix serves it "
                       "already, so it cannot be added as a custom domain")
    if s.scalar(select(Domain.id).where(Domain.name == name)):
        raise Conflict(f"The domain {name} is already in use")
    limit = get_plan(account.plan).domains_per_project
    projects.lock(s, project)  # the count and the insert as one step
    used = s.scalar(select(func.count()).select_from(Domain).where(Domain.project_id == project.id)) or 0
    if limit is not None and used >= limit:
        raise Forbidden(f"Your {account.plan} plan allows {limit} domains per project")
    domain = Domain(id=new_id("dom"), project_id=project.id, name=name, verified=False,
                    verification_token=secrets.token_hex(16))
    s.add(domain)
    try:
        s.commit()
    except IntegrityError as exc:
        s.rollback()
        raise Conflict(f"The domain {name} is already in use") from exc
    return domain


def list_for(s: Session, account: Account, project_ref: str) -> list[Domain]:
    project = projects.get(s, account, project_ref)
    return list(s.scalars(select(Domain).where(Domain.project_id == project.id).order_by(Domain.name)))


def get(s: Session, account: Account, project_ref: str, name: str) -> tuple[Project, Domain]:
    project = projects.get(s, account, project_ref)
    domain = s.scalars(select(Domain).where(Domain.project_id == project.id,
                                            Domain.name == name.strip().lower().rstrip("."))).first()
    if domain is None:
        raise NotFound(f"Domain {name} not found on project {project.name}")
    return project, domain


def verify(ctx: Runix, s: Session, account: Account, project_ref: str, name: str) -> Domain:
    """Looks up the TXT record; once it matches, the domain serves the project's production deployment."""
    _, domain = get(s, account, project_ref, name)
    if domain.verified:
        return domain
    record = verification_record(domain)
    found = txt_values(record.name, ctx.settings.dns_resolver)
    if record.value not in found:
        seen = f" Found: {', '.join(found)}." if found else " No TXT record was found there yet."
        raise BadRequest(f"Domain not verified: create a TXT record {record.name} with the value {record.value}."
                         f"{seen} DNS changes can take a few minutes to appear.",
                         details={"verification": record.model_dump(), "found": found})
    domain.verified = True
    domain.verified_at = utcnow()
    s.commit()
    ctx.routes_changed()
    return domain


def remove(ctx: Runix, s: Session, account: Account, project_ref: str, name: str) -> Domain:
    _, domain = get(s, account, project_ref, name)
    s.delete(domain)
    s.commit()
    ctx.routes_changed()
    return domain


def public(domain: Domain) -> DomainPublic:
    return DomainPublic(id=domain.id, name=domain.name, project_id=domain.project_id, verified=domain.verified,
                        verification=verification_record(domain), created_at=domain.created_at,
                        verified_at=domain.verified_at)
