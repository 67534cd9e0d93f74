"""Custom domains: claim, prove ownership with a DNS TXT record, detach.

A claim blocks nobody: any project may claim any name, and a claim left unverified lapses after
RUNIX_DOMAIN_CLAIM_TTL_HOURS (it is no longer listed or counted, and the next `add` deletes it). The first claim to
pass the DNS check is verified and served. Another claim on that name takes it over only by passing the check with
its own token, a fresh proof; the former holder's claim is then unverified again, with a new token.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, delete, func, or_, select
from sqlalchemy import update as sql_update
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
from runix.services.pagination import Page, page

CHALLENGE_LABEL = "_runix-challenge"


def verification_record(domain: Domain) -> DomainVerification:
    """The TXT record the owner creates to prove the domain is theirs."""
    return DomainVerification(type="TXT", name=f"{CHALLENGE_LABEL}.{domain.name}",
                              value=f"runix-verify={domain.verification_token}")


def live() -> ColumnElement[bool]:
    """The claims that count: verified ones, and unverified ones that have not lapsed."""
    return or_(Domain.verified.is_(True), Domain.expires_at > utcnow())


def _claim_expiry(ctx: Runix) -> datetime:
    return utcnow() + timedelta(hours=ctx.settings.domain_claim_ttl_hours)


def _new_token() -> str:
    # 128 random bits per claim: the TXT record that proves one claim never proves another.
    return secrets.token_hex(16)


def add(ctx: Runix, s: Session, account: Account, project_ref: str, raw_name: str) -> Domain:
    """Claims a name for the project, unverified, whoever else claims or holds it."""
    project = projects.get(s, account, project_ref)
    name = names.domain_name(raw_name)
    if name == ctx.settings.apps_domain or name.endswith("." + ctx.settings.apps_domain):
        raise Conflict(f"{name} is under the platform's apps domain ({ctx.settings.apps_domain}): Runix serves it "
                       "already, so it cannot be added as a custom domain")
    # The first write of the transaction (on SQLite it takes the write lock, so no stale snapshot follows).
    s.execute(delete(Domain).where(Domain.verified.is_(False), Domain.expires_at <= utcnow()))
    projects.lock(s, project)  # the checks and the insert as one step
    if s.scalar(select(Domain.id).where(Domain.project_id == project.id, Domain.name == name)):
        raise Conflict(f"The domain {name} is already on project {project.name}")
    limit = get_plan(account.plan).domains_per_project
    used = s.scalar(select(func.count()).select_from(Domain).where(Domain.project_id == project.id, live())) or 0
    if limit is not None and used >= limit:
        raise Forbidden(f"Your {account.plan} plan allows {limit} domains per project")
    domain = Domain(id=new_id("dom"), project_id=project.id, name=name, verified=False,
                    verification_token=_new_token(), expires_at=_claim_expiry(ctx))
    s.add(domain)
    try:
        s.commit()
    except IntegrityError as exc:
        s.rollback()
        raise Conflict(f"The domain {name} is already on project {project.name}") from exc
    return domain


def list_for(s: Session, account: Account, project_ref: str) -> list[Domain]:
    """Every live domain of the project, by name (the dashboard shows them all on one page)."""
    return list(s.scalars(_of_project(projects.get(s, account, project_ref)).order_by(Domain.name)))


def list_page(s: Session, account: Account, project_ref: str, limit: int | None, cursor: str | None) -> Page[Domain]:
    """One page of the project's live domains, by name (GET /projects/{project}/domains)."""
    return page(s, _of_project(projects.get(s, account, project_ref)), Domain.id, limit, cursor,
                order_by=Domain.name)


def _of_project(project: Project) -> Select:
    return select(Domain).where(Domain.project_id == project.id, live())


def get(s: Session, account: Account, project_ref: str, name: str) -> tuple[Project, Domain]:
    project = projects.get(s, account, project_ref)
    domain = s.scalars(select(Domain).where(Domain.project_id == project.id, live(),
                                            Domain.name == name.strip().lower().rstrip("."))).first()
    if domain is None:
        raise NotFound(f"Domain {name} not found on project {project.name}")
    return project, domain


def _held_elsewhere(s: Session, domain: Domain) -> bool:
    return s.scalar(select(Domain.id).where(Domain.name == domain.name, Domain.verified.is_(True),
                                            Domain.id != domain.id)) is not None


def verify(ctx: Runix, s: Session, account: Account, project_ref: str, name: str) -> Domain:
    """Looks up the claim's TXT record; once it matches, the domain serves the project's production deployment,
    taken over from whichever project held it verified before."""
    project, domain = get(s, account, project_ref, name)
    if domain.verified:
        return domain
    record = verification_record(domain)
    checked_at = utcnow()
    found = txt_values(record.name, ctx.settings.dns_resolver)  # before any write: no lock held over DNS
    if record.value not in found:
        seen = f" Found: {', '.join(found)}." if found else " No TXT record was found there yet."
        details = {"verification": record.model_dump(), "found": found}
        if _held_elsewhere(s, domain):
            raise Conflict(f"The domain {domain.name} is verified by another project. To move it here, prove you "
                           f"own it: create a TXT record {record.name} with the value {record.value}, then verify "
                           f"again.{seen}", details=details)
        raise BadRequest(f"Domain not verified: create a TXT record {record.name} with the value {record.value}."
                         f"{seen} DNS changes can take a few minutes to appear.", details=details)
    # A proof is fresh if it was looked up after the holder verified: then the holder's claim goes back to
    # unverified, with a new token so that its TXT record, if still there, cannot take the name back unless the
    # DNS owner publishes a new one. A holder that verified while this lookup ran stays (first wins): the update
    # below then fails on ux_domains_verified_name.
    try:
        s.execute(sql_update(Domain)
                  .where(Domain.name == domain.name, Domain.verified.is_(True), Domain.id != domain.id,
                         or_(Domain.verified_at.is_(None), Domain.verified_at < checked_at))
                  .values(verified=False, verified_at=None, expires_at=_claim_expiry(ctx),
                          verification_token=_new_token()))
        # Only while still live: removed or swept while DNS answered, it is gone (the demotion above rolls back).
        # The session's `domain` is updated along (synchronize_session).
        taken = s.execute(sql_update(Domain).where(Domain.id == domain.id, live())
                          .values(verified=True, verified_at=utcnow(), expires_at=None)).rowcount
        if not taken:
            s.rollback()
            raise NotFound(f"Domain {name} not found on project {project.name}")
        s.commit()
    except IntegrityError as exc:  # another claim on the name was verified meanwhile: ux_domains_verified_name
        s.rollback()
        raise Conflict(f"The domain {domain.name} was verified by another project while this check ran; verify "
                       "again to move it here") from exc
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
                        verified_at=domain.verified_at, expires_at=domain.expires_at)
