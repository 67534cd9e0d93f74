"""/projects/{project}/domains"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from runix.api.deps import Ctx, CurrentAccount, Db
from runix.api.errors import AUTHED, responses
from runix.api.routes.pages import Cursor, Limit, link_next
from runix.schemas import DomainCreate, DomainPublic
from runix.services import domains

router = APIRouter(prefix="/projects/{project}/domains", tags=["domains"], responses=AUTHED)


@router.post("", status_code=201, response_model=DomainPublic, responses=responses(403, 409))
def add_domain(project: str, body: DomainCreate, account: CurrentAccount, ctx: Ctx, db: Db) -> DomainPublic:
    """Claims a domain (unverified until verify; it lapses at `expires_at`); create the TXT record in
    `verification`, then call verify."""
    return domains.public(domains.add(ctx, db, account, project, body.name))


@router.get("", response_model=list[DomainPublic])
def list_domains(project: str, request: Request, response: Response, account: CurrentAccount, db: Db,
                 limit: Limit = 20, cursor: Cursor = None) -> list[DomainPublic]:
    """The project's domains by name, verified or claimed (a lapsed claim is no longer listed)."""
    page = domains.list_page(db, account, project, limit, cursor)
    link_next(request, response, page.next_cursor)
    return [domains.public(d) for d in page.items]


@router.post("/{name}/verify", response_model=DomainPublic, responses=responses(409))
def verify_domain(project: str, name: str, account: CurrentAccount, ctx: Ctx, db: Db) -> DomainPublic:
    """Looks up the TXT record; once verified the domain serves the production deployment. 409 while another
    project holds the name verified and this claim's TXT value is not found."""
    return domains.public(domains.verify(ctx, db, account, project, name))


@router.delete("/{name}", response_model=DomainPublic)
def remove_domain(project: str, name: str, account: CurrentAccount, ctx: Ctx, db: Db) -> DomainPublic:
    return domains.public(domains.remove(ctx, db, account, project, name))
