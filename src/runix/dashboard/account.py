"""Dashboard pages of the account: sign-in (email code, mailed link), sign-out, tokens, Billing, CLI device login."""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import Response

from runix.dashboard.web import (
    SESSION_COOKIE,
    Call,
    action,
    clear_cookie,
    page,
    redirect,
    safe_next,
    start_session,
)
from runix.errors import RunixError, ValidationFailed
from runix.plans import PLANS
from runix.services import auth, billing, device, payments

# Sign-in ------------------------------------------------------------------------------------------------------------


@page("/login", signed_in=False)
def login_page(c: Call) -> Response:
    next_url = safe_next(c.request.query_params.get("next"))
    if c.account is not None:
        return redirect(c.request, next_url)
    return c.render("login.html", next=next_url, email=c.request.query_params.get("email", ""))


@action("/login/email", api="POST /auth/email", signed_in=False, fallback="/dashboard/login")
def send_code(c: Call) -> Response:
    email = c.field("email")
    if "@" not in email or len(email) > 320:
        raise ValidationFailed("Enter a valid email address")
    auth.request_code(c.ctx, c.db, email)
    next_url = safe_next(c.field("next"))
    return redirect(c.request, f"/dashboard/login/code?email={quote(email)}&next={quote(next_url)}")


@page("/login/code", signed_in=False)
def code_page(c: Call) -> Response:
    email = c.request.query_params.get("email", "")
    if not email:
        return redirect(c.request, "/dashboard/login")
    return c.render("login_code.html", email=email, next=safe_next(c.request.query_params.get("next")))


@action("/login/code", api="POST /auth/email/verify", signed_in=False, fallback="/dashboard/login")
def verify_code(c: Call) -> Response:
    _, session_token, _ = auth.verify_code(c.ctx, c.db, c.field("email"), c.field("code").replace(" ", ""))
    response = redirect(c.request, safe_next(c.field("next")))
    start_session(c.request, response, session_token)
    return response


@page("/login/link", signed_in=False)
def link_page(c: Call) -> Response:
    # A GET only shows a button: mail scanners that open links must not use up the sign-in.
    return c.render("login_link.html", token=c.request.query_params.get("token", "")[:200])


@action("/login/link", api="POST /auth/email/verify", signed_in=False, fallback="/dashboard/login")
def follow_link(c: Call) -> Response:
    _, session_token, _ = auth.verify_link(c.ctx, c.db, c.field("token"))
    response = redirect(c.request, "/dashboard")
    start_session(c.request, response, session_token)
    return response


@action("/logout", api="POST /auth/logout")
def logout(c: Call) -> Response:
    assert c.token is not None
    auth.revoke_token(c.db, c.me, c.token.id)
    response = redirect(c.request, "/dashboard/login", "You are signed out.")
    clear_cookie(c.request, response, SESSION_COOKIE)
    return response


# Tokens -------------------------------------------------------------------------------------------------------------


def _tokens_page(c: Call, created: tuple[str, str] | None = None) -> Response:
    rows = auth.list_tokens(c.db, c.me)
    return c.render("tokens.html", title="Tokens", tokens=rows, created=created,
                    current_id=c.token.id if c.token else None)


@page("/tokens", api=("GET /auth/tokens", "GET /user"))
def tokens_page(c: Call) -> Response:
    return _tokens_page(c)


@action("/tokens", api="POST /auth/cli-token", fallback="/dashboard/tokens")
def create_token(c: Call) -> Response:
    value, token = auth.create_cli_token(c.db, c.me, c.field("name")[:100] or None)
    # Rendered directly (not redirected): the value is shown this once and never stored anywhere readable.
    return _tokens_page(c, created=(token.name, value))


@action("/tokens/{token_id}/revoke", api="DELETE /auth/tokens/{token_id}", fallback="/dashboard/tokens")
def revoke_token(c: Call) -> Response:
    token = auth.revoke_token(c.db, c.me, c.params["token_id"])
    if c.token is not None and token.id == c.token.id:
        response = redirect(c.request, "/dashboard/login", "You revoked this session's token and are signed out.")
        clear_cookie(c.request, response, SESSION_COOKIE)
        return response
    return redirect(c.request, "/dashboard/tokens", f"Revoked “{token.name}”. It no longer works.")


