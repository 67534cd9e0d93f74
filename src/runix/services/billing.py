"""Plans, their limits and what the account uses of them; the request and deploy rate limits."""

from __future__ import annotations

from dataclasses import asdict
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from runix.context import Runix
from runix.db.models import Account, Domain, Project
from runix.errors import Forbidden
from runix.plans import PLANS, get_plan
from runix.ratelimit import Quota
from runix.schemas import BillingPublic
from runix.services import domains as domain_service
from runix.services import projects


class PaymentProvider(Protocol):
    def change_plan(self, account: Account, plan: str) -> None:
        """Starts or changes the subscription; raises to refuse the change."""


class NoPayments:
    """The default: plans change freely (a self-hosted install with no payment provider configured)."""

    def change_plan(self, account: Account, plan: str) -> None:
        return None


payments: PaymentProvider = NoPayments()


def requests_per_minute(ctx: Runix, account: Account) -> int:
    return _requests_per_minute(ctx, account.plan)


def _requests_per_minute(ctx: Runix, plan: str) -> int:
    """The plan's API request budget, unless the server sets one for every account (RUNIX_RATE_LIMIT_PER_MINUTE)."""
    return ctx.settings.rate_limit_per_minute or get_plan(plan).requests_per_minute


def hit_request_limit(ctx: Runix, account_id: str, plan: str) -> Quota:
    """Counts one API request against the account's per-minute budget (429 past it)."""
    return ctx.limiter.hit("api", account_id, _requests_per_minute(ctx, plan), "minute", "requests")


def hit_deploy_limit(ctx: Runix, account: Account) -> Quota:
    """Counts one deployment against the plan's hourly deploy limit (429 with Retry-After past it)."""
    limit = get_plan(account.plan).deploys_per_hour
    return ctx.limiter.hit("deploys", account.id, limit, "hour", f"deployments on the {account.plan} plan")


def summary(ctx: Runix, s: Session, account: Account) -> BillingPublic:
    plan = get_plan(account.plan)
    rpm = requests_per_minute(ctx, account)
    limits = plan.limits() | {"requests_per_minute": rpm}
    domains = s.scalar(select(func.count()).select_from(Domain).join(Project, Project.id == Domain.project_id)
                       .where(Project.account_id == account.id, domain_service.live())) or 0
    usage = {
        "requests_this_minute": rpm - ctx.limiter.peek("api", account.id, rpm, "minute").remaining,
        "deploys_this_hour": plan.deploys_per_hour
        - ctx.limiter.peek("deploys", account.id, plan.deploys_per_hour, "hour").remaining,
        "projects": projects.count(s, account),
        "domains": domains,
    }
    return BillingPublic(plan=plan.name, limits=limits, usage=usage,
                         plans=[asdict(p) for p in PLANS.values()])


def change_plan(ctx: Runix, s: Session, account: Account, plan_name: str) -> BillingPublic:
    new = PLANS[plan_name]
    if new.projects is not None and projects.count(s, account) > new.projects:
        raise Forbidden(f"The {new.title} plan allows {new.projects} projects; delete some before switching")
    payments.change_plan(account, plan_name)
    s.add(account)  # the API's account is detached (see auth.authenticate_fast); this saves the change
    account.plan = plan_name
    s.commit()
    return summary(ctx, s, account)
