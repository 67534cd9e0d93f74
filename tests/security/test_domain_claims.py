"""Custom-domain claims between tenants (docs/security.md): an unverified claim blocks nobody and lapses, the first
verification of a name wins, and a verified name moves only with a fresh DNS proof by the account taking it.

Real servers on SQLite and on PostgreSQL, TXT records from the loopback DNS server (RUNIX_DNS_RESOLVER), apps
answering through the real router.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.api_support import error, run_sql
from tests.dns_server import LoopbackDns, dns  # noqa: F401 - the fixture
from tests.support import Account, RunixServer, drop_postgres_database, fresh_postgres_database, running_server
from tests.test_concurrency import BACKENDS, all_at_once
from tests.test_deployments_e2e import Router, deploy, host_of, new_project, stdlib_app

CLAIM_TTL_SECONDS = 4  # the lapsing server's RUNIX_DOMAIN_CLAIM_TTL_HOURS, in seconds


@contextlib.contextmanager
def server_on(backend: str, tmp: Path, dns: LoopbackDns, **env: str) -> Iterator[RunixServer]:  # noqa: F811
    """A server on `backend` (PostgreSQL: a fresh database of its own) resolving TXT records through `dns`."""
    url = fresh_postgres_database() if backend == "postgresql" else None
    if url:
        env["RUNIX_DATABASE_URL"] = url
    try:
        with running_server(tmp, RUNIX_DNS_RESOLVER=dns.address, RUNIX_RATE_LIMIT_PER_MINUTE="100000",
                            RUNIX_HEALTH_TIMEOUT="20", **env) as s:
            yield s
    finally:
        if url:
            drop_postgres_database(url)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           dns: LoopbackDns) -> Iterator[RunixServer]:  # noqa: F811
    with server_on(request.param, tmp_path_factory.mktemp(f"claims-{request.param}"), dns) as s:
        yield s


@pytest.fixture(scope="module", params=BACKENDS)
def lapsing_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   dns: LoopbackDns) -> Iterator[RunixServer]:  # noqa: F811
    """Unverified claims lapse after CLAIM_TTL_SECONDS."""
    with server_on(request.param, tmp_path_factory.mktemp(f"lapsing-{request.param}"), dns,
                   RUNIX_DOMAIN_CLAIM_TTL_HOURS=str(CLAIM_TTL_SECONDS / 3600)) as s:
        yield s


@pytest.fixture(scope="module")
def router(server: RunixServer) -> Router:
    return Router(server)


def unique_domain() -> str:
    return f"www.{uuid.uuid4().hex[:10]}.example.com"


def claim(account: Account, project: str, domain: str) -> dict:
    """Adds `domain` to the project (made first when missing); returns the claim."""
    if account.client.get(f"/projects/{project}").status_code == 404:
        new_project(account, project)
    r = account.client.post(f"/projects/{project}/domains", json={"name": domain})
    assert r.status_code == 201, r.text
    return r.json()


def publish(dns: LoopbackDns, *claims: dict) -> None:  # noqa: F811
    """Sets the TXT record of the claims' name to their values (what the domain's owner puts in its zone)."""
    dns.records.set(claims[0]["verification"]["name"], *(c["verification"]["value"] for c in claims))


def verify(account: Account, project: str, domain: str) -> dict:
    r = account.client.post(f"/projects/{project}/domains/{domain}/verify")
    assert r.status_code == 200, r.text
    assert r.json()["verified"] is True
    return r.json()


def listed(account: Account, project: str) -> dict[str, dict]:
    return {d["name"]: d for d in account.client.get(f"/projects/{project}/domains").json()}


def serves(account: Account, project: str, domain: str) -> bool:
    """The project lists the domain among its URLs (it does for its verified domains only)."""
    return domain in {host_of(url) for url in account.client.get(f"/projects/{project}").json()["urls"]}


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 30) -> None:
    """Polls `condition` until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def test_an_attackers_unverified_claims_do_not_block_the_owner(server: RunixServer,
                                                               dns: LoopbackDns) -> None:  # noqa: F811
    attacker, owner = server.sign_in(), server.sign_in()
    domain = unique_domain()
    squats = [claim(attacker, project, domain) for project in ("squat-a", "squat-b")]
    # Nobody holds the name yet: the attacker's failed check is the plain "not verified yet".
    error(attacker.client.post(f"/projects/squat-a/domains/{domain}/verify"), 400, "BAD_REQUEST")

    mine = claim(owner, "site", domain)
    assert mine["verified"] is False and mine["expires_at"]
    assert mine["verification"]["value"] not in {s["verification"]["value"] for s in squats}
    publish(dns, mine)
    verify(owner, "site", domain)
    assert serves(owner, "site", domain)

    # The owner's record proves nothing for the attacker's claims, and the name is held: 409, not served.
    for project in ("squat-a", "squat-b"):
        body = error(attacker.client.post(f"/projects/{project}/domains/{domain}/verify"), 409, "CONFLICT")
        assert mine["verification"]["value"] in body["details"]["found"]
        assert listed(attacker, project)[domain]["verified"] is False
        assert not serves(attacker, project, domain)
    assert listed(owner, "site")[domain]["verified"] is True


