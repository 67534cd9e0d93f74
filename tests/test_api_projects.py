"""Projects over HTTP: create, read by name or id, update, delete, pages with a Link header, and isolation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.api_support import all_pages, error
from tests.support import Account, RunixServer

SETTINGS = {"framework": "flask", "install_command": "pip install -r requirements.txt", "build_command": "make",
            "start_command": "gunicorn app:app", "root_directory": "web"}



def test_create_read_update_delete(server: RunixServer, account: Account) -> None:
    c = account.client
    r = c.post("/projects", json={"name": "Shop", **SETTINGS})
    assert r.status_code == 201, r.text
    project = r.json()
    assert project["id"].startswith("prj_") and project["name"] == "shop"
    assert {k: project[k] for k in SETTINGS} == SETTINGS
    assert project["production_deployment_id"] is None
    assert project["urls"][0].startswith("http://shop") and project["created_at"] and project["updated_at"]

    assert c.get("/projects/shop").json() == project
    assert c.get(f"/projects/{project['id']}").json() == project

    r = c.patch("/projects/shop", json={"build_command": "npm run build", "root_directory": None})
    assert r.status_code == 200, r.text
    assert r.json()["build_command"] == "npm run build" and r.json()["root_directory"] is None
    assert r.json()["framework"] == "flask"
    r = c.patch("/projects/shop", json={"name": "store"})
    assert r.status_code == 200 and r.json()["name"] == "store" and r.json()["id"] == project["id"]
    error(c.get("/projects/shop"), 404, "NOT_FOUND")

    r = c.delete(f"/projects/{project['id']}")
    assert r.status_code == 200 and r.json()["id"] == project["id"]
    error(c.get("/projects/store"), 404, "NOT_FOUND")
    error(c.delete("/projects/store"), 404, "NOT_FOUND")
    error(c.patch("/projects/store", json={"framework": "x"}), 404, "NOT_FOUND")
    assert c.post("/projects", json={"name": "store"}).status_code == 201


def test_duplicate_names_conflict_within_an_account_only(server: RunixServer, account: Account) -> None:
    assert account.client.post("/projects", json={"name": "dup"}).status_code == 201
    error(account.client.post("/projects", json={"name": "dup"}), 409, "CONFLICT")
    error(account.client.post("/projects", json={"name": "DUP"}), 409, "CONFLICT")
    assert account.client.post("/projects", json={"name": "dup-2"}).status_code == 201
    error(account.client.patch("/projects/dup-2", json={"name": "dup"}), 409, "CONFLICT")
    other = server.sign_in()
    r = other.client.post("/projects", json={"name": "dup"})
    assert r.status_code == 201
    assert r.json()["urls"][0] != account.client.get("/projects/dup").json()["urls"][0]


def test_concurrent_creates_of_one_name(server: RunixServer) -> None:
    """In one account exactly one wins (409 for the rest); across accounts each gets it, on its own host."""
    mine = server.sign_in()
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: mine.client.post("/projects", json={"name": "race"}).status_code,
                                   range(8)))
    assert statuses == [201] + [409] * 7
    others = [server.sign_in() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        created = list(pool.map(lambda a: a.client.post("/projects", json={"name": "crowd"}), others))
    assert [r.status_code for r in created] == [201] * 4
    assert len({r.json()["urls"][0] for r in created}) == 4


def test_names_must_be_dns_labels(account: Account) -> None:
    for bad in ("my_app", "-app", "app-", "a--b", "a" * 49, "api", "dashboard", "", " ", "héllo", "a.b", "a/b"):
        body = error(account.client.post("/projects", json={"name": bad}), 400, "VALIDATION_ERROR")
        assert "details" in body
    error(account.client.post("/projects", json={"name": "ok", "framework": "x" * 31}), 400, "VALIDATION_ERROR")
    assert account.client.post("/projects", json={"name": "a" * 48}).status_code == 201


def test_pages_newest_first_with_link_header(account: Account) -> None:
    c = account.client
    created = [c.post("/projects", json={"name": f"p{i}"}).json()["id"] for i in range(7)]
    first = c.get("/projects")
    assert first.status_code == 200 and len(first.json()) == 7 and "link" not in first.headers
    pages = all_pages(c, "/projects", 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    ids = [p["id"] for page in pages for p in page]
    assert ids == sorted(created, reverse=True) and ids[0] == created[-1]
    link = c.get("/projects?limit=3").headers["link"]
    assert link.startswith("<http") and link.endswith('>; rel="next"') and "limit=3" in link and "cursor=" in link
    assert len(c.get("/projects?limit=100").json()) == 7
    for bad in ("0", "101", "-1", "abc", "1.5"):
        error(c.get(f"/projects?limit={bad}"), 400, "VALIDATION_ERROR")
    error(c.get("/projects?cursor=" + "x" * 65), 400, "VALIDATION_ERROR")
    assert c.get("/projects?cursor=prj_0").json() == []


def test_accounts_cannot_see_or_touch_each_others_projects(server: RunixServer) -> None:
    alice, bob = server.sign_in(), server.sign_in()
    project = alice.client.post("/projects", json={"name": "secret"}).json()
    bob.client.post("/projects", json={"name": "mine"})
    assert [p["name"] for p in bob.client.get("/projects").json()] == ["mine"]
    for ref in ("secret", project["id"]):
        r = bob.client.get(f"/projects/{ref}")
        error(r, 404, "NOT_FOUND")
        assert all(h in r.headers for h in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"))
        error(bob.client.patch(f"/projects/{ref}", json={"framework": "evil"}), 404, "NOT_FOUND")
        error(bob.client.delete(f"/projects/{ref}"), 404, "NOT_FOUND")
        error(bob.client.get(f"/projects/{ref}/env"), 404, "NOT_FOUND")
        error(bob.client.get(f"/projects/{ref}/domains"), 404, "NOT_FOUND")
    assert alice.client.get("/projects/secret").json() == project
    assert [p["name"] for p in alice.client.get("/projects").json()] == ["secret"]
