"""Billing over HTTP: the plan, its limits and usage, and changing plan changes what the account may do."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.api_support import error
from tests.support import Account, RunixServer

LIMIT_KEYS = {"requests_per_minute", "deploys_per_hour", "projects", "domains_per_project", "env_vars_per_project",
              "concurrent_builds"}


def test_billing_shows_plan_limits_and_usage(account: Account) -> None:
    account.client.post("/projects", json={"name": "one"})
    r = account.client.get("/billing")
    assert r.status_code == 200, r.text
    billing = r.json()
    assert billing["plan"] == "hobby"
    assert set(billing["limits"]) >= LIMIT_KEYS
    assert billing["limits"]["deploys_per_hour"] == 5 and billing["limits"]["projects"] == 10
    assert billing["usage"]["projects"] == 1 and billing["usage"]["domains"] == 0
    assert billing["usage"]["requests_this_minute"] >= 2
    assert {p["name"] for p in billing["plans"]} == {"hobby", "pro", "enterprise"}


def test_changing_plan_changes_the_limits(server: RunixServer, account: Account) -> None:
    c = account.client
    for i in range(10):
        assert c.post("/projects", json={"name": f"p{i}"}).status_code == 201
    body = error(c.post("/projects", json={"name": "p10"}), 403, "FORBIDDEN")
    assert "10 projects" in body["error"]

    server.set_plan(account, "pro")  # moving up is the operator's (or the payment provider's) to do
    r = c.get("/billing")
    assert r.status_code == 200 and r.json()["plan"] == "pro"
    assert r.json()["limits"]["projects"] == 100 and r.json()["limits"]["deploys_per_hour"] == 100
    assert c.get("/user").json()["plan"] == "pro"
    assert c.post("/projects", json={"name": "p10"}).status_code == 201

    error(c.put("/billing/plan", json={"plan": "hobby"}), 403, "FORBIDDEN")  # 11 projects do not fit Hobby
    assert c.get("/billing").json()["plan"] == "pro"
    assert c.delete("/projects/p10").status_code == 200
    assert c.put("/billing/plan", json={"plan": "hobby"}).json()["limits"]["projects"] == 10

    server.set_plan(account, "enterprise")
    assert c.get("/billing").json()["limits"]["projects"] is None
    error(c.put("/billing/plan", json={"plan": "gold"}), 400, "VALIDATION_ERROR")
    error(c.put("/billing/plan", json={}), 400, "VALIDATION_ERROR")


def test_concurrent_creates_stop_at_the_plan_limit(account: Account) -> None:
    for i in range(8):
        assert account.client.post("/projects", json={"name": f"p{i}"}).status_code == 201
    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(lambda i: account.client.post("/projects", json={"name": f"q{i}"}).status_code,
                                   range(6)))
    assert statuses == [201, 201, 403, 403, 403, 403]
    assert account.client.get("/billing").json()["usage"]["projects"] == 10


README_ROWS = {"Price per month": "price_per_month_usd", "API requests per minute": "requests_per_minute",
               "Deploys per hour": "deploys_per_hour", "Projects": "projects",
               "Domains per project": "domains_per_project", "Env vars per project": "env_vars_per_project",
               "Builds at once": "concurrent_builds", "Memory per app, swap included (MB)": "app_memory_mb",
               "Processes per app": "app_max_processes", "CPU weight per app": "app_cpu_weight",
               "/tmp per app, counted as memory (MB)": "app_tmp_mb", "Memory per build (MB)": "build_memory_mb",
               "Processes per build": "build_max_processes", "Disk: sources and releases (MB)": "disk_mb",
               "Disk: build caches (MB)": "build_cache_mb"}


def test_the_readme_plan_table_is_the_plan_table() -> None:
    """The README's table of plans says what src/runix/plans.py says, figure for figure."""
    from runix.plans import PLANS
    from tests.support import ROOT

    lines = (ROOT / "README.md").read_text().split("## Plans", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| |")]
    shown = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:-1]] for row in rows}
    assert set(shown) == set(README_ROWS) and set(README_ROWS.values()) == {*PLANS["hobby"].limits(),
                                                                           "price_per_month_usd"}
    for label, key in README_ROWS.items():
        expected = [("$" if key == "price_per_month_usd" else "") + f"{getattr(p, key):,}"
                    if getattr(p, key) is not None else "unlimited" for p in PLANS.values()]
        assert shown[label] == expected, label