def test_the_first_verification_wins_and_a_later_one_gets_409(server: RunixServer,
                                                              dns: LoopbackDns) -> None:  # noqa: F811
    first, second = server.sign_in(), server.sign_in()
    domain = unique_domain()
    firsts, seconds = claim(first, "app", domain), claim(second, "app", domain)
    publish(dns, firsts)
    verify(first, "app", domain)

    body = error(second.client.post(f"/projects/app/domains/{domain}/verify"), 409, "CONFLICT")
    assert "verified by another project" in body["error"] and seconds["verification"]["value"] in body["error"]
    assert body["details"]["verification"] == seconds["verification"]
    assert listed(first, "app")[domain]["verified"] is True and serves(first, "app", domain)
    assert listed(second, "app")[domain]["verified"] is False and not serves(second, "app", domain)


def test_racing_verifications_leave_one_verified_and_never_fail(server: RunixServer,
                                                                dns: LoopbackDns) -> None:  # noqa: F811
    racers = [server.sign_in() for _ in range(4)]
    for round in range(5):
        project, domain = f"race-{round}", unique_domain()
        publish(dns, *[claim(racer, project, domain) for racer in racers])  # every claim's proof passes
        path = f"/projects/{project}/domains/{domain}/verify"
        responses = all_at_once(len(racers), lambda i, path=path: racers[i].client.post(path))
        assert {r.status_code for r in responses} <= {200, 409}, [r.text for r in responses]
        assert any(r.status_code == 200 for r in responses)
        for r in responses:
            if r.status_code == 409:
                error(r, 409, "CONFLICT")
        holders = [racer for racer in racers if listed(racer, project)[domain]["verified"]]
        assert len(holders) == 1
        assert [serves(racer, project, domain) for racer in racers] == [racer in holders for racer in racers]


def test_a_verified_domain_moves_only_with_a_fresh_passing_proof(server: RunixServer, router: Router,
                                                                 dns: LoopbackDns) -> None:  # noqa: F811
    old_owner, new_owner = server.sign_in(), server.sign_in()
    for account, text in ((old_owner, "old-owner"), (new_owner, "new-owner")):
        new_project(account, "brand")
        assert deploy(account, "brand", stdlib_app(text))["status"] == "READY"
    domain = unique_domain()
    olds = claim(old_owner, "brand", domain)
    publish(dns, olds)
    verify(old_owner, "brand", domain)
    assert router.get(domain).text == "old-owner -"

    # A second claim, and the old owner's record still there: it proves nothing for the new claim's token.
    news = claim(new_owner, "brand", domain)
    assert news["verification"]["value"] != olds["verification"]["value"]
    body = error(new_owner.client.post(f"/projects/brand/domains/{domain}/verify"), 409, "CONFLICT")
    assert body["details"]["found"] == [olds["verification"]["value"]]
    assert router.get(domain).text == "old-owner -"  # an unverified claim is not routed
    assert listed(old_owner, "brand")[domain]["verified"] is True

    # The zone now publishes the new claim's value too (the domain changed hands): the fresh proof moves it.
    publish(dns, olds, news)
    moved = verify(new_owner, "brand", domain)
    assert moved["id"] == news["id"] and moved["expires_at"] is None
    assert router.get(domain).text == "new-owner -"
    assert serves(new_owner, "brand", domain) and not serves(old_owner, "brand", domain)
    demoted = listed(old_owner, "brand")[domain]
    assert demoted["verified"] is False and demoted["verified_at"] is None and demoted["expires_at"]
    # The old claim has a new token: its record, still published, cannot take the name back.
    assert demoted["verification"]["value"] != olds["verification"]["value"]
    error(old_owner.client.post(f"/projects/brand/domains/{domain}/verify"), 409, "CONFLICT")
    assert router.get(domain).text == "new-owner -"


def test_an_unverified_claim_lapses_and_stops_counting(lapsing_server: RunixServer,
                                                       dns: LoopbackDns) -> None:  # noqa: F811
    owner, squatter = lapsing_server.sign_in(), lapsing_server.sign_in()
    kept, *lapsing = [unique_domain() for _ in range(3)]  # the Hobby plan's 3 domains per project
    claims = [claim(owner, "shop", name) for name in (kept, *lapsing)]
    squat = claim(squatter, "squat", lapsing[0])
    error(owner.client.post("/projects/shop/domains", json={"name": unique_domain()}), 403, "FORBIDDEN")
    publish(dns, claims[0])
    verify(owner, "shop", kept)
    assert owner.client.get("/billing").json()["usage"]["domains"] == 3

    wait_until("the unverified claims lapse", lambda: list(listed(owner, "shop")) == [kept])
    wait_until("the squatter's claim lapses", lambda: listed(squatter, "squat") == {})
    assert owner.client.get("/billing").json()["usage"]["domains"] == 1
    error(owner.client.post(f"/projects/shop/domains/{lapsing[0]}/verify"), 404, "NOT_FOUND")
    error(squatter.client.delete(f"/projects/squat/domains/{lapsing[0]}"), 404, "NOT_FOUND")
    assert listed(owner, "shop")[kept]["verified"] is True  # a verified domain never lapses

    # Lapsed claims no longer count against the plan, and the next add deletes them.
    for name in (lapsing[0], unique_domain()):
        claim(owner, "shop", name)
    error(owner.client.post("/projects/shop/domains", json={"name": unique_domain()}), 403, "FORBIDDEN")
    for lapsed in [c["id"] for c in claims[1:]] + [squat["id"]]:
        assert run_sql(lapsing_server, "SELECT id FROM domains WHERE id = :id", id=lapsed) == []
