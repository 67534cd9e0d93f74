"""/billing"""

from __future__ import annotations

from fastapi import APIRouter

from runix.api.deps import Ctx, CurrentAccount, Db
from runix.api.errors import AUTHED, responses
from runix.schemas import BillingPublic, PlanChange
from runix.services import billing

router = APIRouter(prefix="/billing", tags=["billing"], responses=AUTHED)


@router.get("", response_model=BillingPublic)
def get_billing(account: CurrentAccount, ctx: Ctx, db: Db) -> BillingPublic:
    """Your plan, its limits and your usage of them."""
    return billing.summary(ctx, db, account)


@router.put("/plan", response_model=BillingPublic, responses=responses(403))
def change_plan(body: PlanChange, account: CurrentAccount, ctx: Ctx, db: Db) -> BillingPublic:
    """Changes plan (hobby, pro, enterprise)."""
    return billing.change_plan(ctx, db, account, body.plan)
