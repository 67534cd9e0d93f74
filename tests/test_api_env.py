"""Env vars over HTTP: targets, conflicts, write-only sensitive values, encryption at rest, isolation."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.api_support import assert_paginated, error, run_sql, stored_text
from tests.support import Account, RunixServer


def project(account: Account, name: str = "app") -> str:
    r = account.client.post("/projects", json={"name": name})
    assert r.status_code == 201, r.text
    return name


def test_add_list_change_remove(account: Account) -> None:
    c, p = account.client, project(account)
    r = c.post(f"/projects/{p}/env", json={"key": "DATABASE_URL", "value": "postgres://db/1",
                                           "targets": ["preview", "production"], "type": "plain"})
    assert r.status_code == 201, r.text
    var = r.json()
    assert var["id"].startswith("env_") and var["value"] == "postgres://db/1" and var["type"] == "plain"
    assert var["targets"] == ["production", "preview"]
    r = c.post(f"/projects/{p}/env", json={"key": "DEBUG", "value": "1"})
    assert r.status_code == 201 and r.json()["targets"] == ["production", "preview", "development"]

    listed = c.get(f"/projects/{p}/env").json()
    assert [v["key"] for v in listed] == ["DATABASE_URL", "DEBUG"]
    r = c.patch(f"/projects/{p}/env/{var['id']}", json={"value": "postgres://db/2", "targets": ["development"]})
    assert r.status_code == 200, r.text
    assert r.json()["value"] == "postgres://db/2" and r.json()["targets"] == ["development"]
    assert r.json()["created_at"] == var["created_at"]

    assert c.delete(f"/projects/{p}/env/{var['id']}").status_code == 200
    assert [v["key"] for v in c.get(f"/projects/{p}/env").json()] == ["DEBUG"]
    error(c.delete(f"/projects/{p}/env/{var['id']}"), 404, "NOT_FOUND")
    error(c.patch(f"/projects/{p}/env/{var['id']}", json={"value": "x"}), 404, "NOT_FOUND")
    error(c.get("/projects/nope/env"), 404, "NOT_FOUND")


def test_same_key_on_an_overlapping_target_conflicts(account: Account) -> None:
    c, p = account.client, project(account)
    first = c.post(f"/projects/{p}/env", json={"key": "API_KEY", "value": "a", "targets": ["production"]}).json()
    error(c.post(f"/projects/{p}/env", json={"key": "API_KEY", "value": "b", "targets": ["production", "preview"]}),
          409, "CONFLICT")
    second = c.post(f"/projects/{p}/env", json={"key": "API_KEY", "value": "b", "targets": ["preview"]})
    assert second.status_code == 201
    error(c.patch(f"/projects/{p}/env/{second.json()['id']}", json={"targets": ["production"]}), 409, "CONFLICT")
    assert c.patch(f"/projects/{p}/env/{first['id']}", json={"targets": ["development"]}).status_code == 200
    assert c.patch(f"/projects/{p}/env/{second.json()['id']}", json={"targets": ["production"]}).status_code == 200


def test_concurrent_adds_of_one_key_conflict(account: Account) -> None:
    c, p = account.client, project(account)
    body = {"key": "SAME", "value": "v", "targets": ["production"]}
    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(lambda _: c.post(f"/projects/{p}/env", json=body).status_code, range(6)))
    assert statuses == [201] + [409] * 5
    assert len(c.get(f"/projects/{p}/env").json()) == 1


def test_bad_keys_targets_and_types_are_400(account: Account) -> None:
    c, p = account.client, project(account)
    for body in ({"key": "1ABC", "value": "x"}, {"key": "A-B", "value": "x"}, {"key": "PORT", "value": "1"},
                 {"key": "RUNIX_X", "value": "1"}, {"key": "A", "value": "x", "targets": []},
                 {"key": "A", "value": "x", "targets": ["staging"]}, {"key": "A", "value": "x", "type": "secret"},
                 {"key": "A", "value": 5}, {"key": "A"}, {"key": "A", "value": "x", "extra": True}):
        error(c.post(f"/projects/{p}/env", json=body), 400, "VALIDATION_ERROR")
    var = c.post(f"/projects/{p}/env", json={"key": "S", "value": "x", "type": "sensitive"}).json()
    error(c.patch(f"/projects/{p}/env/{var['id']}", json={"type": "plain"}), 409, "CONFLICT")


def test_sensitive_values_are_never_returned(account: Account) -> None:
    c, p = account.client, project(account)
    secret = f"sk-live-{uuid.uuid4().hex}"
    r = c.post(f"/projects/{p}/env", json={"key": "STRIPE_KEY", "value": secret, "type": "sensitive"})
    assert r.status_code == 201 and "value" not in r.json() and secret not in r.text
    var_id = r.json()["id"]
    listed = c.get(f"/projects/{p}/env")
    assert secret not in listed.text and "value" not in listed.json()[0]
    newer = f"sk-live-{uuid.uuid4().hex}"
    r = c.patch(f"/projects/{p}/env/{var_id}", json={"value": newer})
    assert r.status_code == 200 and "value" not in r.json() and newer not in r.text
    r = c.delete(f"/projects/{p}/env/{var_id}")
    assert r.status_code == 200 and newer not in r.text
    plain = c.post(f"/projects/{p}/env", json={"key": "P", "value": "visible"}).json()
    r = c.patch(f"/projects/{p}/env/{plain['id']}", json={"type": "sensitive"})
    assert r.status_code == 200 and "value" not in r.json()
    assert "visible" not in c.get(f"/projects/{p}/env").text


def test_values_are_encrypted_at_rest(server: RunixServer, account: Account) -> None:
    p = project(account)
    values = {"PLAIN_VALUE": f"plain-{uuid.uuid4().hex}", "SECRET_VALUE": f"secret-{uuid.uuid4().hex}"}
    for key, value in values.items():
        kind = "sensitive" if key.startswith("SECRET") else "plain"
        assert account.client.post(f"/projects/{p}/env", json={"key": key, "value": value, "type": kind}
                                   ).status_code == 201
    stored = stored_text(server)
    for value in values.values():
        assert value not in stored and value.split("-")[1] not in stored
    rows = run_sql(server, "SELECT value_encrypted FROM env_vars WHERE key IN ('PLAIN_VALUE', 'SECRET_VALUE')")
    assert len(rows) == 2 and all(r[0].startswith("gAAAAA") for r in rows)  # Fernet tokens


def test_accounts_cannot_see_or_touch_each_others_env_vars(server: RunixServer) -> None:
    alice, bob = server.sign_in(), server.sign_in()
    project(alice, "shared-name")
    project(bob, "shared-name")
    var = alice.client.post("/projects/shared-name/env", json={"key": "TOKEN", "value": "alice-only"}).json()
    assert bob.client.get("/projects/shared-name/env").json() == []
    error(bob.client.patch(f"/projects/shared-name/env/{var['id']}", json={"value": "bob"}), 404, "NOT_FOUND")
    error(bob.client.delete(f"/projects/shared-name/env/{var['id']}"), 404, "NOT_FOUND")
    alice_project_id = alice.client.get("/projects/shared-name").json()["id"]
    error(bob.client.post(f"/projects/{alice_project_id}/env", json={"key": "X", "value": "y"}), 404, "NOT_FOUND")
    assert alice.client.get("/projects/shared-name/env").json()[0]["value"] == "alice-only"


def test_pages_by_key_with_a_link_header(account: Account) -> None:
    """The list runs A to Z by key (a key set for several targets separately: oldest first), in pages."""
    c, p = account.client, project(account)
    created = []
    for key, targets in (("ZETA", None), ("ALPHA", None), ("SAME", ["production"]), ("MID", None),
                         ("SAME", ["preview"]), ("BETA", None), ("SAME", ["development"])):
        r = c.post(f"/projects/{p}/env", json={"key": key, "value": f"v-{key}", **({"targets": targets} if targets
                                                                                   else {})})
        assert r.status_code == 201, r.text
        created.append(r.json())
    in_order = sorted(created, key=lambda v: (v["key"], v["id"]))
    assert [v["key"] for v in in_order] == ["ALPHA", "BETA", "MID", "SAME", "SAME", "SAME", "ZETA"]
    assert_paginated(c, f"/projects/{p}/env", [v["id"] for v in in_order])

    # A cursor is a variable of this list: one removed since its page was read, or another project's, is a 400
    # (not an empty page that would pass for the end of the list).
    second_page = c.get(f"/projects/{p}/env?limit=3").links["next"]["url"]
    assert [v["key"] for v in c.get(second_page).json()] == ["SAME", "SAME", "SAME"]
    assert c.delete(f"/projects/{p}/env/{in_order[2]['id']}").status_code == 200  # MID, the first page's last
    body = error(c.get(second_page), 400, "VALIDATION_ERROR")
    assert "first page" in body["error"] and body["details"] == [{"field": "cursor"}]
    other = project(account, "other")
    foreign = c.post(f"/projects/{other}/env", json={"key": "AAA", "value": "x"}).json()
    error(c.get(f"/projects/{p}/env?cursor={foreign['id']}"), 400, "VALIDATION_ERROR")
    error(c.get("/projects/nope/env?limit=3"), 404, "NOT_FOUND")


def test_a_sensitive_value_is_absent_and_the_schema_says_so(account: Account) -> None:
    """`value` is left out (not null) for a sensitive variable, kept for a plain one even when empty, and the
    OpenAPI schema describes it as a string that is not required."""
    c, p = account.client, project(account)
    hidden = c.post(f"/projects/{p}/env", json={"key": "TOKEN", "value": "hidden", "type": "sensitive"}).json()
    empty = c.post(f"/projects/{p}/env", json={"key": "EMPTY", "value": ""}).json()
    assert "value" not in hidden and empty["value"] == ""
    assert [("value" in v) for v in c.get(f"/projects/{p}/env").json()] == [True, False]  # EMPTY, TOKEN
    removed = c.delete(f"/projects/{p}/env/{hidden['id']}")
    assert removed.status_code == 200 and "value" not in removed.json() and "hidden" not in removed.text
    schema = c.get("/openapi.json").json()["components"]["schemas"]["EnvVarPublic"]
    assert "value" not in schema["required"] and schema["properties"]["value"] == {
        "type": "string", "title": "Value", "description": schema["properties"]["value"]["description"]}
