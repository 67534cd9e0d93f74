"""Attack 6: a paid plan for free. Plans go up only when the payment provider says a checkout was paid (a webhook
signed with the endpoint's secret) or when an admin sets them; down, always. Driven over HTTP against a real server
and a local provider that speaks Stripe's protocol."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api_support import error
from tests.fake_payments import FakePayments
from tests.support import ADMIN_EMAIL, Account, CliShell, RunixServer, running_server


@pytest.fixture(scope="module")
def provider() -> Iterator[FakePayments]:
    with FakePayments() as fake:
        yield fake


@pytest.fixture(scope="module")
def paid(tmp_path_factory: pytest.TempPathFactory, provider: FakePayments) -> Iterator[RunixServer]:
    with running_server(tmp_path_factory.mktemp("paid"), RUNIX_RATE_LIMIT_PER_MINUTE="100000",
                        **provider.env()) as server:
        provider.webhook_url = f"{server.url}/billing/webhook"
        yield server


def plan_of(account: Account) -> str:
    return account.client.get("/billing").json()["plan"]


def account_id(account: Account) -> str:
    return account.client.get("/user").json()["id"]


def test_without_a_provider_no_one_but_an_admin_moves_up(server: RunixServer) -> None:
    mallory = server.sign_in()
    for plan in ("pro", "enterprise"):
        body = error(mallory.client.put("/billing/plan", json={"plan": plan}), 403, "PAYMENT_REQUIRED")
        assert "operator" in body["error"]
    error(mallory.client.post("/billing/checkout", json={"plan": "pro"}), 403, "PAYMENT_REQUIRED")
    error(mallory.client.put(f"/billing/accounts/{mallory.email}/plan", json={"plan": "enterprise"}), 403,
          "FORBIDDEN")
    assert plan_of(mallory) == "hobby"

    admin = server.sign_in(ADMIN_EMAIL)
    assert admin.client.put("/billing/plan", json={"plan": "enterprise"}).json()["plan"] == "enterprise"
    r = admin.client.put(f"/billing/accounts/{mallory.email.upper()}/plan", json={"plan": "pro"})
    assert r.status_code == 200 and r.json()["plan"] == "pro" and plan_of(mallory) == "pro"
    error(admin.client.put("/billing/accounts/nobody@example.com/plan", json={"plan": "pro"}), 404, "NOT_FOUND")
    assert mallory.client.put("/billing/plan", json={"plan": "hobby"}).json()["plan"] == "hobby"  # down: always
    assert admin.client.put("/billing/plan", json={"plan": "hobby"}).status_code == 200


def test_a_paid_checkout_moves_up_and_a_move_down_ends_the_subscription(paid: RunixServer,
                                                                         provider: FakePayments) -> None:
    alice = paid.sign_in()
    error(alice.client.put("/billing/plan", json={"plan": "pro"}), 403, "PAYMENT_REQUIRED")
    r = alice.client.post("/billing/checkout", json={"plan": "pro"})
    assert r.status_code == 201, r.text
    checkout = r.json()
    assert checkout["plan"] == "pro" and checkout["url"].startswith(provider.url)
    session = provider.sessions[checkout["id"]]
    assert session["line_items"]["0"]["price_data"]["unit_amount"] == "2000"
    assert plan_of(alice) == "hobby"  # an open checkout is not a payment

    assert httpx.get(checkout["url"]).status_code == 200  # the hosted page
    provider.pay(checkout["id"])
    assert plan_of(alice) == "pro"
    error(alice.client.post("/billing/checkout", json={"plan": "pro"}), 400, "BAD_REQUEST")  # nothing to pay for

    mine = [s for s in provider.subscriptions.values() if s["metadata"]["account_id"] == account_id(alice)]
    assert [s["status"] for s in mine] == ["active"]
    assert alice.client.put("/billing/plan", json={"plan": "hobby"}).json()["plan"] == "hobby"
    assert [s["status"] for s in mine] == ["canceled"]  # ended at the provider, so it stops charging
    assert plan_of(alice) == "hobby"


def test_a_subscription_ended_at_the_provider_moves_the_account_down(paid: RunixServer,
                                                                      provider: FakePayments) -> None:
    bob = paid.sign_in()
    provider.pay(bob.client.post("/billing/checkout", json={"plan": "enterprise"}).json()["id"])
    assert plan_of(bob) == "enterprise"
    subscription = next(s for s in provider.subscriptions.values()
                        if s["metadata"]["account_id"] == account_id(bob))
    provider.cancel(subscription["id"])  # e.g. the card was declined for months
    assert plan_of(bob) == "hobby"


def test_forged_replayed_or_tampered_webhooks_change_nothing(paid: RunixServer, provider: FakePayments) -> None:
    mallory = paid.sign_in()
    me = account_id(mallory)
    event = {"id": "evt_forged", "object": "event", "type": "checkout.session.completed",
             "data": {"object": {"id": "cs_forged", "object": "checkout.session", "payment_status": "paid",
                                 "metadata": {"account_id": me, "plan": "enterprise"}}}}
    body = json.dumps(event).encode()
    now = int(time.time())
    webhook = f"{paid.url}/billing/webhook"
    attempts = {
        "no signature": {},
        "signed with another secret": {"Stripe-Signature": provider.signature(body, secret="whsec_guessed")},
        "a signature from 10 minutes ago": {"Stripe-Signature": provider.signature(body, timestamp=now - 600)},
        "garbage": {"Stripe-Signature": "t=abc,v1=zz"},
    }
    for why, headers in attempts.items():
        r = httpx.post(webhook, content=body, headers={"Content-Type": "application/json", **headers})
        assert r.status_code == 400 and r.json()["code"] == "BAD_SIGNATURE", (why, r.text)
    # A real signature over one body does not cover another.
    genuine = json.dumps({**event, "data": {"object": {**event["data"]["object"], "payment_status": "unpaid"}}})
    signed = {"Stripe-Signature": provider.signature(genuine.encode())}
    r = httpx.post(webhook, content=body, headers=signed)
    assert r.status_code == 400 and r.json()["code"] == "BAD_SIGNATURE"
    # A genuine but unpaid checkout changes nothing either.
    r = httpx.post(webhook, content=genuine.encode(), headers=signed)
    assert r.status_code == 200
    assert plan_of(mallory) == "hobby"


def test_the_cli_sends_a_move_up_to_checkout(paid: RunixServer, provider: FakePayments, tmp_path: Path) -> None:
    carol = paid.sign_in()
    shell = CliShell(tmp_path / "home", paid.url)
    shell.login_with_token(paid, carol)
    checkout = shell.json("billing", "--plan", "pro", "--yes")
    assert checkout["url"].startswith(provider.url) and plan_of(carol) == "hobby"
    assert "Pay for the pro plan here: " in shell.run("billing", "--plan", "pro", "--yes").stdout
    provider.pay(checkout["id"])
    assert "Plan: Pro" in shell.run("billing").stdout
