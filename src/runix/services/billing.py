"""Plans, their limits and what the account uses of them; the request and deploy rate limits; changing plan.

A plan goes up only when paid for (a checkout at the payment provider, confirmed by its signed webhook) or when an
admin (RUNIX_ADMIN_EMAILS) sets it; down, it always may (its subscription ends at the provider)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from runix.context import Runix
from runix.db.models import Account, Domain, Project
from runix.errors import BadRequest, Forbidden, NotFound, PaymentRequired, QuotaExceeded
from runix.pipeline.disk import MB
from runix.plans import PLANS, get_plan
from runix.ratelimit import Quota
from runix.schemas import BillingPublic, CheckoutPublic
from runix.services import domains as domain_service
from runix.services import payments, projects
from runix.usage import disk_quotas_mb, disk_used

log = structlog.get_logger("runix.billing")


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


def check_disk_room(ctx: Runix, s: Session, account: Account, more_bytes: int = 0) -> None:
    """Raises QUOTA_EXCEEDED when the account's sources and releases (plus `more_bytes`) pass its disk quota."""
    quota_mb, _ = disk_quotas_mb(ctx.settings, account.plan)
    used = disk_used(s, account.id) + more_bytes
    if used > quota_mb * MB:
        raise QuotaExceeded(f"Your sources and releases would take {math.ceil(used / MB)} MB of the "
                            f"{get_plan(account.plan).title} plan's {quota_mb} MB: delete deployments you no longer "
                            "need (`runix deployments rm`), or move up a plan")


def _cache_bytes(ctx: Runix, account_id: str) -> int:
    """As measured after the account's last build (caches change only while one runs)."""
    with contextlib.suppress(OSError, ValueError):
        return int(ctx.layout.cache_usage(account_id).read_text())
    return 0


def summary(ctx: Runix, s: Session, account: Account) -> BillingPublic:
    plan = get_plan(account.plan)
    rpm = requests_per_minute(ctx, account)
    disk_mb, cache_mb = disk_quotas_mb(ctx.settings, account.plan)
    limits = plan.limits() | {"requests_per_minute": rpm, "disk_mb": disk_mb, "build_cache_mb": cache_mb}
    domains = s.scalar(select(func.count()).select_from(Domain).join(Project, Project.id == Domain.project_id)
                       .where(Project.account_id == account.id, domain_service.live())) or 0
    usage = {
        "requests_this_minute": rpm - ctx.limiter.peek("api", account.id, rpm, "minute").remaining,
        "deploys_this_hour": plan.deploys_per_hour
        - ctx.limiter.peek("deploys", account.id, plan.deploys_per_hour, "hour").remaining,
        "projects": projects.count(s, account),
        "domains": domains,
        "disk_mb": math.ceil(disk_used(s, account.id) / MB),
        "build_cache_mb": math.ceil(_cache_bytes(ctx, account.id) / MB),
    }
    return BillingPublic(plan=plan.name, limits=limits, usage=usage,
                         plans=[asdict(p) for p in PLANS.values()])


def is_upgrade(current: str, wanted: str) -> bool:
    return get_plan(wanted).price_per_month_usd > get_plan(current).price_per_month_usd


def change_plan(ctx: Runix, s: Session, account: Account, plan_name: str) -> BillingPublic:
    """The account's own change: down (or sideways) at once; up at once only for an admin, else through checkout."""
    if is_upgrade(account.plan, plan_name) and not ctx.settings.is_admin(account.email):
        plan = PLANS[plan_name]
        if payments.configured(ctx.settings):
            raise PaymentRequired(f"The {plan.title} plan is ${plan.price_per_month_usd}/month: pay for it at "
                                  f"checkout (POST /billing/checkout, `runix billing --plan {plan_name}` or the "
                                  "Billing page); it applies once paid")
        raise PaymentRequired(f"This server takes no payments: ask its operator (an admin) to move your account to "
                              f"the {plan.title} plan")
    _check_room(s, account, plan_name)
    if plan_name == _free_plan() and account.plan != plan_name and payments.configured(ctx.settings):
        # Ended at the provider first: a move to the free plan that still paid would be worse than one refused.
        payments.cancel_subscriptions(ctx.settings, account.id)
    return summary(ctx, s, _store_plan(s, account, plan_name))


def set_plan_as_admin(ctx: Runix, s: Session, admin: Account, target: str, plan_name: str) -> BillingPublic:
    """An admin sets any account's plan (by id or email), without payment."""
    if not ctx.settings.is_admin(admin.email):
        raise Forbidden("Only admins (RUNIX_ADMIN_EMAILS) set other accounts' plans")
    account = s.scalar(select(Account).where((Account.id == target) | (func.lower(Account.email) == target.lower())))
    if account is None:
        raise NotFound(f"No account '{target}'")
    return summary(ctx, s, _set_plan(s, account, plan_name))


def start_checkout(ctx: Runix, account: Account, plan_name: str) -> CheckoutPublic:
    """A checkout session at the payment provider for moving up to `plan_name`."""
    if not payments.configured(ctx.settings):
        raise PaymentRequired("This server takes no payments: ask its operator (an admin) to change your plan")
    if not is_upgrade(account.plan, plan_name):
        raise BadRequest(f"Checkout is for moving up; you are on {get_plan(account.plan).title} already: "
                         f"change to {PLANS[plan_name].title} with PUT /billing/plan")
    base = ctx.settings.api_url
    checkout = payments.create_checkout(ctx.settings, account_id=account.id, email=account.email,
                                        plan=PLANS[plan_name], success_url=f"{base}/dashboard/billing?paid=1",
                                        cancel_url=f"{base}/dashboard/billing")
    return CheckoutPublic(id=checkout.id, url=checkout.url, plan=plan_name)


def handle_webhook(ctx: Runix, s: Session, body: bytes, signature: str | None) -> None:
    """Applies a signed event of the payment provider: a paid checkout moves its account up; a subscription that
    ended moves it back to the free plan (unless it has moved to another plan meanwhile)."""
    event = payments.parse_webhook(ctx.settings, body, signature)
    meta = event.metadata
    account = s.get(Account, meta.get("account_id", ""))
    plan_name = meta.get("plan", "")
    if account is None or plan_name not in PLANS:
        log.info("payment event for no account here", event_id=event.id, type=event.type)
        return
    if event.type == "checkout.session.completed" and event.object.get("payment_status") in ("paid",
                                                                                            "no_payment_required"):
        _set_plan(s, account, plan_name)
        log.info("plan paid for", account_id=account.id, plan=plan_name, event_id=event.id)
    elif event.type == "customer.subscription.deleted" and account.plan == plan_name:
        _set_plan(s, account, _free_plan())
        log.info("subscription ended", account_id=account.id, plan=plan_name, event_id=event.id)


def _free_plan() -> str:
    return min(PLANS.values(), key=lambda p: p.price_per_month_usd).name


def _check_room(s: Session, account: Account, plan_name: str) -> None:
    new = PLANS[plan_name]
    if new.projects is not None and projects.count(s, account) > new.projects:
        raise Forbidden(f"The {new.title} plan allows {new.projects} projects; delete some before switching")


def _set_plan(s: Session, account: Account, plan_name: str) -> Account:
    _check_room(s, account, plan_name)
    return _store_plan(s, account, plan_name)


def _store_plan(s: Session, account: Account, plan_name: str) -> Account:
    """Saves a plan change already checked to fit (`_check_room`)."""
    account = s.merge(account)  # the API's account is detached (see auth.authenticate_fast)
    account.plan = plan_name
    s.commit()
    return account
