"""/billing"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from runix.api.deps import Ctx, CurrentAccount, Db
from runix.api.errors import AUTHED, responses
from runix.schemas import BillingPublic, CheckoutCreate, CheckoutPublic, PlanChange
from runix.services import billing

router = APIRouter(prefix="/billing", tags=["billing"], responses=AUTHED)
# The payment provider's webhook carries no bearer token: its signature (Stripe-Signature) is its proof.
webhooks = APIRouter(prefix="/billing", tags=["billing"])


@router.get("", response_model=BillingPublic)
def get_billing(account: CurrentAccount, ctx: Ctx, db: Db) -> BillingPublic:
    """Your plan, its limits and your usage of them."""
    return billing.summary(ctx, db, account)


@router.put("/plan", response_model=BillingPublic, responses=responses(403))
def change_plan(body: PlanChange, account: CurrentAccount, ctx: Ctx, db: Db) -> BillingPublic:
    """Changes plan (hobby, pro, enterprise): down at once; up only for admins (others: POST /billing/checkout,
    403 PAYMENT_REQUIRED here)."""
    return billing.change_plan(ctx, db, account, body.plan)


@router.post("/checkout", response_model=CheckoutPublic, status_code=201, responses=responses(403, 503))
def start_checkout(body: CheckoutCreate, account: CurrentAccount, ctx: Ctx) -> CheckoutPublic:
    """Starts paying for a larger plan: open `url` (the payment provider's page); the plan applies once paid."""
    return billing.start_checkout(ctx, account, body.plan)


@router.put("/accounts/{account}/plan", response_model=BillingPublic, responses=responses(403))
def set_account_plan(account: str, body: PlanChange, admin: CurrentAccount, ctx: Ctx, db: Db) -> BillingPublic:
    """Admins only (RUNIX_ADMIN_EMAILS): sets the plan of any account, by id or email, without payment."""
    return billing.set_plan_as_admin(ctx, db, admin, account, body.plan)


@webhooks.post("/webhook", responses=responses(400, 404))
async def payment_webhook(request: Request, ctx: Ctx, db: Db,
                          stripe_signature: Annotated[str | None, Header()] = None) -> dict[str, bool]:
    """Events of the payment provider (checkout paid, subscription ended), signed with RUNIX_PAYMENTS_WEBHOOK_SECRET;
    400 BAD_SIGNATURE when the signature does not check out; 404 on a server that takes no payments."""
    body = await request.body()
    await run_in_threadpool(billing.handle_webhook, ctx, db, body, stripe_signature)
    return {"received": True}
