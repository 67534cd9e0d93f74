"""Domains over HTTP, verified through a real DNS server on loopback (RUNIX_DNS_RESOLVER)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_support import assert_paginated, error
from tests.dns_server import LoopbackDns, dns  # noqa: F401 - the fixture
from tests.support import Account, RunixServer, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dns: LoopbackDns) -> Iterator[RunixServer]:  # noqa: F811
    """This module's own server, resolving TXT records through the loopback DNS server."""
    tmp: Path = tmp_path_factory.mktemp("runix-domains")
    with running_server(tmp, RUNIX_DNS_RESOLVER=dns.address, RUNIX_RATE_LIMIT_PER_MINUTE="100000") as s:
        yield s



def unique_domain() -> str:
    return f"www.{uuid.uuid4().hex[:10]}.example.com"


def make_project(account: Account, name: str = "site") -> str:
    assert account.client.post("/projects", json={"name": name}).status_code == 201
    return name


def test_verify_fails_until_the_txt_record_exists(account: Account, dns: LoopbackDns) -> None:  # noqa: F811
    c, p, domain = account.client, make_project(account), unique_domain()
    r = c.post(f"/projects/{p}/domains", json={"name": domain.upper() + "."})
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["name"] == domain and added["verified"] is False and added["id"].startswith("dom_")
    check = added["verification"]
    assert check["type"] == "TXT" and check["name"] == f"_runix-challenge.{domain}" and check["value"]

    body = error(c.post(f"/projects/{p}/domains/{domain}/verify"), 400, "BAD_REQUEST")
    assert check["name"] in body["error"] and check["value"] in body["error"]
    assert body["details"]["found"] == []

    dns.records.set(check["name"], "runix-verify=somebody-elses", "v=spf1 -all")
    body = error(c.post(f"/projects/{p}/domains/{domain}/verify"), 400, "BAD_REQUEST")
    assert "runix-verify=somebody-elses" in body["details"]["found"]
    assert check["name"] in dns.records.queries
    assert c.get(f"/projects/{p}").json()["urls"] == [c.get(f"/projects/{p}").json()["urls"][0]]

    dns.records.set(check["name"], "v=spf1 -all", check["value"])
    r = c.post(f"/projects/{p}/domains/{domain}/verify")
    assert r.status_code == 200, r.text
    assert r.json()["verified"] is True and r.json()["verified_at"]
    dns.records.clear(check["name"])
    assert c.post(f"/projects/{p}/domains/{domain}/verify").json()["verified"] is True  # stays verified
    urls = c.get(f"/projects/{p}").json()["urls"]
    assert len(urls) == 2 and urls[1].startswith(f"http://{domain}")
    assert [d["verified"] for d in c.get(f"/projects/{p}/domains").json()] == [True]


def test_a_domain_belongs_to_one_project_of_one_account(server: RunixServer) -> None:
    alice, bob = server.sign_in(), server.sign_in()
    make_project(alice, "one")
    make_project(alice, "two")
    make_project(bob, "one")
    domain = unique_domain()
    r = alice.client.post("/projects/one/domains", json={"name": domain})
    assert r.status_code == 201
    alices = r.json()
    error(alice.client.post("/projects/one/domains", json={"name": domain}), 409, "CONFLICT")
    # An unverified claim blocks nobody (docs/security.md): another project and another account claim it too,
    # each with a TXT value of its own.
    assert alice.client.post("/projects/two/domains", json={"name": domain}).status_code == 201
    r = bob.client.post("/projects/one/domains", json={"name": domain})
    assert r.status_code == 201
    bobs = r.json()
    assert bobs["id"] != alices["id"] and bobs["verification"]["value"] != alices["verification"]["value"]

    # Each claim is its own project's: bob sees and removes his, and reaches nothing of alice's.
    assert [d["id"] for d in bob.client.get("/projects/one/domains").json()] == [bobs["id"]]
    alice_one = alice.client.get("/projects/one").json()["id"]
    error(bob.client.get(f"/projects/{alice_one}/domains"), 404, "NOT_FOUND")
    error(bob.client.post(f"/projects/{alice_one}/domains/{domain}/verify"), 404, "NOT_FOUND")
    error(bob.client.delete(f"/projects/{alice_one}/domains/{domain}"), 404, "NOT_FOUND")
    assert bob.client.delete(f"/projects/one/domains/{domain}").json()["id"] == bobs["id"]
    error(bob.client.post(f"/projects/one/domains/{domain}/verify"), 404, "NOT_FOUND")
    error(bob.client.delete(f"/projects/one/domains/{domain}"), 404, "NOT_FOUND")
    assert [d["id"] for d in alice.client.get("/projects/one/domains").json()] == [alices["id"]]

    r = alice.client.delete(f"/projects/one/domains/{domain}")
    assert r.status_code == 200 and r.json()["name"] == domain
    error(alice.client.delete(f"/projects/one/domains/{domain}"), 404, "NOT_FOUND")
    assert bob.client.post("/projects/one/domains", json={"name": domain}).status_code == 201


def test_deleting_a_project_frees_its_domains(server: RunixServer, account: Account) -> None:
    domain = unique_domain()
    make_project(account, "temp")
    assert account.client.post("/projects/temp/domains", json={"name": domain}).status_code == 201
    assert account.client.delete("/projects/temp").status_code == 200
    other = server.sign_in()
    make_project(other, "next")
    assert other.client.post("/projects/next/domains", json={"name": domain}).status_code == 201


def test_bad_names_and_plan_limit(server: RunixServer, account: Account) -> None:
    c, p = account.client, make_project(account)
    for bad in ("localhost", "example", "http://example.com", "*.example.com", "a..example.com", "1.2.3.4",
                "exa mple.com", "-a.example.com", "a" * 64 + ".com", ""):
        error(c.post(f"/projects/{p}/domains", json={"name": bad}), 400, "VALIDATION_ERROR")
    error(c.post(f"/projects/{p}/domains", json={"name": "shop.localhost"}), 409, "CONFLICT")
    error(c.post(f"/projects/{p}/domains", json={"name": 42}), 400, "VALIDATION_ERROR")
    for _ in range(3):  # the Hobby plan's limit per project
        assert c.post(f"/projects/{p}/domains", json={"name": unique_domain()}).status_code == 201
    error(c.post(f"/projects/{p}/domains", json={"name": unique_domain()}), 403, "FORBIDDEN")
    server.set_plan(account, "pro")
    assert c.post(f"/projects/{p}/domains", json={"name": unique_domain()}).status_code == 201


def test_pages_by_name_with_a_link_header(server: RunixServer, account: Account) -> None:
    c, p = account.client, make_project(account)
    server.set_plan(account, "pro")  # Hobby allows 3 domains per project
    added = [c.post(f"/projects/{p}/domains", json={"name": unique_domain()}).json() for _ in range(7)]
    in_order = sorted(added, key=lambda d: d["name"])
    assert_paginated(c, f"/projects/{p}/domains", [d["id"] for d in in_order])
    # The cursor (the first page's last domain) removed before the next page is read: 400, start again.
    second_page = c.get(f"/projects/{p}/domains?limit=3").links["next"]["url"]
    assert [d["id"] for d in c.get(second_page).json()] == [d["id"] for d in in_order[3:6]]
    assert c.delete(f"/projects/{p}/domains/{in_order[2]['name']}").status_code == 200
    error(c.get(second_page), 400, "VALIDATION_ERROR")