# Billing ------------------------------------------------------------------------------------------------------------

METERS = [  # (usage key, limit key, label)
    ("projects", "projects", "Projects"),
    ("deploys_this_hour", "deploys_per_hour", "Deployments this hour"),
    ("requests_this_minute", "requests_per_minute", "API requests this minute"),
    ("domains", None, "Custom domains"),
    ("disk_mb", "disk_mb", "Disk for sources and releases (MB)"),
    ("build_cache_mb", "build_cache_mb", "Build caches (MB)"),
]


@page("/billing", api=("GET /billing",))
def billing_page(c: Call) -> Response:
    summary = billing.summary(c.ctx, c.db, c.me)
    meters = []
    for usage_key, limit_key, label in METERS:
        used = summary.usage.get(usage_key, 0)
        limit = summary.limits.get(limit_key) if limit_key else None
        percent = min(100, round(100 * used / limit)) if limit else 0
        meters.append({"key": usage_key, "label": label, "used": used, "limit": limit, "percent": percent,
                       "note": _domains_note(summary.limits) if usage_key == "domains" else None})
    choices = {p.name: _plan_choice(c, summary.plan, p.name) for p in PLANS.values()}
    return c.render("billing.html", title="Billing", summary=summary, meters=meters, plans=list(PLANS.values()),
                    choices=choices, paid=c.request.query_params.get("paid") == "1")


def _plan_choice(c: Call, current: str, plan: str) -> str:
    """What the plan's button does: nothing (the current plan), switch at once, pay at checkout, or ask the
    operator (a move up on a server that takes no payments)."""
    if plan == current:
        return "current"
    if not billing.is_upgrade(current, plan) or c.ctx.settings.is_admin(c.me.email):
        return "switch"
    return "checkout" if payments.configured(c.ctx.settings) else "ask"


def _domains_note(limits: dict[str, int | None]) -> str:
    """Domains are limited per project, so the account-wide count has no single ceiling to draw."""
    per_project = limits.get("domains_per_project")
    return f"up to {per_project} per project" if per_project is not None else "unlimited"


@action("/billing/plan", api="PUT /billing/plan", fallback="/dashboard/billing")
def change_plan(c: Call) -> Response:
    plan = c.field("plan")
    if plan not in PLANS:
        raise ValidationFailed(f"Unknown plan '{plan}': choose {', '.join(PLANS)}")
    billing.change_plan(c.ctx, c.db, c.me, plan)
    return redirect(c.request, "/dashboard/billing", f"You are now on the {PLANS[plan].title} plan.")


@action("/billing/checkout", api="POST /billing/checkout", fallback="/dashboard/billing")
def start_checkout(c: Call) -> Response:
    plan = c.field("plan")
    if plan not in PLANS:
        raise ValidationFailed(f"Unknown plan '{plan}': choose {', '.join(PLANS)}")
    return redirect(c.request, billing.start_checkout(c.ctx, c.me, plan).url)  # the provider's payment page


# CLI browser login (device authorization grant) ---------------------------------------------------------------------


@page("/device")
def device_page(c: Call) -> Response:
    user_code = c.request.query_params.get("user_code", "")[:20]
    pending, problem = None, None
    if user_code:
        try:
            pending = device.pending_by_user_code(c.db, user_code)
        except RunixError as exc:
            problem = exc.message
    return c.render("device.html", title="Approve a CLI login", user_code=user_code, pending=pending, problem=problem)


@action("/device", api="POST /auth/device/approve", fallback="/dashboard/device")
def decide_device(c: Call) -> Response:
    approve = c.field("decision") == "approve"
    row = device.decide(c.db, c.me, c.field("user_code"), approve)
    return c.render("device.html", title="Approve a CLI login", user_code=row.user_code, pending=None, decided=row)
